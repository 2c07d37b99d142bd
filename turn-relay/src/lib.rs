//! callgate's embedded TURN relay (RFC 8656, STUN per RFC 8489).
//!
//! Listeners: UDP, TCP and TLS-over-TCP, each optional. Allocations relay
//! UDP only (RFC 6062 TCP relaying is not offered). Credentials are coturn's
//! `use-auth-secret` scheme ("TURN REST"): the username is
//! `<expiry unix time>:<identity>` and the password
//! `base64(HMAC-SHA1(secret, username))`, see [`rest_credential`].
//!
//! Shape: one relay thread owns every allocation, the UDP listener and every
//! relay socket, driven by a `mio` poll loop: no lock and no allocation per
//! relayed packet, datagrams read and written in batches (`recvmmsg` /
//! `sendmmsg`). TCP and TLS connections run as tokio tasks that hand whole
//! STUN / ChannelData frames to the relay thread over a channel and get
//! theirs back on another. STUN and TURN attributes are encoded and decoded
//! with webrtc-rs's `stun` and `turn` crates (re-exported by `rtc`); the
//! ChannelData and Data-indication hot path is framed in place here.

mod auth;
mod filter;
#[doc(hidden)]
pub mod fuzz_support;
mod metrics;
mod proto;
mod relay;
mod stream;
mod tls;

pub use auth::{rest_credential, rest_password};
pub use filter::{DEFAULT_DENIED_PEERS, PeerFilter};
pub use ipnet::IpNet;
pub use metrics::TurnMetrics;
pub use tls::TlsIdentity;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("binding the TURN {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("TURN relay I/O: {0}")]
    Io(#[from] io::Error),
    #[error("TLS certificate or key: {0}")]
    Tls(String),
    #[error("registering TURN metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid TURN configuration: {0}")]
    Config(String),
}

/// Everything the relay needs, already validated by the caller.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// REALM sent to clients and used in the long-term key.
    pub realm: String,
    /// Shared secret of the REST credentials.
    pub auth_secret: String,
    /// UDP listener, when enabled (port 0 picks a free port).
    pub udp: Option<SocketAddr>,
    /// TCP listener, when enabled.
    pub tcp: Option<SocketAddr>,
    /// TLS listener and its certificate, when enabled.
    pub tls: Option<(SocketAddr, TlsIdentity)>,
    /// Address the relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Address put in XOR-RELAYED-ADDRESS (the public one behind 1:1 NAT).
    pub advertised_ip: IpAddr,
    /// Ports relay sockets are taken from.
    pub relay_ports: RangeInclusive<u16>,
    /// Lifetime of an allocation that asks for less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC 8656 recommends 3600 s).
    pub max_lifetime: Duration,
    /// How long a NONCE stays valid; after that requests get 438.
    pub nonce_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Allocations on this relay at once (508 beyond).
    pub max_allocations: usize,
    /// Allocations of one identity at once (486 beyond).
    pub max_allocations_per_user: usize,
    /// Permissions (and channels) of one allocation (508 beyond).
    pub max_permissions_per_allocation: usize,
    /// Bytes per second one allocation may relay, both directions together;
    /// 0 is no limit.
    pub max_bytes_per_second: u64,
    /// Peers let through although a default rule denies them.
    pub allow_peers: Vec<IpNet>,
    /// Peers refused on top of the default rules; beats `allow_peers`.
    pub deny_peers: Vec<IpNet>,
    /// Exact peer addresses always reachable (the SFU's media ports).
    pub always_allowed: Vec<SocketAddr>,
    /// SO_RCVBUF / SO_SNDBUF of the UDP listener.
    pub socket_buffer_bytes: usize,
    /// How long a TCP/TLS connection may stay open (TLS handshake
    /// included) before a request on it passes authentication.
    pub unauthenticated_timeout: Duration,
    /// TCP/TLS connections not yet authenticated, in all and per source
    /// address; a newcomer beyond sheds the oldest.
    pub unauthenticated: callgate_admission::AdmissionLimits,
}

