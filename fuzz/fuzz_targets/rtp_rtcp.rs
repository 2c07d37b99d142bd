//! The RTP/RTCP path of connected transports: a publisher and a subscriber
//! connected through a worker's shard (ICE, DTLS, SRTP up; sfu's
//! `fuzz_support`), then datagrams from their addresses: raw bytes, and
//! RTP / RTCP parsed from the input and protected with the client's own
//! SRTP context, so they reach the shard's forwarding and feedback code.
//!
//! Input: up to 8 operations, each an opcode byte then a chunk (u16
//! length, bytes). Opcode bits 0-1: 0 raw datagram, 1 RTP, 2 RTCP,
//! 3 RTP under the publisher's own SSRC and payload type; bit 2: from the
//! subscriber instead of the publisher.
#![no_main]

use std::cell::RefCell;

use callgate_fuzz::Input;
use callgate_sfu::fuzz_support::{MediaTarget, Sender};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static TARGET: RefCell<MediaTarget> = RefCell::new(MediaTarget::default());
}

fuzz_target!(|data: &[u8]| {
    TARGET.with_borrow_mut(|target| {
        let rebuilt = target.rebuilt();
        let mut input = Input::new(data);
        for _ in 0..8 {
            if input.is_empty() {
                break;
            }
            let op = input.byte();
            let from = if op & 4 == 0 {
                Sender::Publisher
            } else {
                Sender::Subscriber
            };
            let chunk = input.chunk(1500);
            match op & 3 {
                0 => target.datagram(from, chunk),
                1 => target.rtp(from, chunk, false),
                2 => target.rtcp(from, chunk),
                _ => target.rtp(from, chunk, true),
            };
        }
        if target.rebuilt() > rebuilt {
            // Not a crash, but worth seeing in the log: a transport was lost.
            eprintln!(
                "rtp_rtcp: connected state built again ({} times)",
                target.rebuilt()
            );
        }
    });
});
