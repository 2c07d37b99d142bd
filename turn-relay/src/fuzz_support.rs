//! The relay's message handling with no listener socket, for the fuzz
//! targets (fuzz/): datagrams and TCP/TLS frames go in through the paths
//! the listeners use, replies come back as bytes. Allocations still open
//! their relay sockets, on loopback, and the peer filter lets data go to
//! 127.0.0.0/8 only. Not part of the API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use mio::Poll;
use rtc::stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, AttrType};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND, Message, MessageType, Setter,
    TransactionId,
};

use crate::auth::rest_password;
use crate::metrics::TurnMetrics;
use crate::proto::{CRYPTO, TAILROOM, long_term_key};
use crate::relay::{CLIENT_AT, Control, Relay, StreamEvent};
use crate::{TurnConfig, TurnError};
use callgate_udp_batch::SLOT;

const SECRET: &str = "fuzz-secret";
/// A REST username that expires in 2100.
const USERNAME: &str = "4102444800:fuzz";

/// What a signed message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    /// A Send indication (no reply).
    Send,
}

/// One relay thread's state, driven by hand.
pub struct FuzzRelay {
    relay: Relay,
    /// Kept so the relay sees its control channel open.
    _control: mpsc::Sender<Control>,
    streams: tokio::sync::mpsc::Sender<StreamEvent>,
    /// What the relay sent each TCP/TLS client, by connection id.
    stream_replies: Vec<(u64, tokio::sync::mpsc::Receiver<Vec<u8>>)>,
    slot: Vec<u8>,
    key: [u8; 16],
}

impl FuzzRelay {
    /// A relay on 127.0.0.1 whose peers may be 127.0.0.0/8 and nothing else.
    pub fn new() -> Result<FuzzRelay, TurnError> {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut cfg = TurnConfig::new(loopback, SECRET);
        cfg.udp = None;
        cfg.tcp = None;
        cfg.allow_peers = vec!["127.0.0.0/8".parse().map_err(invalid)?];
        // Everything outside 127.0.0.0/8, in both families.
        cfg.deny_peers = [
            "0.0.0.0/2",
            "64.0.0.0/3",
            "96.0.0.0/4",
            "112.0.0.0/5",
            "120.0.0.0/6",
            "124.0.0.0/7",
            "126.0.0.0/8",
            "128.0.0.0/1",
            "::/0",
        ]
        .iter()
        .map(|n| n.parse().map_err(invalid))
        .collect::<Result<_, _>>()?;
        cfg.max_permissions_per_allocation = 8;
        let metrics = TurnMetrics::new(&prometheus::Registry::new())?;
        let (control, control_rx) = mpsc::channel();
        let (streams, streams_rx) = tokio::sync::mpsc::channel(64);
        let relay = Relay::new(
            Arc::new(cfg.clone()),
            Poll::new()?,
            None,
            control_rx,
            streams_rx,
            metrics,
        );
        let password = rest_password(SECRET.as_bytes(), USERNAME);
        let key = long_term_key(USERNAME, &cfg.realm, &password)
            .ok_or_else(|| TurnError::Config("no long-term key".into()))?;
        Ok(FuzzRelay {
            relay,
            _control: control,
            streams,
            stream_replies: Vec::new(),
            slot: vec![0; SLOT],
            key,
        })
    }

    /// Frees every allocation and forgets every connection: a fresh relay
    /// for the next input, without the cost of making one.
    pub fn reset(&mut self) {
        for (id, _) in std::mem::take(&mut self.stream_replies) {
            self.stream_event(StreamEvent::Closed { id });
        }
        self.relay.remove_all();
    }

