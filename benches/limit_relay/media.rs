//! The media thread: one UDP socket, batched I/O, and per packet the least
//! an SFU must do. STUN and DTLS set each transport up; from then on a
//! publisher's datagram is SRTP-decrypted once, its header rewritten (SSRC,
//! payload type, header extensions dropped) and SRTP-encrypted once per
//! subscriber, and everything a batch produced goes out in one sendmmsg.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::HandshakeConfig;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::mmsg::{self, RecvBatch};
use crate::stun;

/// What the control plane tells the media thread.
pub enum Command {
    AddTransport {
        ufrag: String,
        pwd: String,
    },
    RemoveTransport {
        ufrag: String,
    },
    /// The client answered `a=setup:passive`: we start DTLS, as its client.
    DtlsClient {
        ufrag: String,
    },
    /// Forward the publisher transport's SSRC `ssrc` to `subscriber`.
    AddConsumer {
        publisher: String,
        ssrc: u32,
        subscriber: String,
        out_ssrc: u32,
        out_payload_type: u8,
    },
}

/// The counters /metrics shows, with callgate's names.
#[derive(Default)]
pub struct Counters {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Set-up and trouble, for when nothing flows.
    pub stun_requests: AtomicU64,
    pub handshakes: AtomicU64,
    pub srtp_failures: AtomicU64,
    pub unroutable: AtomicU64,
}

struct Transport {
    pwd: String,
    addr: Option<SocketAddr>,
    /// We are the DTLS client here and have not started yet.
    connect: bool,
    /// Decrypts what the peer sends; encrypts what we send it.
    srtp_in: Option<Context>,
    srtp_out: Option<Context>,
}

struct Consumer {
    transport: usize,
    ssrc: u32,
    payload_type: u8,
}

struct Relay {
    socket: UdpSocket,
    crypto: Arc<dyn RTCCryptoProvider>,
    dtls: Endpoint,
    dtls_client: Arc<HandshakeConfig>,
    handshaking: HashSet<SocketAddr>,
    transports: Vec<Option<Transport>>,
    by_ufrag: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// (publisher transport, SSRC) → its consumers.
    routes: HashMap<(usize, u32), Vec<Consumer>>,
    outbox: Vec<(SocketAddr, BytesMut)>,
    scratch: Vec<u8>,
    counters: Arc<Counters>,
}

