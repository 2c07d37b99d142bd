//! The call lifecycle as the end-to-end tests drive it: starting a call,
//! reading its log row and the payer's wallet, following its states.

use serde_json::{Value, json};

use super::money::post;
use super::*;

pub async fn start_call(server: &TestServer, body: Value) -> (u16, Value) {
    post(server, "/v1/calls", body).await
}

/// A paid one-to-one call from alice to host1 at 15 coins a minute.
pub fn paid_call(ring_timeout: u64) -> Value {
    json!({
        "caller": "alice", "caller_name": "Alice", "callees": ["host1"],
        "call_type": "audio",
        "billing": {"payer": "alice", "payee": "host1", "rate": 15},
        "ring_timeout": format!("{ring_timeout}s"),
    })
}

pub async fn wallet(server: &TestServer, user: &str) -> (i64, i64) {
    let w = api_json(server, &format!("/v1/wallets/{user}")).await;
    (w["balance"].as_i64().unwrap(), w["held"].as_i64().unwrap())
}

pub async fn logged(server: &TestServer, id: &str) -> Value {
    api_json(server, &format!("/v1/calls/{id}")).await["call"].clone()
}

/// The next `call_state` on `s` past `ringing`, skipping presence and
/// rings.
pub async fn next_state(s: &mut Signal) -> Value {
    loop {
        let state = s.recv_type("call_state").await;
        if state["state"] != "ringing" {
            return state;
        }
    }
}
