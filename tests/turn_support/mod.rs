//! What the TURN tests share: a server with a `[turn]` section, a UDP echo
//! peer on loopback, webrtc-rs's sans-I/O TURN client driven over real UDP,
//! TCP and TLS sockets, and a raw STUN client for the error cases.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::providers::RingProvider;
use rtc::sansio::Protocol;
use rtc::shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc::stun::attributes::*;
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::turn::client::{Client, ClientConfig, Event};
use rtc::turn::proto::PROTO_UDP;
use rtc::turn::proto::reqtrans::RequestedTransport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;

use crate::common::{TestServer, WAIT};

pub const SECRET: &str = "turn-test-secret-0123456789";

/// A config file for one test; removed on drop.
pub struct ConfigFile(pub std::path::PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `[turn]` on, secret [`SECRET`], loopback peer 127.0.0.1 allowed, no
/// rate limit, plus `extra` lines of the `[turn]` section.
pub fn config_file(extra: &str) -> ConfigFile {
    let path = std::env::temp_dir().join(format!(
        "callgate-turn-test-{}-{}.toml",
        std::process::id(),
        rand::random::<u64>()
    ));
    let has = |k: &str| extra.lines().any(|l| l.trim_start().starts_with(k));
    let mut text = format!("[turn]\nenabled = true\nauth_secret = \"{SECRET}\"\n");
    if !has("allow_peer_cidrs") {
        text.push_str("allow_peer_cidrs = [\"127.0.0.1/32\"]\n");
    }
    if !has("max_bytes_per_second") {
        text.push_str("max_bytes_per_second = 0\n");
    }
    text.push_str(extra);
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    ConfigFile(path)
}

/// A server whose relay is configured by `extra` (see [`config_file`]).
pub fn start(extra: &str) -> (TestServer, ConfigFile) {
    let file = config_file(extra);
    let server = TestServer::start(&["--config", file.0.to_str().unwrap()]);
    (server, file)
}

/// REST credentials for `identity`, valid for an hour.
pub fn credentials(identity: &str) -> (String, String) {
    callgate_turn::rest_credential(
        SECRET.as_bytes(),
        identity,
        callgate_signaling::token::unix_now(),
        Duration::from_secs(3600),
    )
}

/// A UDP peer on 127.0.0.1 that sends every datagram back to its sender.
pub struct EchoPeer {
    pub addr: SocketAddr,
    pub received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoPeer {
    pub async fn start() -> EchoPeer {
        EchoPeer::start_on("127.0.0.1:0").await
    }

    /// On another loopback address, e.g. "[::1]:0".
    pub async fn start_on(addr: &str) -> EchoPeer {
        let sock = UdpSocket::bind(addr).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        EchoPeer {
            addr,
            received,
            task,
        }
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Io {
    Udp(UdpSocket),
    Stream {
        rd: ReadHalf<Box<dyn Stream>>,
        wr: WriteHalf<Box<dyn Stream>>,
        buf: Vec<u8>,
    },
}

/// Length of the first whole STUN message or (padded) ChannelData frame.
fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = if buf[0] >> 6 == 1 {
        4 + ((len + 3) & !3)
    } else {
        20 + len
    };
    (buf.len() >= total).then_some(total)
}

/// A TLS client trusting exactly `ca` (DER).
pub fn tls_connector(ca: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS client that takes any certificate: for the self-signed one
/// `--dev` makes at start-up, which no test can know beforehand.
pub fn tls_connector_for_dev() -> tokio_rustls::TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// webrtc-rs's sans-I/O TURN client over a real socket.
pub struct TurnClient {
    client: Client,
    io: Io,
    server: SocketAddr,
    local: SocketAddr,
    proto: TransportProtocol,
    pending: VecDeque<Event>,
}

impl TurnClient {
    pub async fn connect(
        transport: Transport,
        server: SocketAddr,
        username: &str,
        password: &str,
        tls_ca: Option<&[u8]>,
    ) -> TurnClient {
        let (io, local, proto) = match transport {
            Transport::Udp => {
                let local = if server.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let s = UdpSocket::bind(local).await.unwrap();
                let local = s.local_addr().unwrap();
                (Io::Udp(s), local, TransportProtocol::UDP)
            }
            Transport::Tcp | Transport::Tls => {
                let s = tokio::net::TcpStream::connect(server).await.unwrap();
                let local = s.local_addr().unwrap();
                let stream: Box<dyn Stream> = if transport == Transport::Tls {
                    let connector = match tls_ca {
                        Some(ca) => tls_connector(ca),
                        None => tls_connector_for_dev(),
                    };
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    Box::new(connector.connect(name, s).await.expect("TLS handshake"))
                } else {
                    Box::new(s)
                };
                let (rd, wr) = tokio::io::split(stream);
                (
                    Io::Stream {
                        rd,
                        wr,
                        buf: Vec::new(),
                    },
                    local,
                    TransportProtocol::TCP,
                )
            }
        };
        let client = Client::new(
            ClientConfig {
                turn_serv_addr: server.to_string(),
                local_addr: local,
                transport_protocol: proto,
                username: username.into(),
                password: password.into(),
                allocation_refresh_interval_cap: Some(Duration::from_secs(1)),
                ..Default::default()
            },
            Arc::new(RingProvider::new()),
        )
        .unwrap();
        TurnClient {
            client,
            io,
            server,
            local,
            proto,
            pending: VecDeque::new(),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.client.poll_write() {
            match &mut self.io {
                Io::Udp(s) => {
                    let _ = s.send_to(&t.message, self.server).await;
                }
                Io::Stream { wr, .. } => {
                    wr.write_all(&t.message).await.expect("write to the server");
                }
            }
        }
    }

    fn feed(&mut self, data: &[u8]) {
        let _ = self.client.handle_read(TransportMessage {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol: self.proto,
                ecn: None,
            },
            message: BytesMut::from(data),
        });
    }

    /// Runs the client until `pick` takes an event (others are kept), or
    /// `deadline`.
    async fn until<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        loop {
            self.flush().await;
            while let Some(e) = self.client.poll_event() {
                self.pending.push_back(e);
            }
            if let Some(i) = self.pending.iter().position(|e| pick(e).is_some()) {
                let e = self.pending.remove(i).unwrap();
                return pick(&e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wake = self
                .client
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(100))
                .min(deadline)
                .max(now);
            let mut datagram = [0u8; 2048];
            let got: Option<Vec<Vec<u8>>> = match &mut self.io {
                Io::Udp(s) => tokio::select! {
                    r = s.recv_from(&mut datagram) => match r {
                        Ok((n, _)) => Some(vec![datagram[..n].to_vec()]),
                        Err(_) => Some(vec![]),
                    },
                    _ = tokio::time::sleep_until(wake.into()) => None,
                },
                Io::Stream { rd, buf, .. } => tokio::select! {
                    r = rd.read_buf(buf) => {
                        match r {
                            Ok(0) | Err(_) => panic!("the server closed the TURN connection"),
                            Ok(_) => {}
                        }
                        let mut frames = Vec::new();
                        while let Some(n) = frame_len(buf) {
                            frames.push(buf.drain(..n).collect());
                        }
                        Some(frames)
                    },
                    _ = tokio::time::sleep_until(wake.into()) => None,
                },
            };
            match got {
                Some(frames) => {
                    for f in frames {
                        self.feed(&f);
                    }
                }
                None => {
                    let _ = self.client.handle_timeout(Instant::now());
                }
            }
        }
    }

    fn deadline() -> Instant {
        Instant::now() + WAIT
    }

    pub async fn allocate_result(&mut self) -> Result<SocketAddr, String> {
        self.client.allocate(Instant::now()).unwrap();
        self.until(Self::deadline(), |e| match e {
            Event::AllocateResponse(_, a) => Some(Ok(*a)),
            Event::AllocateError(_, err) => Some(Err(err.to_string())),
            Event::TransactionTimeout(_) => Some(Err("timeout".into())),
            _ => None,
        })
        .await
        .expect("an answer to Allocate")
    }

    pub async fn allocate(&mut self) -> SocketAddr {
        self.allocate_result().await.expect("allocation")
    }

    pub async fn create_permission(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Result<(), String> {
        let now = Instant::now();
        let Some(_) = self
            .client
            .relay(relay)
            .unwrap()
            .create_permission(now, peer)
            .unwrap()
        else {
            return Ok(());
        };
        self.until(Self::deadline(), |e| match e {
            Event::CreatePermissionResponse(_, p) if *p == peer => Some(Ok(())),
            Event::CreatePermissionError(_, err) => Some(Err(err.to_string())),
            _ => None,
        })
        .await
        .expect("an answer to CreatePermission")
    }

    pub fn send_to(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        self.client
            .relay(relay)
            .unwrap()
            .send_to(Instant::now(), data, peer)
            .expect("send through the relay");
    }

    /// The next data from a peer: (came as ChannelData, peer, bytes).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<(bool, SocketAddr, Vec<u8>)> {
        self.until(Instant::now() + wait, |e| match e {
            Event::DataIndicationOrChannelData(ch, from, data) => {
                Some((ch.is_some(), *from, data.to_vec()))
            }
            _ => None,
        })
        .await
    }

    /// Lets the client run (refreshes, retransmissions) for `d`.
    pub async fn run_for(&mut self, d: Duration) {
        let _: Option<()> = self.until(Instant::now() + d, |_| None).await;
    }

    /// Refresh with LIFETIME 0.
    pub async fn close_allocation(&mut self, relay: SocketAddr) {
        self.client
            .relay(relay)
            .unwrap()
            .close(Instant::now())
            .unwrap();
        self.flush().await;
    }
}

/// A payload that names its index: `T`, index, then a pattern.
pub fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![b'T'];
    v.extend_from_slice(&i.to_be_bytes());
    while v.len() < len {
        v.push((v.len() as u32).wrapping_mul(7).wrapping_add(i) as u8);
    }
    v
}

/// Allocates, permits the echo peer, and checks `n` payloads of `len`
/// bytes come back byte-identical, the later ones as ChannelData both ways.
pub async fn round_trip(
    c: &mut TurnClient,
    relay: SocketAddr,
    echo: &EchoPeer,
    n: u32,
    len: usize,
) {
    c.create_permission(relay, echo.addr)
        .await
        .expect("permission for the echo peer");
    let mut got = std::collections::BTreeSet::new();
    let mut channel = 0;
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    while (got.len() < n as usize || channel == 0) && Instant::now() < deadline {
        let p = payload(i, len);
        c.send_to(relay, echo.addr, &p);
        i += 1;
        while let Some((ch, from, data)) = c.recv_within(Duration::from_millis(20)).await {
            assert_eq!(from, echo.addr, "data from the echo peer");
            let index = u32::from_be_bytes(data[1..5].try_into().unwrap());
            assert_eq!(
                data,
                payload(index, len),
                "payload {index} came back altered"
            );
            got.insert(index);
            if ch {
                channel += 1;
            }
        }
    }
    assert!(
        got.len() >= n as usize,
        "{} of {n} payloads came back",
        got.len()
    );
    assert!(channel > 0, "no ChannelData came back");
}

/// A bare STUN client over UDP, for requests the TURN client will not make.
pub struct Raw {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: String,
}

pub fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

pub fn text(m: &Message, t: AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, t).ok().map(|a| a.text)
}

static CRYPTO: rtc::crypto::providers::RingCrypto = rtc::crypto::providers::RingCrypto;

impl Raw {
    pub async fn new(server: SocketAddr, username: &str, password: &str) -> Raw {
        Raw {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    /// Sends `bytes` until a response with transaction `id` comes back.
    pub async fn exchange(&self, bytes: &[u8], id: TransactionId) -> Message {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65536];
        loop {
            assert!(
                Instant::now() < deadline,
                "no response from the TURN server"
            );
            self.sock.send_to(bytes, self.server).await.unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while let Ok(r) =
                tokio::time::timeout_at(until.into(), self.sock.recv_from(&mut buf)).await
            {
                let (n, _) = r.unwrap();
                let mut m = Message::new();
                if m.unmarshal_binary(&buf[..n]).is_ok() && m.transaction_id == id {
                    return m;
                }
            }
        }
    }

    /// Builds a request; signed with the long-term key when a nonce is known.
    pub fn build(&self, method: Method, attrs: Vec<Box<dyn Setter>>, sign: bool) -> Message {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        setters.extend(attrs);
        if sign {
            setters.push(Box::new(TextAttribute::new(
                ATTR_USERNAME,
                self.username.clone(),
            )));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            if !self.nonce.is_empty() {
                setters.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
            }
            setters.push(Box::new(
                MessageIntegrity::new_long_term_integrity_with_provider(
                    self.username.clone(),
                    self.realm.clone(),
                    self.password.clone(),
                    &CRYPTO,
                )
                .unwrap(),
            ));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m
    }

    pub async fn send(&self, m: &Message) -> Message {
        self.exchange(&m.raw, m.transaction_id).await
    }

    /// Gets a realm and nonce from a 401 to an unsigned Allocate.
    pub async fn challenge(&mut self) -> Message {
        let m = self.build(METHOD_ALLOCATE, vec![requested_udp()], false);
        let r = self.send(&m).await;
        assert_eq!(error_code(&r), Some(401), "unsigned Allocate: {r}");
        self.realm = text(&r, ATTR_REALM).expect("401 has REALM");
        self.nonce = text(&r, ATTR_NONCE).expect("401 has NONCE");
        r
    }

    /// A signed request (after a challenge when no nonce is known).
    pub async fn request(&mut self, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        if self.nonce.is_empty() {
            self.challenge().await;
        }
        let m = self.build(method, attrs, true);
        self.send(&m).await
    }

    pub async fn allocate(&mut self) -> Message {
        self.request(METHOD_ALLOCATE, vec![requested_udp()]).await
    }
}

pub fn requested_udp() -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: PROTO_UDP,
    })
}

pub fn peer(addr: SocketAddr) -> Box<dyn Setter> {
    Box::new(rtc::turn::proto::peeraddr::PeerAddress {
        ip: addr.ip(),
        port: addr.port(),
    })
}

pub fn relayed(m: &Message) -> SocketAddr {
    let mut r = rtc::turn::proto::relayaddr::RelayedAddress::default();
    r.get_from(m).expect("XOR-RELAYED-ADDRESS");
    SocketAddr::new(r.ip, r.port)
}

/// Polls /metrics until `metric` (summed over series matching `labels`)
/// satisfies `ok`, for at most the wait. Returns the last value.
pub async fn wait_metric(
    server: &TestServer,
    metric: &str,
    labels: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = crate::common::metric(&crate::common::metrics_text(server).await, metric, labels);
        if ok(v) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
