//! TURN REST credentials (coturn's `use-auth-secret`) and nonces.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use ring::hmac;

/// The password of a REST username: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Credentials for `identity` valid until `now_unix + ttl`:
/// (`"<expiry>:<identity>"`, password).
pub fn rest_credential(
    secret: &[u8],
    identity: &str,
    now_unix: u64,
    ttl: Duration,
) -> (String, String) {
    let username = format!("{}:{identity}", now_unix.saturating_add(ttl.as_secs()));
    let password = rest_password(secret, &username);
    (username, password)
}

/// Why a USERNAME is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UsernameError {
    Malformed,
    Expired,
}

/// The identity a REST username names, once its expiry is checked. The
/// identity part is optional (coturn accepts a bare timestamp).
pub(crate) fn parse_username(username: &str, now_unix: u64) -> Result<&str, UsernameError> {
    let (expiry, identity) = match username.split_once(':') {
        Some((e, i)) => (e, i),
        None => (username, ""),
    };
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsernameError::Malformed);
    }
    let expiry: u64 = expiry.parse().map_err(|_| UsernameError::Malformed)?;
    if expiry < now_unix {
        return Err(UsernameError::Expired);
    }
    Ok(identity)
}

/// Stateless nonces: `<expiry, 16 hex digits><MAC, 32 hex digits>`, the MAC
/// binding the expiry to the client's transport address under a key made at
/// start-up.
pub(crate) struct Nonces {
    key: hmac::Key,
    lifetime: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    /// Expired, or not one of ours: answer 438 with a fresh one.
    Stale,
}

const NONCE_LEN: usize = 16 + 32;

impl Nonces {
    pub(crate) fn new(lifetime: Duration) -> Nonces {
        let secret: [u8; 32] = rand::random();
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            lifetime,
        }
    }

    fn mac(&self, expiry: u64, client: SocketAddr) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    pub(crate) fn issue(&self, client: SocketAddr, now_unix: u64) -> String {
        let expiry = now_unix.saturating_add(self.lifetime.as_secs().max(1));
        let mut s = format!("{expiry:016x}");
        for b in self.mac(expiry, client) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub(crate) fn check(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return NonceCheck::Stale;
        }
        let Ok(expiry) = u64::from_str_radix(&nonce[..16], 16) else {
            return NonceCheck::Stale;
        };
        let mut given = [0u8; 16];
        for (i, b) in given.iter_mut().enumerate() {
            match u8::from_str_radix(&nonce[16 + 2 * i..18 + 2 * i], 16) {
                Ok(v) => *b = v,
                Err(_) => return NonceCheck::Stale,
            }
        }
        let want = self.mac(expiry, client);
        // Constant-time comparison of the MACs.
        let diff = want
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || expiry <= now_unix {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn() {
        // coturn: base64(hmac-sha1(secret, username)); value computed with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac s3cret -binary | base64`.
        assert_eq!(
            rest_password(b"s3cret", "1700000000:alice"),
            "TtElzSjT0GdnTQ9xdcRNxx96yQs="
        );
        let (u, p) = rest_credential(b"s3cret", "alice", 1_699_999_000, Duration::from_secs(1000));
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }

    #[test]
    fn usernames() {
        assert_eq!(parse_username("100:bob", 50), Ok("bob"));
        assert_eq!(parse_username("100:a:b", 50), Ok("a:b"));
        assert_eq!(parse_username("100", 50), Ok(""));
        assert_eq!(parse_username("100:bob", 101), Err(UsernameError::Expired));
        assert_eq!(parse_username("bob:100", 50), Err(UsernameError::Malformed));
        assert_eq!(parse_username(":bob", 50), Err(UsernameError::Malformed));
        assert_eq!(
            parse_username("99999999999999999999999:x", 50),
            Err(UsernameError::Malformed)
        );
    }

    #[test]
    fn nonces_expire_and_bind_the_client() {
        let n = Nonces::new(Duration::from_secs(10));
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let nonce = n.issue(a, 1000);
        assert_eq!(n.check(&nonce, a, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, a, 1010), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, b, 1000), NonceCheck::Stale);
        assert_eq!(n.check("garbage", a, 1000), NonceCheck::Stale);
        assert_eq!(n.check(&"é".repeat(24), a, 1000), NonceCheck::Stale);
        let mut forged = nonce.clone();
        forged.replace_range(0..16, &format!("{:016x}", 99999u64));
        assert_eq!(n.check(&forged, a, 1000), NonceCheck::Stale);
    }
}
