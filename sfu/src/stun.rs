//! The one thing the demultiplexer reads from a datagram itself: the ICE
//! username of a STUN binding request from an address no transport knows yet.

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::Message;

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
