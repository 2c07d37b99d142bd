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

/// `callee` accepts call `id` on its phone; both phones hear it, by it.
pub async fn accept(callee_phone: &mut Signal, caller_phone: &mut Signal, id: &str, callee: &str) {
    callee_phone
        .send(json!({"type": "call_accept", "call_id": id}))
        .await;
    for phone in [callee_phone, caller_phone] {
        let accepted = next_state(phone).await;
        assert_eq!(accepted["state"], "accepted", "{accepted}");
        assert_eq!(accepted["by"], callee);
        assert_eq!(
            accepted["callees"],
            json!([{"identity": callee, "ring": "accepted"}])
        );
    }
}

/// The two members of an answered call in its room, each sending marked
/// audio, from the moment the callee hears the caller.
pub struct Talk {
    pub caller: Client,
    pub callee: Client,
    sending: [tokio::task::JoinHandle<()>; 2],
}

impl Talk {
    /// The caller joins through `caller_at` and the callee through
    /// `callee_at`, with their call tokens.
    pub async fn start(
        caller_at: &TestServer,
        caller_token: &str,
        callee_at: &TestServer,
        callee_token: &str,
    ) -> Talk {
        let (caller, caller_track) = super::money::join_with_media(caller_at, caller_token).await;
        let caller_sends = super::money::keep_sending(caller_track);
        let (callee, callee_track) = super::money::join_with_media(callee_at, callee_token).await;
        let callee_sends = super::money::keep_sending(callee_track);
        callee
            .received
            .wait_for("the caller's marked packets at the callee", |map| {
                map.iter().any(|((stream, _), payloads)| {
                    stream == &caller.sid && payloads.iter().any(|p| payload_index(p).is_some())
                })
            })
            .await;
        Talk {
            caller,
            callee,
            sending: [caller_sends, callee_sends],
        }
    }

    /// The caller `caller` leaves the room: it is told `left`, and both
    /// phones that the call ended, hung up by it.
    pub async fn caller_hangs_up(mut self, caller: &str, phones: [&mut Signal; 2]) {
        self.caller.send(json!({"type": "leave"}));
        assert_eq!(self.caller.event("left").await["reason"], "left");
        for phone in phones {
            let ended = next_state(phone).await;
            assert_eq!(ended["state"], "ended", "{ended}");
            assert_eq!(ended["by"], caller);
            assert_eq!(ended["end_reason"], "hung_up");
        }
        for task in &self.sending {
            task.abort();
        }
    }
}