    /// A datagram from `from` on the UDP listener; the reply, if any.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let room = SLOT - CLIENT_AT - TAILROOM;
        // recvmmsg reports a datagram longer than the slot as truncated.
        let len = if data.len() > room {
            usize::MAX
        } else {
            data.len()
        };
        let n = data.len().min(room);
        self.slot[CLIENT_AT..CLIENT_AT + n].copy_from_slice(&data[..n]);
        let mut slot = std::mem::take(&mut self.slot);
        let reply = self
            .relay
            .on_client_datagram(from, &mut slot, len, Instant::now());
        // What the datagram queued points into `slot`: send it before reuse.
        self.relay.flush_to_peers();
        self.relay.flush_to_clients();
        self.slot = slot;
        reply
    }

    /// One whole frame from TCP/TLS connection `id` (opened from `from` on
    /// first use); what the relay sent that connection since.
    pub fn stream_frame(&mut self, id: u64, from: SocketAddr, frame: Vec<u8>) -> Vec<Vec<u8>> {
        if !self.stream_replies.iter().any(|(i, _)| *i == id) {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            self.stream_replies.push((id, rx));
            // Nobody waits for the authentication notice here.
            let (authenticated, _) = tokio::sync::oneshot::channel();
            self.stream_event(StreamEvent::Open {
                id,
                remote: from,
                tx,
                authenticated,
            });
        }
        self.stream_event(StreamEvent::Frame { id, frame });
        self.stream_received(id)
    }

    /// What the relay sent TCP/TLS connection `id` and was not read yet.
    pub fn stream_received(&mut self, id: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some((_, rx)) = self.stream_replies.iter_mut().find(|(i, _)| *i == id) {
            while let Ok(message) = rx.try_recv() {
                out.push(message);
            }
        }
        out
    }

    fn stream_event(&mut self, event: StreamEvent) {
        if self.streams.try_send(event).is_ok() {
            self.relay.drain_control(Instant::now());
        }
    }

    /// The relayed address of every allocation, in no order.
    pub fn relayed_addrs(&self) -> Vec<SocketAddr> {
        self.relay.relayed_addrs()
    }

    /// A message of `method` from `from` carrying `attributes` (type,
    /// value) as given, then the USERNAME, REALM, NONCE and
    /// MESSAGE-INTEGRITY of a valid REST credential, and a FINGERPRINT when
    /// asked: what lets a fuzzer past authentication.
    pub fn signed(
        &self,
        from: SocketAddr,
        method: Method,
        transaction_id: [u8; 12],
        attributes: &[(u16, &[u8])],
        fingerprint: bool,
    ) -> Vec<u8> {
        let (method, class) = match method {
            Method::Binding => (METHOD_BINDING, CLASS_REQUEST),
            Method::Allocate => (METHOD_ALLOCATE, CLASS_REQUEST),
            Method::Refresh => (METHOD_REFRESH, CLASS_REQUEST),
            Method::CreatePermission => (METHOD_CREATE_PERMISSION, CLASS_REQUEST),
            Method::ChannelBind => (METHOD_CHANNEL_BIND, CLASS_REQUEST),
            Method::Send => (METHOD_SEND, CLASS_INDICATION),
        };
        let mut m = Message::new();
        m.typ = MessageType::new(method, class);
        m.transaction_id = TransactionId(transaction_id);
        m.write_header();
        for (t, v) in attributes {
            // Room for the credentials after them (STUN lengths are 16 bits).
            if m.raw.len() + 4 + v.len() > 60_000 {
                break;
            }
            m.add(AttrType(*t), v);
        }
        m.add(ATTR_USERNAME, USERNAME.as_bytes());
        m.add(ATTR_REALM, b"callgate");
        m.add(ATTR_NONCE, self.relay.issue_nonce(from).as_bytes());
        let integrity =
            MessageIntegrity::new_raw_integrity_with_provider(self.key.to_vec(), &CRYPTO);
        let _ = integrity.add_to(&mut m);
        if fingerprint {
            let _ = FINGERPRINT.add_to(&mut m);
        }
        m.raw
    }
}

/// An XOR-PEER-ADDRESS (or XOR-MAPPED-ADDRESS) value for `addr` in a
/// message with `transaction_id`, for building requests.
pub fn xor_address(addr: SocketAddr, transaction_id: [u8; 12]) -> Vec<u8> {
    let cookie = rtc::stun::message::MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (rtc::stun::message::MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0, 0];
    v.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 0x01;
            v.extend(ip.octets().iter().zip(cookie).map(|(b, k)| b ^ k));
        }
        IpAddr::V6(ip) => {
            v[1] = 0x02;
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(&transaction_id);
            v.extend(ip.octets().iter().zip(key).map(|(b, k)| b ^ k));
        }
    }
    v
}

