//! The publish-offer path of a transport: arbitrary SDP applied as a
//! participant's publish offer in a worker's shard (`Shard::publish_offer`,
//! through sfu's `fuzz_support`), as the signaling `publish_offer` message
//! does. Each input gets a participant of its own.
#![no_main]

use std::cell::RefCell;

use callgate_sfu::fuzz_support::OfferTarget;
use callgate_signaling::protocol::MAX_SDP_BYTES;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static TARGET: RefCell<OfferTarget> = RefCell::new(OfferTarget::default());
}

fuzz_target!(|data: &[u8]| {
    // Signaling hands the shard UTF-8 of at most MAX_SDP_BYTES.
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    if sdp.len() > MAX_SDP_BYTES {
        return;
    }
    TARGET.with_borrow_mut(|target| {
        if let Ok(answer) = target.apply(sdp) {
            assert!(answer.starts_with("v=0"), "an answer that is no SDP");
        }
    });
});
