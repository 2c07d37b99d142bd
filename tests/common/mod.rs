//! What the end-to-end tests share: the real `callgate` binary started on
//! loopback, tokens, and participants built on the async `webrtc` crate.

#![allow(dead_code)]

pub mod calls;
pub mod cluster;
pub mod money;
pub mod nat;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
pub use callgate_client::Network;
use callgate_client::{
    ClientMessage, Event, Participant, ParticipantOptions, PeerOptions, ServerMessage,
};
use callgate_signaling::token::{Claims, Grants, KeyRing, unix_now};
use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCIceServer};

pub const DEV_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";
/// Bound on every wait for something the server should do.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `callgate` binary serving on free loopback ports; killed on drop.
pub struct TestServer {
    child: Child,
    pub http: SocketAddr,
    pub media: Vec<SocketAddr>,
    /// The ICE-TCP port (passive candidates).
    pub tcp: SocketAddr,
    /// Removed on drop, unless the test brought its own data directory.
    _data: Option<tempdir::TempDir>,
    /// The embedded TURN relay's listeners (on, with free ports, in --dev).
    pub turn_udp: Option<SocketAddr>,
    pub turn_tcp: Option<SocketAddr>,
    pub turn_tls: Option<SocketAddr>,
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "callgate-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestServer {
    pub fn start(extra: &[&str]) -> TestServer {
        let data = tempdir::TempDir::new();
        let mut server = TestServer::start_in(&data.0, extra);
        server._data = Some(data);
        server
    }

    /// A server with environment variables `vars` set (configuration
    /// overrides such as `CALLGATE_ROOM_RECONNECT_GRACE`).
    pub fn start_with_env(vars: &[(&str, &str)], extra: &[&str]) -> TestServer {
        let data = tempdir::TempDir::new();
        let prefix: String = vars.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let mut server = TestServer::start_with_shell(&data.0, extra, Some(&prefix));
        server._data = Some(data);
        server
    }

    /// A server on a data directory the test keeps, e.g. to restart it.
    pub fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> TestServer {
        TestServer::start_with_shell(data_dir, extra, None)
    }

    /// A server started with open-files limits (`RLIMIT_NOFILE`) `soft`
    /// and `hard`, set by the shell that starts it.
    pub fn start_with_open_files_limit(soft: u64, hard: u64, extra: &[&str]) -> TestServer {
        let data = tempdir::TempDir::new();
        let prefix = format!("ulimit -Sn {soft} && ulimit -Hn {hard} &&");
        let mut server = TestServer::start_with_shell(&data.0, extra, Some(&prefix));
        server._data = Some(data);
        server
    }