fn invalid(e: impl std::fmt::Display) -> TurnError {
    TurnError::Config(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;
    use rtc::stun::attributes::{
        ATTR_CHANNEL_NUMBER, ATTR_REQUESTED_TRANSPORT, ATTR_XOR_PEER_ADDRESS,
    };
    use rtc::stun::error_code::ErrorCodeAttribute;
    use rtc::stun::message::{CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, Getter};
    use rtc::turn::proto::relayaddr::RelayedAddress;

    fn class_of(reply: &[u8]) -> rtc::stun::message::MessageClass {
        decode(reply).expect("a STUN reply").typ.class
    }

    #[test]
    fn signed_requests_get_past_authentication() {
        let mut relay = FuzzRelay::new().unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let txid = [1; 12];
        let allocate = relay.signed(
            client,
            Method::Allocate,
            txid,
            &[(ATTR_REQUESTED_TRANSPORT.0, &[17, 0, 0, 0])],
            true,
        );
        let reply = relay.datagram(client, &allocate).expect("a reply");
        assert_eq!(class_of(&reply), CLASS_SUCCESS_RESPONSE);
        // A channel to a peer outside loopback is refused by the filter.
        let txid = [2; 12];
        let outside = xor_address("192.0.2.1:5000".parse().unwrap(), txid);
        let bind = relay.signed(
            client,
            Method::ChannelBind,
            txid,
            &[
                (ATTR_CHANNEL_NUMBER.0, &[0x40, 0x00, 0, 0]),
                (ATTR_XOR_PEER_ADDRESS.0, &outside),
            ],
            false,
        );
        let reply = relay.datagram(client, &bind).expect("a reply");
        let m = decode(&reply).unwrap();
        assert_eq!(m.typ.class, CLASS_ERROR_RESPONSE);
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).unwrap();
        assert_eq!(code.code.0, 403);
        // After a reset the allocation is gone: a Refresh gets 437.
        relay.reset();
        let refresh = relay.signed(client, Method::Refresh, [3; 12], &[], false);
        let m = decode(&relay.datagram(client, &refresh).unwrap()).unwrap();
        code.get_from(&m).unwrap();
        assert_eq!(code.code.0, 437);
    }

    /// Allocates for TCP connection `id`; its relayed address.
    fn allocate_on_stream(relay: &mut FuzzRelay, id: u64, from: SocketAddr) -> SocketAddr {
        let txid = [id as u8; 12];
        let allocate = relay.signed(
            from,
            Method::Allocate,
            txid,
            &[(ATTR_REQUESTED_TRANSPORT.0, &[17, 0, 0, 0])],
            false,
        );
        let replies = relay.stream_frame(id, from, allocate);
        let m = decode(&replies[0]).expect("a reply");
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&m).expect("XOR-RELAYED-ADDRESS");
        SocketAddr::new(relayed.ip, relayed.port)
    }

    #[test]
    fn channel_data_too_big_for_a_data_indication_is_dropped() {
        let mut relay = FuzzRelay::new().unwrap();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:40010".parse().unwrap(),
            "127.0.0.1:40011".parse().unwrap(),
        );
        let a_relayed = allocate_on_stream(&mut relay, 1, a);
        let b_relayed = allocate_on_stream(&mut relay, 2, b);
        // B lets A's relayed address in; A binds channel 0x4000 to B's.
        let perm = relay.signed(
            b,
            Method::CreatePermission,
            [3; 12],
            &[(ATTR_XOR_PEER_ADDRESS.0, &xor_address(a_relayed, [3; 12]))],
            false,
        );
        assert_eq!(
            class_of(&relay.stream_frame(2, b, perm)[0]),
            CLASS_SUCCESS_RESPONSE
        );
        let bind = relay.signed(
            a,
            Method::ChannelBind,
            [4; 12],
            &[
                (ATTR_CHANNEL_NUMBER.0, &[0x40, 0x00, 0, 0]),
                (ATTR_XOR_PEER_ADDRESS.0, &xor_address(b_relayed, [4; 12])),
            ],
            false,
        );
        assert_eq!(
            class_of(&relay.stream_frame(1, a, bind)[0]),
            CLASS_SUCCESS_RESPONSE
        );
        let channel_data = |len: usize| {
            let mut frame = vec![0x40, 0x00];
            frame.extend_from_slice(&(len as u16).to_be_bytes());
            frame.resize(4 + len.next_multiple_of(4), 0xAB);
            frame
        };
        // B has no channel back to A: it gets a Data indication whose
        // length field is what follows the header.
        relay.stream_frame(1, a, channel_data(1000));
        let got = relay.stream_received(2);
        assert_eq!(got.len(), 1);
        let length = u16::from_be_bytes([got[0][2], got[0][3]]);
        assert_eq!(usize::from(length), got[0].len() - 20);
        assert_eq!(got[0][0..2], [0x00, 0x17]);
        // 65535 bytes fit a ChannelData frame but no Data indication (its
        // length would wrap): dropped, B gets nothing.
        relay.stream_frame(1, a, channel_data(65_535));
        assert_eq!(relay.stream_received(2), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn stream_frames_reach_the_relay() {
        let mut relay = FuzzRelay::new().unwrap();
        let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let binding = relay.signed(client, Method::Binding, [4; 12], &[], false);
        let replies = relay.stream_frame(7, client, binding);
        assert_eq!(replies.len(), 1);
        assert_eq!(class_of(&replies[0]), CLASS_SUCCESS_RESPONSE);
    }
}
