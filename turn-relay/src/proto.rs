//! Message helpers over webrtc-rs's STUN/TURN codecs, and the in-place
//! framing of relayed data (ChannelData, Data indications).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rtc::crypto::providers::RingCrypto;
use rtc::stun::attributes::*;
use rtc::stun::error_code::{ErrorCode, ErrorCodeAttribute};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, MAGIC_COOKIE, Message, MessageType, Setter,
};

pub(crate) static CRYPTO: RingCrypto = RingCrypto;

pub(crate) const HEADER: usize = 20;
/// The type of a Data indication (method 0x007, class indication).
const DATA_INDICATION: u16 = 0x0017;
/// Room in front of a relayed payload for the largest header put there: a
/// Data indication with an IPv6 XOR-PEER-ADDRESS (20 + 24 + 4 bytes).
pub(crate) const HEADROOM: usize = 48;
/// Room after it for padding to 4 bytes.
pub(crate) const TAILROOM: usize = 4;

/// RFC 5766 channel numbers, 0x4000–0x7FFF. RFC 8656 narrows new
/// bindings to 0x4000–0x4FFF, but coturn and its clients still use the
/// older range, so both are accepted.
pub(crate) fn valid_channel(n: u16) -> bool {
    (0x4000..=0x7FFF).contains(&n)
}

/// First byte of a ChannelData message (channel 0x4000–0x7FFF).
#[inline]
pub(crate) fn is_channel_data(first: u8) -> bool {
    first & 0xC0 == 0x40
}

pub(crate) fn decode(data: &[u8]) -> Option<Message> {
    if data.len() < HEADER || data[0] & 0xC0 != 0 {
        return None;
    }
    let mut m = Message::new();
    m.raw.clear();
    m.raw.extend_from_slice(data);
    m.decode().ok()?;
    Some(m)
}

/// Decodes an XOR-*-ADDRESS value (RFC 8489 §14.2).
pub(crate) fn xor_address(value: &[u8], m: &Message) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match value[1] {
        0x01 if value.len() == 8 => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = value[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        0x02 if value.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(&m.transaction_id.0);
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Every XOR-PEER-ADDRESS of `m`, `None` when one does not decode.
pub(crate) fn peer_addresses(m: &Message) -> Option<Vec<SocketAddr>> {
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| xor_address(&a.value, m))
        .collect()
}

pub(crate) fn text(m: &Message, t: AttrType) -> Option<String> {
    let v = m.get(t).ok()?;
    String::from_utf8(v).ok()
}

/// Attributes this server understands in requests; an unknown
/// comprehension-required one gets 420.
const KNOWN: &[AttrType] = &[
    ATTR_MAPPED_ADDRESS,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_XORMAPPED_ADDRESS,
    ATTR_CHANNEL_NUMBER,
    ATTR_LIFETIME,
    ATTR_XOR_PEER_ADDRESS,
    ATTR_DATA,
    ATTR_XOR_RELAYED_ADDRESS,
    ATTR_EVEN_PORT,
    ATTR_REQUESTED_TRANSPORT,
    ATTR_DONT_FRAGMENT,
    ATTR_RESERVATION_TOKEN,
    ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
    ATTR_CHANGE_REQUEST,
    ATTR_PADDING,
    ATTR_RESPONSE_PORT,
];

pub(crate) fn unknown_required(m: &Message) -> Vec<AttrType> {
    m.attributes
        .0
        .iter()
        .map(|a| a.typ)
        .filter(|t| t.required() && !KNOWN.contains(t))
        .collect()
}

/// A response to `req` under construction.
pub(crate) struct Reply {
    m: Message,
    fingerprint: bool,
}

impl Reply {
    pub(crate) fn success(req: &Message) -> Reply {
        Reply::new(req, CLASS_SUCCESS_RESPONSE)
    }

    pub(crate) fn error(req: &Message, code: u16) -> Reply {
        let mut r = Reply::new(req, CLASS_ERROR_RESPONSE);
        r.add(&ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason(code).as_bytes().to_vec(),
        });
        r
    }

    fn new(req: &Message, class: rtc::stun::message::MessageClass) -> Reply {
        let mut m = Message::new();
        m.typ = MessageType::new(req.typ.method, class);
        m.transaction_id = req.transaction_id;
        m.write_header();
        Reply {
            m,
            fingerprint: req.contains(ATTR_FINGERPRINT),
        }
    }

    /// Adds an attribute; the codecs only fail on values that cannot occur
    /// in what this server builds, and such an attribute is left out.
    pub(crate) fn add(&mut self, s: &dyn Setter) -> &mut Reply {
        let _ = s.add_to(&mut self.m);
        self
    }

    pub(crate) fn add_raw(&mut self, t: AttrType, v: &[u8]) -> &mut Reply {
        self.m.add(t, v);
        self
    }

    /// Encodes, with MESSAGE-INTEGRITY under `key` when given and
    /// FINGERPRINT when the request had one.
    pub(crate) fn finish(mut self, key: Option<&[u8]>) -> Vec<u8> {
        if let Some(key) = key {
            let mi = MessageIntegrity::new_raw_integrity_with_provider(key.to_vec(), &CRYPTO);
            let _ = mi.add_to(&mut self.m);
        }
        if self.fingerprint {
            let _ = FINGERPRINT.add_to(&mut self.m);
        }
        self.m.raw
    }
}

pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// Checks MESSAGE-INTEGRITY of `m` under `key`; false when absent or wrong.
pub(crate) fn integrity_ok(m: &mut Message, key: &[u8]) -> bool {
    match m.get(ATTR_MESSAGE_INTEGRITY) {
        Ok(v) if v.len() == 20 => MessageIntegrity::check(m, key, &CRYPTO).is_ok(),
        _ => false,
    }
}

/// The long-term key MD5(username:realm:password).
pub(crate) fn long_term_key(username: &str, realm: &str, password: &str) -> Option<[u8; 16]> {
    let k = MessageIntegrity::long_term_integrity_key(
        username.to_owned(),
        realm.to_owned(),
        password.to_owned(),
        &CRYPTO,
    )
    .ok()?;
    k.try_into().ok()
}

/// Puts a ChannelData header in front of the `len` payload bytes at
/// `buf[HEADROOM..]`; pads to 4 bytes when `pad`. Returns the frame range.
#[inline]
pub(crate) fn frame_channel_data(
    buf: &mut [u8],
    channel: u16,
    len: usize,
    pad: bool,
) -> std::ops::Range<usize> {
    let start = HEADROOM - 4;
    buf[start..start + 2].copy_from_slice(&channel.to_be_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
    let mut end = HEADROOM + len;
    if pad {
        let padded = (len + 3) & !3;
        buf[end..HEADROOM + padded].fill(0);
        end = HEADROOM + padded;
    }
    start..end
}

/// Puts a Data indication header (XOR-PEER-ADDRESS, DATA) in front of the
/// `len` payload bytes at `buf[HEADROOM..]`, padding included. `None`, and
/// `buf` untouched, when the message would be longer than its 16-bit length
/// field can say (a ChannelData frame from a TCP client may carry up to
/// 65535 bytes; a Data indication around them cannot).
#[inline]
pub(crate) fn frame_data_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    len: usize,
    txid: &[u8; 12],
) -> Option<std::ops::Range<usize>> {
    let alen = if peer.is_ipv4() { 8 } else { 20 };
    let start = HEADROOM - (HEADER + 4 + alen + 4);
    let padded = (len + 3) & !3;
    let body = u16::try_from(4 + alen + 4 + padded).ok()?;
    let data_len = u16::try_from(len).ok()?;
    buf[HEADROOM + len..HEADROOM + padded].fill(0);
    let h = &mut buf[start..HEADROOM];
    h[0..2].copy_from_slice(&DATA_INDICATION.to_be_bytes());
    h[2..4].copy_from_slice(&body.to_be_bytes());
    h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(txid);
    h[20..22].copy_from_slice(&ATTR_XOR_PEER_ADDRESS.0.to_be_bytes());
    h[22..24].copy_from_slice(&(alen as u16).to_be_bytes());
    h[24] = 0;
    let port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    h[26..28].copy_from_slice(&port.to_be_bytes());
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match peer.ip() {
        IpAddr::V4(ip) => {
            h[25] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                h[28 + i] = b ^ cookie[i];
            }
        }
        IpAddr::V6(ip) => {
            h[25] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                h[28 + i] = b ^ k;
            }
        }
    }
    let d = 24 + alen;
    h[d..d + 2].copy_from_slice(&ATTR_DATA.0.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&data_len.to_be_bytes());
    Some(start..HEADROOM + padded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{CLASS_INDICATION, Getter, METHOD_DATA};
    use rtc::turn::proto::data::Data;
    use rtc::turn::proto::peeraddr::PeerAddress;

    #[test]
    fn data_indication_decodes_with_the_codec() {
        for peer in ["192.0.2.7:4000", "[2001:db8::7]:4000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buf = vec![0u8; HEADROOM + 64 + TAILROOM];
            let payload = b"hello, relay!";
            buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
            let r = frame_data_indication(&mut buf, peer, payload.len(), &[7; 12]).unwrap();
            let m = decode(&buf[r]).expect("decodes");
            assert_eq!(m.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
            let mut pa = PeerAddress::default();
            pa.get_from(&m).unwrap();
            assert_eq!(SocketAddr::new(pa.ip, pa.port), peer);
            let mut d = Data::default();
            d.get_from(&m).unwrap();
            assert_eq!(&d.0, payload);
            assert_eq!(peer_addresses(&m).unwrap(), vec![peer]);
        }
    }

    #[test]
    fn a_data_indication_never_outgrows_its_length_field() {
        for (peer, fits) in [("192.0.2.7:4000", 65_516), ("[2001:db8::7]:4000", 65_504)] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buf = vec![0x5Au8; HEADROOM + 65_536 + TAILROOM];
            // The largest payload that fits: the length field says 65532.
            let r = frame_data_indication(&mut buf, peer, fits, &[7; 12]).unwrap();
            assert_eq!(&buf[r.start + 2..r.start + 4], &65_532u16.to_be_bytes());
            let m = decode(&buf[r]).expect("decodes");
            let mut d = Data::default();
            d.get_from(&m).unwrap();
            assert_eq!(d.0.len(), fits);
            // One more byte (padded to four) would wrap the 16-bit length
            // (before the check: a header saying 0..4 bytes): refused, and
            // the buffer left as it was.
            let mut buf = vec![0x5Au8; HEADROOM + 65_536 + TAILROOM];
            assert_eq!(
                frame_data_indication(&mut buf, peer, fits + 1, &[7; 12]),
                None
            );
            assert_eq!(
                frame_data_indication(&mut buf, peer, 65_535, &[7; 12]),
                None
            );
            assert!(buf.iter().all(|&b| b == 0x5A));
        }
    }

    #[test]
    fn the_data_indication_type_is_the_codecs() {
        assert_eq!(
            MessageType::new(METHOD_DATA, CLASS_INDICATION).value(),
            DATA_INDICATION
        );
    }

    #[test]
    fn channel_data_is_padded_on_streams_only() {
        let mut buf = vec![0xAAu8; HEADROOM + 16 + TAILROOM];
        let r = frame_channel_data(&mut buf, 0x4001, 5, false);
        assert_eq!(r.len(), 9);
        assert_eq!(&buf[r.start..r.start + 4], &[0x40, 0x01, 0, 5]);
        let r = frame_channel_data(&mut buf, 0x4001, 5, true);
        assert_eq!(r.len(), 12);
        assert_eq!(&buf[r.end - 3..r.end], &[0, 0, 0]);
    }

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        let mut seed = 1u64;
        for len in 0..600 {
            let mut v = vec![0u8; len % 120];
            for b in v.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (seed >> 33) as u8;
            }
            if v.len() >= 8 {
                v[0] &= 0x3F;
                v[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                let l = (v.len().saturating_sub(20)) as u16;
                v[2..4].copy_from_slice(&l.to_be_bytes());
            }
            if let Some(mut m) = decode(&v) {
                let _ = peer_addresses(&m);
                let _ = integrity_ok(&mut m, &[0; 16]);
                let _ = unknown_required(&m);
            }
        }
    }
}
