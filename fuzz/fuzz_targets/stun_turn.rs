//! STUN/TURN handling: the TURN relay's request and ChannelData paths
//! (turn-relay, through its `fuzz_support`: UDP datagrams and TCP/TLS
//! frames, raw or as requests carrying valid credentials) and the SFU's
//! reading of STUN (`sfu/src/stun.rs`) on every raw datagram.
//!
//! Input: up to 16 operations, each an opcode byte then its data; the low
//! two bits of the opcode pick the operation, the next two the client:
//!   0  a raw UDP datagram (u16 length, bytes)
//!   1  a signed message over UDP
//!   2  a raw TCP/TLS frame (u16 length, bytes)
//!   3  a signed message over TCP/TLS
//! A signed message: method byte, transaction-id byte, attribute count,
//! then per attribute a selector byte and its value (see `attribute`).
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use callgate_fuzz::Input;
use callgate_sfu::fuzz_support::{stun_ice_username, stun_is_binding_request};
use callgate_turn::fuzz_support::{FuzzRelay, Method, xor_address};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 6] = [
    Method::Binding,
    Method::Allocate,
    Method::Refresh,
    Method::CreatePermission,
    Method::ChannelBind,
    Method::Send,
];

// Attribute types a TURN request carries (RFC 8656 §18, RFC 8489 §18.3).
const REQUESTED_TRANSPORT: u16 = 0x0019;
const LIFETIME: u16 = 0x000D;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const CHANNEL_NUMBER: u16 = 0x000C;
const DATA: u16 = 0x0013;
const EVEN_PORT: u16 = 0x0018;
const DONT_FRAGMENT: u16 = 0x001A;
const RESERVATION_TOKEN: u16 = 0x0022;
const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
const SOFTWARE: u16 = 0x8022;
const TYPES: [u16; 10] = [
    REQUESTED_TRANSPORT,
    LIFETIME,
    XOR_PEER_ADDRESS,
    CHANNEL_NUMBER,
    DATA,
    EVEN_PORT,
    DONT_FRAGMENT,
    RESERVATION_TOKEN,
    REQUESTED_ADDRESS_FAMILY,
    SOFTWARE,
];

thread_local! {
    static RELAY: RefCell<FuzzRelay> = RefCell::new(FuzzRelay::new().expect("fuzz relay"));
}

fn client(who: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000 + u16::from(who))
}

/// One attribute: a selector byte, then its value. Selector below 0xF0: a
/// type from `TYPES`; an XOR-PEER-ADDRESS then names a peer by one byte
/// (`peer`) when the selector's top bit is clear. 0xF0 and up: a raw type
/// in the next two bytes. Other values: a length byte, then the bytes.
fn attribute(input: &mut Input, relay: &FuzzRelay, txid: [u8; 12]) -> (u16, Vec<u8>) {
    let selector = input.byte();
    let typ = if selector >= 0xF0 {
        input.u16()
    } else {
        TYPES[usize::from(selector) % TYPES.len()]
    };
    if typ == XOR_PEER_ADDRESS && selector < 0x80 {
        return (typ, xor_address(peer(input.byte(), relay), txid));
    }
    let len = usize::from(input.byte());
    (typ, input.bytes(len).to_vec())
}

/// A peer address: a loopback port with nothing behind it, another
/// allocation's relayed address, or one the filter refuses.
fn peer(choice: u8, relay: &FuzzRelay) -> SocketAddr {
    let relayed = relay.relayed_addrs();
    match choice % 4 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9),
        1 if !relayed.is_empty() => relayed[usize::from(choice / 4) % relayed.len()],
        2 => "192.0.2.1:5000".parse().expect("address"),
        _ => "[::1]:5000".parse().expect("address"),
    }
}

fn signed(input: &mut Input, relay: &FuzzRelay, from: SocketAddr) -> Vec<u8> {
    let method_byte = input.byte();
    let method = METHODS[usize::from(method_byte) % METHODS.len()];
    let txid = [input.byte(); 12];
    let count = input.byte() % 6;
    let attributes: Vec<(u16, Vec<u8>)> =
        (0..count).map(|_| attribute(input, relay, txid)).collect();
    let borrowed: Vec<(u16, &[u8])> = attributes.iter().map(|(t, v)| (*t, &v[..])).collect();
    relay.signed(from, method, txid, &borrowed, method_byte & 0x80 != 0)
}

/// The SFU's STUN reading on the same bytes.
fn sfu_stun(data: &[u8]) {
    if let Some(ufrag) = stun_ice_username(data) {
        assert!(!ufrag.contains(':'));
    }
    if stun_is_binding_request(data) {
        assert!(data.len() >= 20);
    }
}

/// A reply answers the request it was for: a STUN message with its
/// transaction id.
fn check_reply(request: &[u8], reply: &[u8]) {
    assert!(reply.len() >= 20, "a reply shorter than a STUN header");
    assert_eq!(reply[0] & 0xC0, 0);
    assert_eq!(reply[4..8], [0x21, 0x12, 0xa4, 0x42]);
    assert_eq!(
        reply[8..20],
        request[8..20],
        "a reply for another transaction"
    );
}

fuzz_target!(|data: &[u8]| {
    RELAY.with_borrow_mut(|relay| {
        relay.reset();
        let mut input = Input::new(data);
        for _ in 0..16 {
            if input.is_empty() {
                break;
            }
            let op = input.byte();
            let who = (op >> 2) & 3;
            let from = client(who);
            match op & 3 {
                0 => {
                    let datagram = input.chunk(2048);
                    sfu_stun(datagram);
                    if let Some(reply) = relay.datagram(from, datagram) {
                        check_reply(datagram, &reply);
                    }
                }
                1 => {
                    let message = signed(&mut input, relay, from);
                    if let Some(reply) = relay.datagram(from, &message) {
                        check_reply(&message, &reply);
                    }
                }
                2 => {
                    let frame = input.chunk(usize::from(u16::MAX) + 20);
                    sfu_stun(frame);
                    relay.stream_frame(u64::from(who & 1), from, frame.to_vec());
                }
                _ => {
                    let message = signed(&mut input, relay, from);
                    for reply in relay.stream_frame(u64::from(who & 1), from, message.clone()) {
                        // Data relayed to this connection is framed too.
                        if reply[0] & 0xC0 == 0 && reply.get(0..2) != Some(&[0x00, 0x17]) {
                            check_reply(&message, &reply);
                        }
                    }
                }
            }
        }
    });
});