impl TurnConfig {
    /// A configuration with RFC defaults, listening on UDP and TCP at `ip`
    /// with free ports, for tests and embedding.
    pub fn new(ip: IpAddr, auth_secret: impl Into<String>) -> TurnConfig {
        TurnConfig {
            realm: "callgate".into(),
            auth_secret: auth_secret.into(),
            udp: Some(SocketAddr::new(ip, 0)),
            tcp: Some(SocketAddr::new(ip, 0)),
            tls: None,
            relay_ip: ip,
            advertised_ip: ip,
            relay_ports: 49152..=65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_allocations: 10_000,
            max_allocations_per_user: 32,
            max_permissions_per_allocation: 64,
            max_bytes_per_second: 0,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            always_allowed: Vec::new(),
            socket_buffer_bytes: 4 << 20,
            unauthenticated_timeout: Duration::from_secs(10),
            unauthenticated: callgate_admission::AdmissionLimits {
                max_total: 1024,
                max_per_source: 256,
            },
        }
    }

    fn check(&self) -> Result<(), TurnError> {
        let bad = |m: &str| Err(TurnError::Config(m.to_owned()));
        if self.udp.is_none() && self.tcp.is_none() && self.tls.is_none() {
            return bad("no listener enabled");
        }
        if self.relay_ports.is_empty() || *self.relay_ports.start() == 0 {
            return bad("the relay port range is empty or starts at 0");
        }
        if self.default_lifetime.is_zero() || self.max_lifetime < self.default_lifetime {
            return bad("lifetimes must be positive, with max_lifetime >= default_lifetime");
        }
        if self.auth_secret.is_empty() {
            return bad("auth_secret is empty");
        }
        Ok(())
    }
}

/// Where a started relay listens (the bound addresses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// A running relay. Dropping it stops it.
pub struct TurnServer {
    addrs: TurnAddrs,
    control: relay::ControlTx,
    thread: Option<std::thread::JoinHandle<()>>,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
}

impl TurnServer {
    /// Binds every enabled listener and starts the relay thread; TCP and
    /// TLS acceptors are spawned on the current tokio runtime.
    pub fn start(config: TurnConfig, metrics: TurnMetrics) -> Result<TurnServer, TurnError> {
        config.check()?;
        let config = Arc::new(config);
        let udp = match config.udp {
            Some(addr) => Some(relay::bind_listener(addr, config.socket_buffer_bytes)?),
            None => None,
        };
        let tcp = match config.tcp {
            Some(addr) => Some(stream::bind(addr, "tcp")?),
            None => None,
        };
        let tls = match &config.tls {
            Some((addr, identity)) => Some((stream::bind(*addr, "tls")?, identity.acceptor()?)),
            None => None,
        };
        let addrs = TurnAddrs {
            udp: udp.as_ref().map(|s| s.local_addr()).transpose()?,
            tcp: tcp.as_ref().map(|s| s.local_addr()).transpose()?,
            tls: tls.as_ref().map(|(s, _)| s.local_addr()).transpose()?,
        };
        let (control, thread) = relay::spawn(config.clone(), udp, metrics.clone())?;
        let mut acceptors = Vec::new();
        let limits = stream::Limits::new(&config, &metrics);
        if let Some(listener) = tcp {
            acceptors.push(tokio::spawn(stream::accept_loop(
                listener,
                None,
                control.clone(),
                metrics.clone(),
                limits.clone(),
            )));
        }
        if let Some((listener, acceptor)) = tls {
            acceptors.push(tokio::spawn(stream::accept_loop(
                listener,
                Some(acceptor),
                control.clone(),
                metrics.clone(),
                limits.clone(),
            )));
        }
        info!(udp = ?addrs.udp, tcp = ?addrs.tcp, tls = ?addrs.tls, relay_ip = %config.relay_ip,
            ports = ?config.relay_ports, "TURN relay listening");
        Ok(TurnServer {
            addrs,
            control,
            thread: Some(thread),
            acceptors,
        })
    }

    pub fn addrs(&self) -> TurnAddrs {
        self.addrs
    }

    /// Stops accepting, frees every allocation and waits for the relay
    /// thread. Blocks briefly: call it from a blocking context.
    pub fn shutdown(&mut self) {
        for a in self.acceptors.drain(..) {
            a.abort();
        }
        self.control.send(relay::Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