pub fn run(
    socket: UdpSocket,
    crypto: Arc<dyn RTCCryptoProvider>,
    dtls_config: Arc<HandshakeConfig>,
    dtls_client: Arc<HandshakeConfig>,
    commands: Receiver<Command>,
    counters: Arc<Counters>,
) {
    let local = socket.local_addr().expect("a bound socket");
    let _ = socket.set_read_timeout(Some(Duration::from_millis(10)));
    mmsg::set_buffers(&socket, 4 << 20);
    let mut relay = Relay {
        socket,
        crypto,
        dtls: Endpoint::new(local, TransportProtocol::UDP, Some(dtls_config)),
        dtls_client,
        handshaking: HashSet::new(),
        transports: Vec::new(),
        by_ufrag: HashMap::new(),
        by_addr: HashMap::new(),
        routes: HashMap::new(),
        outbox: Vec::new(),
        scratch: Vec::with_capacity(2048),
        counters,
    };
    let mut batch = RecvBatch::new();
    loop {
        let received = batch.recv(&relay.socket);
        // Commands first: a transport's first STUN check may be what woke us.
        loop {
            match commands.try_recv() {
                Ok(c) => relay.command(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if let Ok(n) = received {
            let now = Instant::now();
            for i in 0..n {
                if let Some((from, data)) = batch.get(i) {
                    relay.datagram(now, from, data);
                }
            }
        }
        relay.timers(Instant::now());
        relay.flush();
    }
}

/// RFC 7983 demultiplexing by the first byte.
enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

fn kind(data: &[u8]) -> Kind {
    match data.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if data.len() >= 12 => {
            // RTCP packet types 192–223 share the port (rtcp-mux).
            if (192..=223).contains(&data[1]) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Other,
    }
}

fn srtp_profile(p: SrtpProtectionProfile) -> Option<ProtectionProfile> {
    match p {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(ProtectionProfile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => Some(ProtectionProfile::AeadAes256Gcm),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            Some(ProtectionProfile::Aes128CmHmacSha1_80)
        }
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => {
            Some(ProtectionProfile::Aes128CmHmacSha1_32)
        }
        _ => None,
    }
}

impl Relay {
    fn command(&mut self, c: Command) {
        match c {
            Command::AddTransport { ufrag, pwd } => {
                let idx = self.transports.len();
                self.by_ufrag.insert(ufrag, idx);
                self.transports.push(Some(Transport {
                    pwd,
                    addr: None,
                    connect: false,
                    srtp_in: None,
                    srtp_out: None,
                }));
            }
            Command::RemoveTransport { ufrag } => {
                let Some(idx) = self.by_ufrag.remove(&ufrag) else {
                    return;
                };
                if let Some(t) = self.transports[idx].take()
                    && let Some(addr) = t.addr
                {
                    self.by_addr.remove(&addr);
                    self.handshaking.remove(&addr);
                    let _ = self.dtls.stop(Instant::now(), addr);
                }
                self.routes.retain(|(p, _), _| *p != idx);
                for consumers in self.routes.values_mut() {
                    consumers.retain(|c| c.transport != idx);
                }
            }
            Command::DtlsClient { ufrag } => {
                if let Some(t) = self
                    .by_ufrag
                    .get(&ufrag)
                    .and_then(|i| self.transports[*i].as_mut())
                {
                    t.connect = true;
                }
            }
            Command::AddConsumer {
                publisher,
                ssrc,
                subscriber,
                out_ssrc,
                out_payload_type,
            } => {
                let (Some(p), Some(s)) = (
                    self.by_ufrag.get(&publisher).copied(),
                    self.by_ufrag.get(&subscriber).copied(),
                ) else {
                    return;
                };
                self.routes.entry((p, ssrc)).or_default().push(Consumer {
                    transport: s,
                    ssrc: out_ssrc,
                    payload_type: out_payload_type,
                });
            }
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.counters
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        match kind(data) {
            Kind::Stun => self.stun(now, from, data),
            Kind::Dtls => self.dtls(now, from, data),
            Kind::Rtp => self.rtp(from, data),
            // Receiver reports, NACKs, sender reports: nothing a floor must do.
            Kind::Rtcp | Kind::Other => {}
        }
    }

    fn stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(request) = stun::parse(data) else {
            return;
        };
        let Some(&idx) = self.by_ufrag.get(&request.ufrag) else {
            return;
        };
        let Some(t) = self.transports[idx].as_mut() else {
            return;
        };
        if t.addr != Some(from) {
            if let Some(old) = t.addr {
                self.by_addr.remove(&old);
            }
            t.addr = Some(from);
            self.by_addr.insert(from, idx);
        }
        self.counters.stun_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(response) = stun::success(&request, from, &t.pwd, self.crypto.crypto()) {
            self.outbox.push((from, BytesMut::from(&response[..])));
        }
        if t.connect {
            t.connect = false;
            if self
                .dtls
                .connect(now, from, self.dtls_client.clone(), None)
                .is_ok()
            {
                self.handshaking.insert(from);
            }
            while let Some(t) = self.dtls.poll_transmit() {
                self.outbox.push((t.transport.peer_addr, t.message));
            }
        }
    }

    fn dtls(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(&idx) = self.by_addr.get(&from) else {
            return;
        };
        self.handshaking.insert(from);
        let events = self
            .dtls
            .read(now, from, None, BytesMut::from(data))
            .unwrap_or_default();
        for event in events {
            if let EndpointEvent::HandshakeComplete = event {
                self.handshaking.remove(&from);
                self.counters.handshakes.fetch_add(1, Ordering::Relaxed);
                if let Some((srtp_in, srtp_out)) = self.srtp_contexts(from)
                    && let Some(t) = self.transports[idx].as_mut()
                {
                    t.srtp_in = Some(srtp_in);
                    t.srtp_out = Some(srtp_out);
                }
            }
        }
        while let Some(t) = self.dtls.poll_transmit() {
            self.outbox.push((t.transport.peer_addr, t.message));
        }
    }

    /// The SRTP contexts of a finished handshake (what rtc's DTLS handler
    /// derives, RFC 5764 §4.2): remote first, then local.
    fn srtp_contexts(&self, from: SocketAddr) -> Option<(Context, Context)> {
        let state = self.dtls.get_connection_state(from)?;
        let profile = srtp_profile(state.srtp_protection_profile())?;
        let mut config = SrtpConfig {
            profile,
            ..Default::default()
        };
        let material = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], config.keying_material_len())
            .ok()?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .ok()?;
        let keys = &config.keys;
        let crypto = self.crypto.crypto();
        let remote = Context::new(
            &keys.remote_master_key,
            &keys.remote_master_salt,
            profile,
            None,
            None,
            crypto,
        )
        .ok()?;
        let local = Context::new(
            &keys.local_master_key,
            &keys.local_master_salt,
            profile,
            None,
            None,
            crypto,
        )
        .ok()?;
        Some((remote, local))
    }

    fn rtp(&mut self, from: SocketAddr, data: &[u8]) {
        let Some(&idx) = self.by_addr.get(&from) else {
            return;
        };
        let Some(srtp_in) = self.transports[idx]
            .as_mut()
            .and_then(|t| t.srtp_in.as_mut())
        else {
            return;
        };
        let Ok(plain) = srtp_in.decrypt_rtp(data) else {
            self.counters.srtp_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        let ssrc = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
        let Some(consumers) = self.routes.get(&(idx, ssrc)) else {
            self.counters.unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Extension ids are per leg: drop the extensions, once for all.
        let csrcs = 12 + 4 * usize::from(plain[0] & 0x0f);
        let mut body = csrcs;
        if plain[0] & 0x10 != 0 && plain.len() >= csrcs + 4 {
            let words = usize::from(u16::from_be_bytes([plain[csrcs + 2], plain[csrcs + 3]]));
            body = csrcs + 4 + 4 * words;
        }
        if body > plain.len() {
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&plain[..csrcs]);
        self.scratch[0] &= !0x10;
        self.scratch.extend_from_slice(&plain[body..]);
        let (mut packets, mut bytes) = (0u64, 0u64);
        for c in consumers {
            let Some(sub) = self.transports[c.transport].as_mut() else {
                continue;
            };
            let (Some(addr), Some(srtp_out)) = (sub.addr, sub.srtp_out.as_mut()) else {
                continue;
            };
            self.scratch[1] = (self.scratch[1] & 0x80) | c.payload_type;
            self.scratch[8..12].copy_from_slice(&c.ssrc.to_be_bytes());
            if let Ok(out) = srtp_out.encrypt_rtp(&self.scratch) {
                packets += 1;
                bytes += out.len() as u64;
                self.outbox.push((addr, out));
            }
        }
        self.counters
            .packets_out
            .fetch_add(packets, Ordering::Relaxed);
        self.counters.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    fn timers(&mut self, now: Instant) {
        if self.handshaking.is_empty() {
            return;
        }
        let due: Vec<SocketAddr> = self
            .handshaking
            .iter()
            .filter(|a| self.dtls.poll_timeout(a).is_some_and(|t| t <= now))
            .copied()
            .collect();
        for remote in due {
            if self.dtls.handle_timeout(remote, now).is_err() {
                self.handshaking.remove(&remote);
            }
        }
        while let Some(t) = self.dtls.poll_transmit() {
            self.outbox.push((t.transport.peer_addr, t.message));
        }
    }

    fn flush(&mut self) {
        if !self.outbox.is_empty() {
            mmsg::send_all(&self.socket, &mut self.outbox);
        }
    }
}
