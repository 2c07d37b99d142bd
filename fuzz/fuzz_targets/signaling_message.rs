//! Client signaling frames (signaling/src/protocol.rs): `ClientMessage::parse`
//! on arbitrary text, as the WebSocket handler calls it.
#![no_main]

use callgate_signaling::protocol::{ClientMessage, MAX_SDP_BYTES, ParseError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text) {
        Ok(ClientMessage::PublishOffer { sdp } | ClientMessage::SubscribeAnswer { sdp }) => {
            assert!(sdp.len() <= MAX_SDP_BYTES);
        }
        Ok(_) | Err(ParseError::Malformed(_)) => {}
        Err(ParseError::Unknown(t)) => assert!(
            ![
                "join",
                "publish_offer",
                "subscribe_answer",
                "candidate",
                "mute",
                "leave"
            ]
            .contains(&t.as_str())
        ),
    }
});
