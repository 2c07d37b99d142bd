//! What the shard reads from STUN itself: the ICE username of a binding
//! request from an address no transport knows yet, whether a request is
//! signed with a transport's credentials and nominates its pair, and the
//! re-signing that lets a transport present new ICE credentials after a
//! restart while rtc's agent keeps the ones it was built with
//! (`ice_creds`).

use std::sync::{Arc, LazyLock};

use rtc::crypto::{RTCCryptoProvider, default_provider};
use rtc::stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USE_CANDIDATE, ATTR_USERNAME,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter};

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// RFC 8489 §5: two zero bits, then a 20-byte header with the magic cookie.
fn is_message(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] & 0xc0 == 0 && data[4..8] == MAGIC_COOKIE
}

/// A STUN Binding request (RFC 8489 §5: message type 0x0001): what the first
/// frame of an ICE-TCP connection must be.
pub(crate) fn is_binding_request(data: &[u8]) -> bool {
    is_message(data) && data[0..2] == [0x00, 0x01]
}

/// Our (server-side) ufrag from a STUN request's USERNAME
/// (`<server ufrag>:<client ufrag>`, RFC 8445 §7.2.2), or `None` when the
/// datagram is no STUN message or has no such attribute. Integrity is the ICE
/// agent's to check; this only picks which agent sees the datagram.
pub(crate) fn ice_username(data: &[u8]) -> Option<String> {
    if !is_message(data) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(data).ok()?;
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    let (server, _client) = username.split_once(':')?;
    Some(server.to_owned())
}

/// Whether a STUN Binding request is one the ICE agent of the transport
/// with credentials `ufrag`/`pwd` would answer: its USERNAME names `ufrag`
/// first (`<ufrag>:<client ufrag>`) and its MESSAGE-INTEGRITY is the
/// HMAC-SHA1 of the message under `pwd` (RFC 8445 §7.2.2, short-term
/// credentials). Checked before a new address is routed to the transport,
/// so a forged request cannot move a call, and so a refused request is
/// counted rather than dropped in silence by the agent.
pub(crate) fn authenticates(data: &[u8], ufrag: &str, pwd: &str) -> bool {
    let Some(crypto) = CRYPTO.as_ref() else {
        // No way to check: fail closed.
        return false;
    };
    if !is_message(data) {
        return false;
    }
    let mut message = Message::new();
    if message.unmarshal_binary(data).is_err() {
        return false;
    }
    let names_us = message.get(ATTR_USERNAME).ok().is_some_and(|username| {
        username
            .strip_prefix(ufrag.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b':'))
    });
    names_us && MessageIntegrity::check(&mut message, pwd.as_bytes(), crypto.crypto()).is_ok()
}

static CRYPTO: LazyLock<Option<Arc<dyn RTCCryptoProvider>>> =
    LazyLock::new(|| default_provider().ok());

/// Whether a STUN message is any response (success or error, RFC 8489 §5:
/// class bits C1 set).
pub(crate) fn is_response(data: &[u8]) -> bool {
    is_message(data) && data[0] & 0x01 == 0x01
}

/// A STUN message's transaction id.
pub(crate) fn transaction_id(data: &[u8]) -> Option<[u8; 12]> {
    if !is_message(data) {
        return None;
    }
    data[8..20].try_into().ok()
}

/// Whether a binding request nominates its pair (USE-CANDIDATE, RFC 8445
/// §7.1.2): the controlling client wants media on this path.
pub(crate) fn nominates(data: &[u8]) -> bool {
    if !is_binding_request(data) {
        return false;
    }
    let mut message = Message::new();
    message.unmarshal_binary(data).is_ok() && message.contains(ATTR_USE_CANDIDATE)
}

