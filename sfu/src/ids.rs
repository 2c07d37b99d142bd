//! Server-assigned identifiers: short, random, prefixed by the noun they name.
//! The randomness is the caller's: a shard's own generator, seeded from the
//! OS in the server and from a fixed seed in tests.

use rand::Rng;
use rand::distr::Alphanumeric;

fn random_suffix(rng: &mut impl Rng) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

/// `RM_…`: one lifetime of a room (a room closed and opened again gets a new sid).
pub fn room_sid(rng: &mut impl Rng) -> String {
    format!("RM_{}", random_suffix(rng))
}

/// `PA_…`: one session of a participant.
pub fn participant_sid(rng: &mut impl Rng) -> String {
    format!("PA_{}", random_suffix(rng))
}

/// `TR_…`: one published track (a producer).
pub fn track_sid(rng: &mut impl Rng) -> String {
    format!("TR_{}", random_suffix(rng))
}

/// Hex digits at the front of every ufrag naming the worker that owns the
/// transport, so the ICE-TCP acceptor can route a connection by its first
/// STUN request (`USERNAME` = `<server ufrag>:<client ufrag>`).
pub const WORKER_PREFIX_LEN: usize = 4;

/// Most workers a ufrag prefix can name.
pub const MAX_WORKERS: usize = 1 << (4 * WORKER_PREFIX_LEN);

/// ICE username fragment and password for one transport of `worker` (RFC
/// 8445 §5.3 wants at least 24 bits of randomness in the ufrag and 128 bits in
/// the password). The ufrag is the worker index in [`WORKER_PREFIX_LEN`]
/// lowercase hex digits, then 12 random alphanumerics (about 71 bits).
pub fn ice_credentials(worker: usize, rng: &mut impl Rng) -> (String, String) {
    debug_assert!(worker < MAX_WORKERS);
    let mut ufrag = format!("{:0width$x}", worker, width = WORKER_PREFIX_LEN);
    ufrag.extend(rng.sample_iter(&Alphanumeric).take(12).map(char::from));
    let pwd: String = rng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    (ufrag, pwd)
}

/// The worker index a ufrag of ours names, or `None` when it cannot be ours.
pub fn worker_of_ufrag(ufrag: &str) -> Option<usize> {
    let prefix = ufrag.get(..WORKER_PREFIX_LEN)?;
    if ufrag.len() <= WORKER_PREFIX_LEN
        || !prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    usize::from_str_radix(prefix, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrag_names_its_worker() {
        for worker in [0, 1, 7, 255, MAX_WORKERS - 1] {
            let (ufrag, pwd) = ice_credentials(worker, &mut rand::rng());
            assert_eq!(ufrag.len(), WORKER_PREFIX_LEN + 12);
            assert_eq!(pwd.len(), 32);
            assert_eq!(worker_of_ufrag(&ufrag), Some(worker), "{ufrag}");
        }
        assert_ne!(
            ice_credentials(3, &mut rand::rng()).0,
            ice_credentials(3, &mut rand::rng()).0
        );
    }

    #[test]
    fn foreign_ufrags_name_no_worker() {
        for ufrag in [
            "",
            "00",
            "0001",
            "zz01abcdef",
            "+001abcdef",
            "00A1abcdef",
            "\u{e9}\u{e9}abc",
        ] {
            assert_eq!(worker_of_ufrag(ufrag), None, "{ufrag}");
        }
    }
}
