//! A call as the server API and the webhooks show it (docs/calls.md).

use callgate_metering::CallRecord;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A call (docs/calls.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    /// `CA_…`.
    pub id: String,
    pub room: String,
    pub caller: String,
    pub callees: Vec<CalleeView>,
    /// `audio` or `video`.
    pub call_type: &'static str,
    /// `ringing`, `accepted` or `ended`.
    pub state: String,
    /// Once ended: `completed`, `missed`, `rejected`, `cancelled`, `busy`,
    /// `failed` or `insufficient_balance`.
    pub outcome: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    /// From answer to end, whole seconds.
    pub duration_s: Option<i64>,
    pub session_id: Option<String>,
    pub billed_seconds: Option<i64>,
    pub coins: Option<i64>,
}

/// One callee of a call and its ring.
#[derive(Debug, Serialize, ToSchema)]
pub struct CalleeView {
    pub identity: String,
    /// `ringing`, `accepted`, `rejected`, `busy`, `missed` or `cancelled`.
    pub ring: Option<String>,
}

pub fn call_view(call: &CallRecord) -> CallView {
    let callees = call
        .callees
        .iter()
        .map(|m| CalleeView {
            identity: m.identity.clone(),
            ring: m.ring.clone(),
        })
        .collect();
    let duration_s = match (call.answered_ms, call.ended_ms) {
        (Some(a), Some(e)) => Some((e - a).max(0) / 1000),
        _ => None,
    };
    CallView {
        id: call.id.clone(),
        room: call.room.clone(),
        caller: call.caller.clone(),
        callees,
        call_type: call.call_type.as_str(),
        state: call.state.clone(),
        outcome: call.outcome.clone(),
        created_at_ms: call.created_ms,
        answered_at_ms: call.answered_ms,
        ended_at_ms: call.ended_ms,
        ended_by: call.ended_by.clone(),
        end_reason: call.end_reason.clone(),
        duration_s,
        session_id: call.session_id.clone(),
        billed_seconds: call.billed_seconds,
        coins: call.coins,
    }
}

pub fn call_json(call: &CallRecord) -> Value {
    serde_json::to_value(call_view(call)).expect("a call serializes")
}