    /// Starts the binary, through `sh -c "<shell_prefix> exec …"` when given.
    fn start_with_shell(
        data_dir: &std::path::Path,
        extra: &[&str],
        shell_prefix: Option<&str>,
    ) -> TestServer {
        let mut command = match shell_prefix {
            None => Command::new(env!("CARGO_BIN_EXE_callgate")),
            Some(prefix) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{prefix} exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_callgate"));
                sh
            }
        };
        let mut child = command
            .args([
                "serve",
                "--dev",
                "--http-port",
                "0",
                "--udp-port",
                "0",
                "--tcp-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            // Free TURN ports, so that servers run side by side; variables,
            // so that `extra` flags still win.
            .env("CALLGATE_TURN_UDP_PORT", "0")
            .env("CALLGATE_TURN_TCP_PORT", "0")
            .env("CALLGATE_TURN_TLS_PORT", "0")
            .env(
                "RUST_LOG",
                std::env::var("TEST_SERVER_LOG")
                    .unwrap_or("warn,rtc=error,rtc_ice=error,rtc_dtls=error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the callgate binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            let line = lines
                .next()
                .expect("callgate printed its ready line")
                .unwrap();
            if let Some(rest) = line.strip_prefix("callgate ready ") {
                break rest.to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let mut http = None;
        let mut media = Vec::new();
        let mut tcp = None;
        let (mut turn_udp, mut turn_tcp, mut turn_tls) = (None, None, None);
        for field in ready.split_whitespace() {
            if let Some(a) = field.strip_prefix("http=") {
                http = Some(a.parse().unwrap());
            } else if let Some(list) = field.strip_prefix("media=") {
                media = list.split(',').map(|a| a.parse().unwrap()).collect();
            } else if let Some(a) = field.strip_prefix("tcp=") {
                tcp = Some(a.parse().unwrap());
            } else if let Some(a) = field.strip_prefix("turn_udp=") {
                turn_udp = Some(a.parse().unwrap());
            } else if let Some(a) = field.strip_prefix("turn_tcp=") {
                turn_tcp = Some(a.parse().unwrap());
            } else if let Some(a) = field.strip_prefix("turn_tls=") {
                turn_tls = Some(a.parse().unwrap());
            }
        }
        TestServer {
            child,
            http: http.expect("ready line names http"),
            media,
            tcp: tcp.expect("ready line names tcp"),
            _data: None,
            turn_udp,
            turn_tcp,
            turn_tls,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies mid-flight, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        unsafe_kill(self.child.id(), "TERM");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn claims(room: &str, identity: &str) -> Claims {
    let now = unix_now();
    Claims {
        iss: DEV_KEY.into(),
        sub: identity.into(),
        name: Some(identity.to_uppercase()),
        iat: now,
        nbf: Some(now),
        exp: now + 3600,
        grants: Grants {
            room: Some(room.into()),
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            admin: false,
            can_publish_data: true,
            role: None,
            room_admin: false,
        },
        billing: None,
    }
}

pub fn sign(claims: &Claims) -> String {
    KeyRing::new([(DEV_KEY, DEV_SECRET)]).sign(claims).unwrap()
}

pub fn token(room: &str, identity: &str) -> String {
    sign(&claims(room, identity))
}

pub fn admin_token() -> String {
    let mut c = claims("", "admin");
    c.grants = Grants {
        admin: true,
        can_publish_data: true,
        role: None,
        room_admin: false,
        ..Grants::default()
    };
    sign(&c)
}

pub fn unique_room() -> String {
    format!("room-{}", rand::random::<u32>())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare signaling connection, for protocol-level tests.
pub struct Signal {
    pub ws: Ws,
}

/// How a WebSocket ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Signal {
    pub async fn connect(server: &TestServer) -> Signal {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connects");
        Signal { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next JSON message, or how the socket closed.
    pub async fn recv(&mut self) -> Result<Value, Closed> {
        recv_from(&mut self.ws).await
    }

    /// Messages until one of `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|c| panic!("closed {c:?} waiting for {kind}"));
            if m["type"] == kind {
                return m;
            }
        }
    }

    pub async fn join(server: &TestServer, token: &str) -> (Signal, Value) {
        let mut s = Signal::connect(server).await;
        s.send(json!({"type": "join", "token": token, "protocol": 1}))
            .await;
        let joined = s.recv().await.expect("joined");
        assert_eq!(joined["type"], "joined", "{joined}");
        (s, joined)
    }

    /// A device of `identity` outside any room: a presence connection,
    /// greeted with `connected`.
    pub async fn device(server: &TestServer, identity: &str) -> Signal {
        let mut s = Signal::connect(server).await;
        s.send(json!({"type": "connect", "token": presence_token(identity), "protocol": 1}))
            .await;
        let connected = s.recv().await.expect("connected");
        assert_eq!(
            connected,
            json!({"type": "connected", "protocol": 1, "identity": identity})
        );
        s
    }
}

/// A token with no room grant: good for a presence connection only.
pub fn presence_token(identity: &str) -> String {
    let mut c: Claims = claims("unused", identity);
    c.grants.room = None;
    c.grants.room_join = false;
    sign(&c)
}

/// The next JSON message of a signaling stream (or the read half of one),
/// or how the socket closed.
pub async fn recv_from<S>(stream: &mut S) -> Result<Value, Closed>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a frame within the wait");
        match frame {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return Err(Closed {
                    code: f.code.into(),
                    reason: f.reason.to_string(),
                });
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return Err(Closed {
                    code: 1006,
                    reason: String::new(),
                });
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// RTP payloads a participant received, by (publisher participant sid, track sid).
#[derive(Default)]
pub struct Received {
    payloads: Mutex<HashMap<(String, String), Vec<Bytes>>>,
    /// The SSRCs the payloads of each track came on.
    ssrcs: Mutex<HashMap<(String, String), BTreeSet<u32>>>,
    /// Unix milliseconds of the first packet from each publisher (stream).
    first_at_ms: Mutex<HashMap<String, i64>>,
    changed: Notify,
}

impl Received {
    pub fn tracks(&self) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self.payloads.lock().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    pub fn payloads(&self, stream: &str, track: &str) -> Vec<Bytes> {
        self.payloads
            .lock()
            .unwrap()
            .get(&(stream.to_owned(), track.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `done` holds over the payloads, re-checking on every packet.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&HashMap<(String, String), Vec<Bytes>>) -> bool,
    ) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if done(&self.payloads.lock().unwrap()) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// The SSRCs the payloads of `track` from `stream` came on.
    pub fn ssrcs(&self, stream: &str, track: &str) -> BTreeSet<u32> {
        self.ssrcs
            .lock()
            .unwrap()
            .get(&(stream.to_owned(), track.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// When the first packet from publisher `stream` arrived (Unix ms).
    pub fn first_at_ms(&self, stream: &str) -> Option<i64> {
        self.first_at_ms.lock().unwrap().get(stream).copied()
    }

    fn push(&self, stream: String, track: String, ssrc: u32, payload: Bytes) {
        let payload = without_keyframe_header(payload);
        self.ssrcs
            .lock()
            .unwrap()
            .entry((stream.clone(), track.clone()))
            .or_default()
            .insert(ssrc);
        self.first_at_ms
            .lock()
            .unwrap()
            .entry(stream.clone())
            .or_insert_with(callgate_signaling::token::unix_now_ms);
        self.payloads
            .lock()
            .unwrap()
            .entry((stream, track))
            .or_default()
            .push(payload);
        self.changed.notify_waiters();
    }
}

pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

pub fn h264() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
            .into(),
        rtcp_feedback: vec![],
    }
}

pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// A track this client publishes and writes RTP to.
/// The codec header the test clients put before every video payload, so
/// that each packet starts a keyframe as the server reads it (a consumer
/// starts forwarding video only at a keyframe): for VP8 an RFC 7741
/// descriptor with S=1 then a frame tag with P=0, for H.264 an IDR NAL
/// header. Received payloads have it taken off again, so tests see what
/// they sent.
fn keyframe_header(mime: &str) -> &'static [u8] {
    if mime.eq_ignore_ascii_case("video/VP8") {
        &[0x10, 0x00]
    } else if mime.eq_ignore_ascii_case("video/H264") {
        &[0x65]
    } else {
        &[]
    }
}

/// A received payload without the header `keyframe_header` put on it.
fn without_keyframe_header(payload: Bytes) -> Bytes {
    for header in [&[0x10, 0x00][..], &[0x65][..]] {
        if payload.starts_with(header) && payload[header.len()..].starts_with(b"CG") {
            return payload.slice(header.len()..);
        }
    }
    payload
}

pub struct LocalTrack {
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub payload_type: u8,
    keyframe_header: &'static [u8],
    seq: u16,
    timestamp: u32,
}

impl LocalTrack {
    pub fn new(kind: RtpCodecKind, codec: RTCRtpCodec, payload_type: u8) -> LocalTrack {
        let ssrc = rand::random::<u32>();
        let id = format!("{kind}-{ssrc}");
        let keyframe_header = keyframe_header(&codec.mime_type);
        let track = TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "local-stream".into(),
            id.clone(),
            id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ));
        LocalTrack {
            track: Arc::new(track),
            ssrc,
            payload_type,
            keyframe_header,
            seq: rand::random(),
            timestamp: rand::random(),
        }
    }

    pub async fn send(&mut self, payload: Bytes) {
        let payload = if self.keyframe_header.is_empty() {
            payload
        } else {
            Bytes::from([self.keyframe_header, &payload[..]].concat())
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(3000);
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.track.write_rtp(packet).await.expect("write_rtp");
    }
}

/// The RTP header extensions that name the stream a packet belongs to
/// (RFC 8843 mid, RFC 8852 rid).
pub const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const SDES_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// A video track this client publishes as simulcast: one encoding per rid,
/// each on its own SSRC with its own sequence numbers and timestamps, all
/// on one m-line (`a=rid:<rid> send` each, `a=simulcast:send <rids>`).
///
/// The `webrtc` crate's sender writes packets as it is given them: it puts
/// no mid or rid header extension on them. The server binds an SSRC it has
/// not seen to a layer only by those two, so `send` sets both on every
/// packet, with the ids negotiated for them (`Client::publish_simulcast`
/// reads them from the server's answer).
pub struct SimulcastTrack {
    pub track: Arc<TrackLocalStaticRTP>,
    /// Lowest quality first, as the encodings are offered.
    pub rids: Vec<String>,
    /// Each rid's SSRC.
    pub ssrcs: Vec<u32>,
    pub payload_type: u8,
    seqs: Vec<u16>,
    timestamps: Vec<u32>,
    tags: Option<StreamTags>,
}

/// What a simulcast packet carries to name its stream: the m-line's mid,
/// and the extension ids negotiated for mid and rid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTags {
    pub mid: String,
    pub mid_id: u8,
    pub rid_id: u8,
}

impl SimulcastTrack {
    pub fn new(codec: RTCRtpCodec, payload_type: u8, rids: &[&str]) -> SimulcastTrack {
        let ssrcs: Vec<u32> = rids.iter().map(|_| rand::random()).collect();
        let id = format!("simulcast-{}", ssrcs[0]);
        let encodings = rids
            .iter()
            .zip(&ssrcs)
            .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            })
            .collect();
        let track = TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "local-stream".into(),
            id.clone(),
            id,
            RtpCodecKind::Video,
            encodings,
        ));
        SimulcastTrack {
            track: Arc::new(track),
            rids: rids.iter().map(|r| (*r).to_owned()).collect(),
            ssrcs,
            payload_type,
            seqs: rids.iter().map(|_| rand::random()).collect(),
            timestamps: rids.iter().map(|_| rand::random()).collect(),
            tags: None,
        }
    }

    /// The mid and extension ids packets carry; known once published.
    pub fn tags(&self) -> Option<&StreamTags> {
        self.tags.as_ref()
    }

    /// Sends `payload` as one RTP packet (a whole frame) of layer `layer`,
    /// an index into `rids`, tagged with the mid and its rid.
    pub async fn send(&mut self, layer: usize, payload: Bytes) {
        let tags = self
            .tags
            .as_ref()
            .expect("the track is published (Client::publish_simulcast)");
        self.seqs[layer] = self.seqs[layer].wrapping_add(1);
        self.timestamps[layer] = self.timestamps[layer].wrapping_add(3000);
        let mut header = rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: self.payload_type,
            sequence_number: self.seqs[layer],
            timestamp: self.timestamps[layer],
            ssrc: self.ssrcs[layer],
            ..Default::default()
        };
        header
            .set_extension(tags.mid_id, Bytes::from(tags.mid.clone()))
            .expect("the mid fits a one-byte extension");
        header
            .set_extension(tags.rid_id, Bytes::from(self.rids[layer].clone()))
            .expect("the rid fits a one-byte extension");
        self.track
            .write_rtp(rtp::Packet { header, payload })
            .await
            .expect("write_rtp");
    }
}

/// The mid of the m-line of `sdp` that names `rid` (`a=rid:<rid> …`), and
/// the ids its `a=extmap` lines give the mid and rid extensions.
pub fn stream_tags(sdp: &str, rid: &str) -> Option<StreamTags> {
    let rid_line = format!("a=rid:{rid} ");
    let section = sdp
        .split("\nm=")
        .find(|section| section.lines().any(|l| l.trim().starts_with(&rid_line)))?;
    let mut mid = None;
    let (mut mid_id, mut rid_id) = (None, None);
    for line in section.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("a=extmap:") {
            // a=extmap:<id>[/<direction>] <uri>
            let (id, uri) = value.split_once(' ')?;
            let id: u8 = id.split('/').next()?.parse().ok()?;
            match uri.trim() {
                SDES_MID_URI => mid_id = Some(id),
                SDES_RTP_STREAM_ID_URI => rid_id = Some(id),
                _ => {}
            }
        }
    }
    Some(StreamTags {
        mid: mid?,
        mid_id: mid_id?,
        rid_id: rid_id?,
    })
}

/// A participant with real publisher and subscriber transports: the
/// client crate's [`Participant`], with the server's messages as JSON for
/// the tests to assert on (what goes over the wire) and what it received
/// kept in [`Received`].
pub struct Client {
    pub sid: String,
    pub identity: String,
    pub joined: Value,
    pub publisher: Arc<dyn PeerConnection>,
    pub subscriber: Arc<dyn PeerConnection>,
    pub received: Arc<Received>,
    participant: Participant,
    /// How the WebSocket closed, once it has.
    pub closed: Option<Closed>,
    /// The NAT the client's media goes through, if any (`join_behind`).
    pub nat: Option<Arc<nat::Nat>>,
}

impl callgate_client::PeerObserver for Received {
    fn on_rtp(&self, track: &callgate_client::RemoteTrack, packet: &rtp::Packet) {
        self.push(
            track.stream_id.clone(),
            track.track_id.clone(),
            packet.header.ssrc,
            packet.payload.clone(),
        );
    }
}

/// `TEST_CLIENT_LOG=rtc_dtls=debug` (a tracing filter) shows what the test
/// clients' own `webrtc`/`rtc` stacks do; the server's log is
/// `TEST_SERVER_LOG`.
fn init_client_log() {
    if let Ok(filter) = std::env::var("TEST_CLIENT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A server message as it went over the wire.
fn as_json(message: &ServerMessage) -> Value {
    serde_json::to_value(message).expect("server messages serialize")
}

impl Client {
    pub async fn join(server: &TestServer, token: &str) -> Client {
        Client::join_with(server, token, None).await
    }

    pub async fn join_with(
        server: &TestServer,
        token: &str,
        ice_servers: Option<Vec<RTCIceServer>>,
    ) -> Client {
        Client::join_over(server, token, ice_servers, Network::Udp).await
    }

    /// A client with no UDP: both transports reach the server over ICE-TCP.
    pub async fn join_tcp(server: &TestServer, token: &str) -> Client {
        Client::join_over(server, token, None, Network::TcpOnly).await
    }

    /// A client whose media goes through `nat` (UDP only).
    pub async fn join_behind(server: &TestServer, token: &str, nat: Arc<nat::Nat>) -> Client {
        Client::start(server, token, None, Network::Udp, Some(nat), None).await
    }

    pub async fn join_over(
        server: &TestServer,
        token: &str,
        ice_servers: Option<Vec<RTCIceServer>>,
        network: Network,
    ) -> Client {
        Client::start(server, token, ice_servers, network, None, None).await
    }

    /// A client whose ICE agents send consent checks every `interval` once
    /// connected (RFC 7675 recommends 5 s), behind `nat`.
    pub async fn join_checking_every(
        server: &TestServer,
        token: &str,
        nat: Arc<nat::Nat>,
        interval: Duration,
    ) -> Client {
        Client::start(server, token, None, Network::Udp, Some(nat), Some(interval)).await
    }

    async fn start(
        server: &TestServer,
        token: &str,
        ice_servers: Option<Vec<RTCIceServer>>,
        network: Network,
        nat: Option<Arc<nat::Nat>>,
        keepalive: Option<Duration>,
    ) -> Client {
        init_client_log();
        let received = Arc::new(Received::default());
        // Through a NAT, the client must reach the server at the NAT's
        // inside address, which the NAT learns the server's address from.
        let server_sdp = nat.clone().map(|nat| {
            Arc::new(move |sdp: &str| {
                let (sdp, server) = nat::through(sdp, nat.inside_addr());
                if let Some(server) = server {
                    nat.set_server(server);
                }
                sdp
            }) as callgate_client::SdpRewrite
        });
        let options = ParticipantOptions {
            peer: PeerOptions {
                network,
                ice_servers: ice_servers.unwrap_or_default(),
                keepalive,
            },
            server_sdp,
            wait: WAIT,
        };
        let participant = Participant::join(&server.ws_url(), token, options, received.clone())
            .await
            .expect("the client joins");
        let welcome = participant.welcome();
        Client {
            sid: welcome.participant.sid.clone(),
            identity: welcome.participant.identity.clone(),
            joined: as_json(&ServerMessage::Joined(welcome.clone())),
            publisher: participant.publisher.clone(),
            subscriber: participant.subscriber.clone(),
            received,
            participant,
            closed: None,
            nat,
        }
    }

    /// Breaks the WebSocket with no close frame, as a lost network does.
    pub async fn drop_signaling(&self) {
        self.participant.drop_signaling().await;
    }

    /// Opens a new WebSocket and sends `resume` with the secret from
    /// `joined`; returns the server's first answer (`resumed`, or the
    /// `error` before a close), and drives the new socket if it resumed.
    pub async fn resume(&self, server: &TestServer) -> Value {
        let answer = self
            .participant
            .resume(&server.ws_url())
            .await
            .expect("an answer to resume");
        as_json(&answer)
    }

    /// Restarts ICE on the publisher transport: an offer with new ICE
    /// credentials, and the server's answer applied.
    pub async fn restart_publisher_ice(&self) {
        self.participant
            .restart_publisher_ice()
            .await
            .expect("the publisher restarts ICE");
    }

    /// Sends `v`, which must be a message of the protocol (ClientMessage).
    pub fn send(&self, v: Value) {
        let message: ClientMessage = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("{v} is not a client message: {e}"));
        self.participant.send(message).expect("signaling open");
    }

    /// Adds `tracks` to the publisher transport and negotiates them.
    pub async fn publish(&self, tracks: &[&LocalTrack]) {
        let tracks: Vec<Arc<dyn TrackLocal>> = tracks
            .iter()
            .map(|t| t.track.clone() as Arc<dyn TrackLocal>)
            .collect();
        self.participant.publish(&tracks).await.expect("publish");
    }

    /// Adds `track` to the publisher transport and negotiates it; from the
    /// server's answer, the mid and extension ids its packets carry.
    /// Returns the answer.
    pub async fn publish_simulcast(&self, track: &mut SimulcastTrack) -> String {
        let answer = self
            .participant
            .publish(&[track.track.clone() as Arc<dyn TrackLocal>])
            .await
            .expect("publish");
        let tags = stream_tags(&answer, &track.rids[0]).unwrap_or_else(|| {
            panic!("the answer has a simulcast m-line with mid and rid extensions: {answer}")
        });
        // The sender takes only extension ids it offered.
        let offer = self.publisher.local_description().await.unwrap().sdp;
        assert_eq!(
            stream_tags(&offer, &track.rids[0]).as_ref(),
            Some(&tags),
            "the answer keeps the offer's mid and extension ids"
        );
        track.tags = Some(tags);
        answer
    }

    /// Offers the publisher transport as it is, applies the server's answer
    /// and returns it.
    pub async fn negotiate_publisher(&self) -> String {
        self.participant
            .negotiate_publisher()
            .await
            .expect("the publisher negotiates")
    }

    /// The next server message the client did not answer itself (a close is
    /// `{"type": "_closed"}`, and sets `closed`).
    pub async fn next_event(&mut self) -> Value {
        let event = tokio::time::timeout(WAIT, self.participant.next_event())
            .await
            .expect("a server message within the wait")
            .expect("signaling open");
        self.json_of(event)
    }

    /// A server message already received, if any.
    pub fn try_event(&mut self) -> Option<Value> {
        let event = self.participant.try_next_event()?;
        Some(self.json_of(event))
    }

    fn json_of(&mut self, event: Event) -> Value {
        match event {
            Event::Message(message) => as_json(&message),
            Event::Closed { code, reason } => {
                self.closed = Some(Closed { code, reason });
                json!({"type": "_closed"})
            }
        }
    }

    /// The next event of `kind`, skipping others.
    pub async fn event(&mut self, kind: &str) -> Value {
        let wait = async {
            loop {
                let event = self.participant.next_event().await.expect("signaling open");
                let m = self.json_of(event);
                if m["type"] == kind {
                    return m;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {kind}"))
    }

    pub async fn close(&self) {
        self.participant.close().await;
    }
}

/// A payload that says which packet it is: index, then a pattern, `len` bytes long.
pub fn marked_payload(index: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"CG");
    v.extend_from_slice(&index.to_be_bytes());
    while v.len() < len {
        v.push((v.len() as u32).wrapping_mul(31).wrapping_add(index) as u8);
    }
    Bytes::from(v)
}

pub fn payload_index(p: &[u8]) -> Option<u32> {
    if p.len() >= 6 && &p[..2] == b"CG" {
        Some(u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    } else {
        None
    }
}

/// `method` `path` on the server API with an admin token and a JSON
/// `body`: the status and the JSON answer (null when it has none).
pub async fn api_send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, server.api(path))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GET `path` on the server API with an admin token; the body as text.
pub async fn api_text(server: &TestServer, path: &str) -> String {
    reqwest::Client::new()
        .get(server.api(path))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET `path` on the server API with an admin token; the body as JSON.
pub async fn api_json(server: &TestServer, path: &str) -> Value {
    serde_json::from_str(&api_text(server, path).await).unwrap()
}

/// The text of the server's /metrics.
pub async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(server.api("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum over the label sets of metric `name` that contain `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let series = key.strip_prefix(name)?;
            (series.is_empty() || series.starts_with('{'))
                .then_some(())
                .filter(|()| series.contains(labels))?;
            value.parse::<f64>().ok()
        })
        .sum()
}

/// A camera and a microphone: VP8 with 1000-byte payloads and Opus with
/// 120-byte ones, as `publish_and_count` takes them.
pub fn camera_and_microphone() -> [(LocalTrack, &'static str, usize); 2] {
    [
        (
            LocalTrack::new(RtpCodecKind::Video, vp8(), 96),
            "video/VP8",
            1000,
        ),
        (
            LocalTrack::new(RtpCodecKind::Audio, opus(), 111),
            "audio/opus",
            120,
        ),
    ]
}

/// Packets a counted media run sends on each track.
pub const PACKETS: u32 = 400;

/// Sends warm-up packets until every subscriber has received from every
/// track, so that the counted run starts with all paths connected.
pub async fn warm_up(tracks: &mut [&mut LocalTrack], subscribers: &[&Client], publisher_sid: &str) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let wait = async {
        loop {
            tick.tick().await;
            for t in tracks.iter_mut() {
                t.send(bytes::Bytes::from_static(b"warm-up")).await;
            }
            let all = subscribers.iter().all(|s| {
                s.received
                    .tracks()
                    .iter()
                    .filter(|(stream, _)| stream == publisher_sid)
                    .count()
                    >= tracks.len()
            });
            if all {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("every subscriber receives every track");
}

/// Every counted payload a subscriber got on `track`, checked byte for byte.
pub fn counted(client: &Client, publisher_sid: &str, track: &str, len: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for p in client.received.payloads(publisher_sid, track) {
        if let Some(i) = payload_index(&p) {
            assert_eq!(p, marked_payload(i, len), "payload {i} arrived altered");
            seen.insert(i);
        }
    }
    seen
}

pub async fn track_sids(publisher: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut sids = Vec::new();
    while sids.len() < n {
        let m = publisher.event("track_published").await;
        if m["participant_sid"] == publisher.sid.as_str() {
            sids.push((
                m["track"]["sid"].as_str().unwrap().to_owned(),
                m["track"]["codec"].as_str().unwrap().to_owned(),
            ));
        }
    }
    sids
}

/// Publishes `tracks` (with their codec and payload length) from
/// `publisher`, then checks they are forwarded (`forward_and_count`).
pub async fn publish_and_count(
    publisher: &mut Client,
    tracks: &mut [(LocalTrack, &str, usize)],
    subscribers: &[&Client],
) {
    let locals: Vec<&LocalTrack> = tracks.iter().map(|(t, _, _)| t).collect();
    publisher.publish(&locals).await;
    forward_and_count(publisher, tracks, subscribers).await;
}

/// For tracks already published: sends `PACKETS` marked payloads on each,
/// and checks that every subscriber got at least 99% of them byte-identical.
pub async fn forward_and_count(
    publisher: &mut Client,
    tracks: &mut [(LocalTrack, &str, usize)],
    subscribers: &[&Client],
) {
    {
        // The server opens a producer when the first packet of a track arrives.
        let mut locals: Vec<&mut LocalTrack> = tracks.iter_mut().map(|(t, _, _)| t).collect();
        warm_up(&mut locals, subscribers, &publisher.sid).await;
    }
    let published = track_sids(publisher, tracks.len()).await;
    let sids: Vec<String> = tracks
        .iter()
        .map(|(_, codec, _)| {
            published
                .iter()
                .find(|(_, c)| c.eq_ignore_ascii_case(codec))
                .unwrap_or_else(|| panic!("no {codec} track in {published:?}"))
                .0
                .clone()
        })
        .collect();

    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..PACKETS {
        tick.tick().await;
        for (track, _, len) in tracks.iter_mut() {
            track.send(marked_payload(i, *len)).await;
        }
    }
    let need = (PACKETS as usize * 99).div_ceil(100);
    for sub in subscribers {
        let last = PACKETS - 1;
        let from = publisher.sid.clone();
        let wanted = sids.clone();
        // The last packet, and 99% of them: a packet lost on the way and
        // NACKed comes again after the last one (a loaded machine loses
        // some even on loopback).
        sub.received
            .wait_for("the last packet and 99% of every track", move |map| {
                wanted.iter().all(|track| {
                    map.get(&(from.clone(), track.clone())).is_some_and(|ps| {
                        let indices: BTreeSet<u32> =
                            ps.iter().filter_map(|p| payload_index(p)).collect();
                        indices.contains(&last) && indices.len() >= need
                    })
                })
            })
            .await;
        for (sid, (_, codec, len)) in sids.iter().zip(tracks.iter()) {
            let got = counted(sub, &publisher.sid, sid, *len);
            assert!(
                got.len() >= need,
                "{} got {}/{PACKETS} of the {codec} track",
                sub.identity,
                got.len()
            );
        }
    }
}

/// Sends marked payloads on `track` every 20 ms until dropped; the index of
/// the last one sent is readable.
pub struct Sending {
    last: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Sending {
    pub fn start(mut track: LocalTrack) -> Sending {
        let last = Arc::new(AtomicU32::new(0));
        let sent = last.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for i in 1.. {
                tick.tick().await;
                track.send(marked_payload(i, 160)).await;
                sent.store(i, Ordering::Release);
            }
        });
        Sending { last, task }
    }

    pub fn last(&self) -> u32 {
        self.last.load(Ordering::Acquire)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `client` has a payload from `publisher_sid` numbered above `after`.
pub async fn hears_after(client: &Client, publisher_sid: &str, after: u32) {
    client
        .received
        .wait_for(
            &format!("a payload from {publisher_sid} after {after}"),
            |all| {
                all.iter().any(|((stream, _), payloads)| {
                    stream == publisher_sid
                        && payloads
                            .iter()
                            .filter_map(|p| payload_index(p))
                            .any(|i| i > after)
                })
            },
        )
        .await;
}

/// A configuration file holding `body`, removed when the guard drops.
pub fn config_file(body: &str) -> (std::path::PathBuf, impl Drop) {
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let path = std::env::temp_dir().join(format!("callgate-{}.toml", rand::random::<u64>()));
    std::fs::write(&path, body).unwrap();
    (path.clone(), Remove(path))
}
