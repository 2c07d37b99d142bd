//! A call as the server API and the webhooks show it (docs/calls.md).

use callgate_metering::CallRecord;
use serde_json::{Value, json};

pub fn call_json(call: &CallRecord) -> Value {
    let callees: Vec<Value> = call
        .callees
        .iter()
        .map(|m| json!({"identity": m.identity, "ring": m.ring}))
        .collect();
    let duration_s = match (call.answered_ms, call.ended_ms) {
        (Some(a), Some(e)) => Some((e - a).max(0) / 1000),
        _ => None,
    };
    json!({
        "id": call.id,
        "room": call.room,
        "caller": call.caller,
        "callees": callees,
        "call_type": call.call_type.as_str(),
        "state": call.state,
        "outcome": call.outcome,
        "created_at_ms": call.created_ms,
        "answered_at_ms": call.answered_ms,
        "ended_at_ms": call.ended_ms,
        "ended_by": call.ended_by,
        "end_reason": call.end_reason,
        "duration_s": duration_s,
        "session_id": call.session_id,
        "billed_seconds": call.billed_seconds,
        "coins": call.coins,
    })
}
