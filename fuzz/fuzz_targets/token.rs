//! Access tokens (signaling/src/token.rs): arbitrary strings as tokens, and
//! arbitrary bytes as the claims of a correctly signed token, so the checks
//! after the signature (JSON shape, `exp`/`nbf` arithmetic) are reached.
//! Input: one mode byte, then the token or the claims.
#![no_main]

use std::sync::OnceLock;

use callgate_signaling::token::{KeyRing, TokenError};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzzkey";

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::new([(KEY, "fuzz-secret")]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signed = mode & 1 == 1;
    let token = if signed {
        ring()
            .sign_payload(KEY, rest)
            .expect("the key is in the ring")
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    // A time of today and the end of time, where `exp`/`nbf` arithmetic
    // would overflow.
    let mut round_tripped = false;
    for now in [1_763_769_600, u64::MAX] {
        match ring().verify(&token, now) {
            Ok(claims) => {
                assert_eq!(claims.iss, KEY);
                // Claims that verify sign again into a token that verifies
                // to the same claims.
                if !round_tripped {
                    round_tripped = true;
                    let again = ring().sign(&claims).expect("signs");
                    assert_eq!(ring().verify(&again, now), Ok(claims));
                }
            }
            // A signed token's claims name another key, or are no claims.
            Err(TokenError::BadSignature | TokenError::Malformed | TokenError::Expired) => {}
        }
    }
});
