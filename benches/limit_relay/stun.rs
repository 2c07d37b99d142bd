//! ICE-lite, the least of it: answer a STUN Binding request for one of our
//! ufrags with a success carrying the sender's address, signed with our
//! password (RFC 8445 §7.3; integrity of the request is not checked).

use std::net::SocketAddr;

use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use rtc::stun::xoraddr::XorMappedAddress;

/// A Binding request: its transaction and our (server) ufrag.
pub struct Request {
    message: Message,
    pub ufrag: String,
}

pub fn parse(data: &[u8]) -> Option<Request> {
    let mut message = Message::new();
    message.unmarshal_binary(data).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let (ufrag, _) = std::str::from_utf8(&username).ok()?.split_once(':')?;
    let ufrag = ufrag.to_owned();
    Some(Request { message, ufrag })
}

/// The success response to `request` from `from`, keyed with `pwd`.
pub fn success(
    request: &Request,
    from: SocketAddr,
    pwd: &str,
    crypto: &dyn RTCCrypto,
) -> Option<Vec<u8>> {
    let mut out = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.message.clone()),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.to_owned(),
            crypto,
        )),
        Box::new(FINGERPRINT),
    ];
    out.build(&setters).ok()?;
    Some(out.raw)
}
