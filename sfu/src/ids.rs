//! Server-assigned identifiers: short, random, prefixed by the noun they name.

use rand::Rng;
use rand::distr::Alphanumeric;

fn random_suffix() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

/// `RM_…`: one lifetime of a room (a room closed and opened again gets a new sid).
pub fn room_sid() -> String {
    format!("RM_{}", random_suffix())
}

/// `PA_…`: one session of a participant.
pub fn participant_sid() -> String {
    format!("PA_{}", random_suffix())
}

/// `TR_…`: one published track (a producer).
pub fn track_sid() -> String {
    format!("TR_{}", random_suffix())
}

/// ICE username fragment and password for one transport (RFC 8445 §5.3 wants
/// at least 24 bits of randomness in the ufrag and 128 bits in the password).
pub fn ice_credentials() -> (String, String) {
    let mut rng = rand::rng();
    let ufrag: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let pwd: String = rng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    (ufrag, pwd)
}