/// Which part of a USERNAME (`<first>:<second>`) to replace when signing again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rename<'a> {
    Keep,
    /// A request to us names our ufrag first.
    First(&'a str),
    /// A request of ours names our ufrag second.
    Second(&'a str),
}

/// `data` signed again under `pwd`: the same message with MESSAGE-INTEGRITY
/// and FINGERPRINT computed anew, and a part of its USERNAME replaced as
/// `rename` says. `None` for what is no STUN message. The caller has checked
/// the old signature.
pub(crate) fn resign(data: &[u8], rename: Rename<'_>, pwd: &str) -> Option<Vec<u8>> {
    let crypto = CRYPTO.as_ref()?;
    if !is_message(data) {
        return None;
    }
    let mut old = Message::new();
    old.unmarshal_binary(data).ok()?;
    let mut new = Message::new();
    new.typ = old.typ;
    new.transaction_id = old.transaction_id;
    new.write_header();
    for attr in &old.attributes.0 {
        if attr.typ == ATTR_MESSAGE_INTEGRITY || attr.typ == ATTR_FINGERPRINT {
            continue;
        }
        if attr.typ != ATTR_USERNAME {
            new.add(attr.typ, &attr.value);
            continue;
        }
        let value = std::str::from_utf8(&attr.value).ok()?;
        let (first, second) = value.split_once(':')?;
        let renamed = match rename {
            Rename::Keep => value.to_owned(),
            Rename::First(ufrag) => format!("{ufrag}:{second}"),
            Rename::Second(ufrag) => format!("{first}:{ufrag}"),
        };
        new.add(ATTR_USERNAME, renamed.as_bytes());
    }
    MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), crypto.crypto())
        .add_to(&mut new)
        .ok()?;
    FINGERPRINT.add_to(&mut new).ok()?;
    Some(new.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::TransactionId;
    use rtc::stun::message::{BINDING_REQUEST, Setter};
    use rtc::stun::textattrs::Username;

    #[test]
    fn reads_server_ufrag_from_binding_request() {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, "srv123:cli456".into())),
        ];
        m.build(&setters).unwrap();
        assert_eq!(ice_username(&m.raw).as_deref(), Some("srv123"));
        assert!(is_binding_request(&m.raw));
    }

    fn signed_request(username: &str, pwd: &str) -> Vec<u8> {
        let crypto = default_provider().unwrap();
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.into())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.into(),
                crypto.crypto(),
            )),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn a_resigned_request_names_and_authenticates_under_the_new_credentials() {
        let public = "public-password-of-22-chars";
        let internal = "internal-password-22-chars";
        let request = signed_request("pub1:cli", public);
        assert!(authenticates(&request, "pub1", public));
        let resigned = resign(&request, Rename::First("int1"), internal).unwrap();
        assert!(authenticates(&resigned, "int1", internal));
        assert!(!authenticates(&resigned, "pub1", public));
        assert_eq!(transaction_id(&resigned), transaction_id(&request));
        let mut m = Message::new();
        m.unmarshal_binary(&resigned).unwrap();
        assert!(m.contains(ATTR_FINGERPRINT));
        assert_eq!(m.get(ATTR_USERNAME).unwrap(), b"int1:cli");
        let ours = resign(&request, Rename::Second("srv2"), public).unwrap();
        assert!(authenticates(&ours, "pub1", public));
        let mut m = Message::new();
        m.unmarshal_binary(&ours).unwrap();
        assert_eq!(m.get(ATTR_USERNAME).unwrap(), b"pub1:srv2");
    }

    #[test]
    fn authenticates_only_our_ufrag_signed_with_our_password() {
        let pwd = "a-password-of-22-chars-or-more";
        assert!(authenticates(&signed_request("srv1:cli", pwd), "srv1", pwd));
        // Signed with another password.
        assert!(!authenticates(
            &signed_request("srv1:cli", "wrong-password-of-22chars"),
            "srv1",
            pwd
        ));
        // Another transport's ufrag, or ours as a mere prefix.
        assert!(!authenticates(
            &signed_request("srv2:cli", pwd),
            "srv1",
            pwd
        ));
        assert!(!authenticates(
            &signed_request("srv12:cli", pwd),
            "srv1",
            pwd
        ));
        // No integrity at all.
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, "srv1:cli".into())),
        ];
        m.build(&setters).unwrap();
        assert!(!authenticates(&m.raw, "srv1", pwd));
        // One flipped bit anywhere before the integrity attribute.
        let mut tampered = signed_request("srv1:cli", pwd);
        tampered[9] ^= 1;
        assert!(!authenticates(&tampered, "srv1", pwd));
        assert!(!authenticates(b"not stun at all, just bytes", "srv1", pwd));
    }

    #[test]
    fn ignores_non_stun_and_garbage() {
        assert_eq!(ice_username(&[0x80, 0x60, 0, 1, 0, 0, 0, 0]), None);
        assert_eq!(ice_username(&[]), None);
        let mut truncated = vec![0u8, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        truncated.extend_from_slice(&[0; 12]);
        assert_eq!(ice_username(&truncated), None);
        assert!(!is_binding_request(&truncated[..19]));
        // A Binding success response is no request.
        let mut response = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        response.extend_from_slice(&[0; 12]);
        assert!(!is_binding_request(&response));
    }
}
