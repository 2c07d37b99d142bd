//! The control plane: enough of callgate's signaling protocol
//! (docs/protocol.md: join, publish_offer/answer, subscribe_offer/answer,
//! leave) for `callgate loadtest` to join, with `rtc` peer connections used
//! only to write and read SDP (ICE-lite, our certificate, our ufrags). The
//! media thread does ICE, DTLS and SRTP itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use callgate_sfu::{LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo};
use callgate_signaling::protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage, Welcome};
use callgate_signaling::token::{KeyRing, unix_now};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;

use crate::media::{Command, Counters};

pub struct Relay {
    pub keys: KeyRing,
    pub media_addr: SocketAddr,
    pub certificate: RTCCertificate,
    pub media: Mutex<std::sync::mpsc::Sender<Command>>,
    pub counters: Arc<Counters>,
    pub rooms: Mutex<HashMap<String, Room>>,
}

#[derive(Default)]
pub struct Room {
    participants: HashMap<String, Participant>,
    tracks: Vec<Track>,
}

#[derive(Clone)]
struct Track {
    sid: String,
    owner: String,
    kind: RtpCodecKind,
    publisher_ufrag: String,
    ssrc: u32,
}

struct Participant {
    out: mpsc::UnboundedSender<ServerMessage>,
    can_subscribe: bool,
    publisher: Option<(RTCPeerConnection, String)>,
    subscriber: Option<Subscriber>,
}

struct Subscriber {
    pc: RTCPeerConnection,
    ufrag: String,
    offer_pending: bool,
    needs_offer: bool,
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

fn codec(kind: RtpCodecKind) -> (RTCRtpCodec, u8) {
    match kind {
        RtpCodecKind::Audio => (
            RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            111,
        ),
        _ => (
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            96,
        ),
    }
}

impl Relay {
    fn send(&self, c: Command) {
        let _ = self.media.lock().unwrap_or_else(|e| e.into_inner()).send(c);
    }

    /// An SDP-only peer connection with fresh ICE credentials, registered
    /// with the media thread.
    fn new_pc(&self) -> Result<(RTCPeerConnection, String), String> {
        let ufrag = random_id("r");
        let pwd = random_id("pwd") + &random_id("");
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_default_codecs()
            .map_err(|e| e.to_string())?;
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd.clone())
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(vec![self.certificate.clone()])
                    .build(),
            )
            .with_setting_engine(settings)
            .with_media_engine(media_engine)
            .build(Instant::now())
            .map_err(|e| e.to_string())?;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.media_addr.ip().to_string(),
                port: self.media_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| e.to_string())?;
        pc.add_local_candidate(
            RTCIceCandidate::from(&candidate)
                .to_json()
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        self.send(Command::AddTransport {
            ufrag: ufrag.clone(),
            pwd,
        });
        Ok((pc, ufrag))
    }

    fn metrics(&self) -> String {
        let c = &self.counters;
        let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "callgate_packets_total{{direction=\"in\",worker=\"relay\"}} {}\n\
             callgate_packets_total{{direction=\"out\",worker=\"relay\"}} {}\n\
             callgate_bytes_total{{direction=\"in\",worker=\"relay\"}} {}\n\
             callgate_bytes_total{{direction=\"out\",worker=\"relay\"}} {}\n\
             relay_stun_requests_total {}\n\
             relay_dtls_handshakes_total {}\n\
             relay_srtp_failures_total {}\n\
             relay_unroutable_packets_total {}\n",
            v(&c.packets_in),
            v(&c.packets_out),
            v(&c.bytes_in),
            v(&c.bytes_out),
            v(&c.stun_requests),
            v(&c.handshakes),
            v(&c.srtp_failures),
            v(&c.unroutable),
        )
    }
}

pub fn router(relay: Arc<Relay>) -> axum::Router {
    axum::Router::new()
        .route("/rtc", get(ws))
        .route(
            "/metrics",
            get(|State(r): State<Arc<Relay>>| async move { r.metrics() }),
        )
        .with_state(relay)
}

async fn ws(ws: WebSocketUpgrade, State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    ws.on_upgrade(move |socket| session(socket, relay))
}

/// The (SSRC, kind) of every sending m-line of an offer.
fn offered_tracks(sdp: &str) -> Vec<(u32, RtpCodecKind)> {
    let mut tracks = Vec::new();
    let mut kind = None;
    let mut found = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = Some(if m.starts_with("audio") {
                RtpCodecKind::Audio
            } else {
                RtpCodecKind::Video
            });
            found = false;
        } else if let Some(rest) = line.strip_prefix("a=ssrc:")
            && !found
            && let (Some(k), Some(ssrc)) = (kind, rest.split_whitespace().next())
            && let Ok(ssrc) = ssrc.parse()
        {
            tracks.push((ssrc, k));
            found = true;
        }
    }
    tracks
}

async fn session(mut socket: WebSocket, relay: Arc<Relay>) {
    // join
    let Some(Ok(Message::Text(first))) = socket.recv().await else {
        return;
    };
    let Ok(ClientMessage::Join { token, .. }) = ClientMessage::parse(&first) else {
        return;
    };
    let Ok(claims) = relay.keys.verify(&token, unix_now()) else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    let Some(room_name) = claims.grants.room.clone() else {
        return;
    };
    let sid = random_id("PA_");
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ServerMessage>();
    {
        let mut rooms = relay.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(room_name.clone()).or_default();
        room.participants.insert(
            sid.clone(),
            Participant {
                out: out_tx.clone(),
                can_subscribe: claims.grants.can_subscribe,
                publisher: None,
                subscriber: None,
            },
        );
        let _ = out_tx.send(ServerMessage::Joined(Welcome {
            protocol: PROTOCOL_VERSION,
            room: RoomInfo {
                name: room_name.clone(),
                sid: "RM_relay".into(),
                max_participants: 100_000,
                num_participants: room.participants.len(),
                num_tracks: room.tracks.len(),
                empty_timeout_s: 0,
                metadata: String::new(),
            },
            participant: ParticipantInfo {
                sid: sid.clone(),
                identity: claims.sub.clone(),
                name: claims.sub.clone(),
                can_publish: claims.grants.can_publish,
                can_subscribe: claims.grants.can_subscribe,
                can_publish_data: false,
                tracks: Vec::new(),
                metadata: String::new(),
                attributes: Default::default(),
            },
            participants: Vec::new(),
            ice_servers: Vec::new(),
            // No resume here.
            resume_secret: String::new(),
            reconnect_grace_s: 0,
        }));
        let tracks = room.tracks.clone();
        for t in &tracks {
            subscribe(&relay, room, &sid, t);
        }
    }
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(message) => if socket.send(Message::Text(message.to_json().into())).await.is_err() { break },
                None => break,
            },
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                match ClientMessage::parse(&text) {
                    Ok(ClientMessage::PublishOffer { sdp }) => publish(&relay, &room_name, &sid, &sdp),
                    Ok(ClientMessage::SubscribeAnswer { sdp }) => subscribe_answer(&relay, &room_name, &sid, &sdp),
                    Ok(ClientMessage::Leave) => {
                        let left = ServerMessage::Left { reason: LeaveReason::Left };
                        let _ = socket.send(Message::Text(left.to_json().into())).await;
                        break;
                    }
                    // ICE-lite: the client's checks arrive peer-reflexive.
                    _ => {}
                }
            }
        }
    }
    leave(&relay, &room_name, &sid);
}

fn publish(relay: &Relay, room_name: &str, sid: &str, sdp: &str) {
    let mut rooms = relay.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let Some(room) = rooms.get_mut(room_name) else {
        return;
    };
    let Some(p) = room.participants.get_mut(sid) else {
        return;
    };
    if p.publisher.is_none() {
        match relay.new_pc() {
            Ok(pc) => p.publisher = Some(pc),
            Err(e) => {
                let _ = p.out.send(ServerMessage::error("internal", e));
                return;
            }
        }
    }
    let Some((pc, ufrag)) = p.publisher.as_mut() else {
        return;
    };
    let now = Instant::now();
    let answer = RTCSessionDescription::offer(sdp.to_owned())
        .and_then(|offer| pc.set_remote_description(now, offer))
        .and_then(|()| pc.create_answer(None))
        .and_then(|answer| pc.set_local_description(now, answer))
        .map(|()| pc.local_description().map(|d| d.sdp).unwrap_or_default());
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = p
                .out
                .send(ServerMessage::error("invalid_sdp", e.to_string()));
            return;
        }
    };
    let ufrag = ufrag.clone();
    let _ = p.out.send(ServerMessage::PublishAnswer { sdp: answer });
    let known: Vec<u32> = room
        .tracks
        .iter()
        .filter(|t| t.owner == sid)
        .map(|t| t.ssrc)
        .collect();
    for (ssrc, kind) in offered_tracks(sdp) {
        if known.contains(&ssrc) {
            continue;
        }
        let track = Track {
            sid: random_id("TR_"),
            owner: sid.to_owned(),
            kind,
            publisher_ufrag: ufrag.clone(),
            ssrc,
        };
        room.tracks.push(track.clone());
        let others: Vec<String> = room
            .participants
            .keys()
            .filter(|s| *s != sid)
            .cloned()
            .collect();
        for other in others {
            subscribe(relay, room, &other, &track);
        }
    }
}

/// Adds `track` to `subscriber_sid`'s subscriber transport and offers it.
fn subscribe(relay: &Relay, room: &mut Room, subscriber_sid: &str, track: &Track) {
    let Some(p) = room.participants.get_mut(subscriber_sid) else {
        return;
    };
    if !p.can_subscribe || track.owner == subscriber_sid {
        return;
    }
    if p.subscriber.is_none() {
        let Ok((pc, ufrag)) = relay.new_pc() else {
            return;
        };
        p.subscriber = Some(Subscriber {
            pc,
            ufrag,
            offer_pending: false,
            needs_offer: false,
        });
    }
    let Some(s) = p.subscriber.as_mut() else {
        return;
    };
    let out_ssrc = rand::random::<u32>();
    let (codec, payload_type) = codec(track.kind);
    let media = MediaStreamTrack::new(
        track.owner.clone(),
        track.sid.clone(),
        track.sid.clone(),
        track.kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(out_ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    if s.pc.add_track(media).is_err() {
        return;
    }
    relay.send(Command::AddConsumer {
        publisher: track.publisher_ufrag.clone(),
        ssrc: track.ssrc,
        subscriber: s.ufrag.clone(),
        out_ssrc,
        out_payload_type: payload_type,
    });
    offer(s, &p.out);
}

fn offer(s: &mut Subscriber, out: &mpsc::UnboundedSender<ServerMessage>) {
    if s.offer_pending {
        s.needs_offer = true;
        return;
    }
    let now = Instant::now();
    let sdp =
        s.pc.create_offer(None)
            .and_then(|o| s.pc.set_local_description(now, o))
            .map(|()| s.pc.local_description().map(|d| d.sdp));
    if let Ok(Some(sdp)) = sdp {
        s.offer_pending = true;
        s.needs_offer = false;
        let _ = out.send(ServerMessage::from(ParticipantEvent::SubscribeOffer {
            sdp,
        }));
    }
}

fn subscribe_answer(relay: &Relay, room_name: &str, sid: &str, sdp: &str) {
    let mut rooms = relay.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = rooms
        .get_mut(room_name)
        .and_then(|r| r.participants.get_mut(sid))
    else {
        return;
    };
    let Some(s) = p.subscriber.as_mut() else {
        return;
    };
    let applied = RTCSessionDescription::answer(sdp.to_owned())
        .and_then(|a| s.pc.set_remote_description(Instant::now(), a));
    // A controlling answerer may take the DTLS server role (webrtc-rs does
    // against ICE-lite): then we dial.
    if sdp.contains("a=setup:passive") {
        relay.send(Command::DtlsClient {
            ufrag: s.ufrag.clone(),
        });
    }
    if let Err(e) = applied {
        let _ = p
            .out
            .send(ServerMessage::error("invalid_sdp", e.to_string()));
    }
    s.offer_pending = false;
    if s.needs_offer {
        offer(s, &p.out);
    }
}

fn leave(relay: &Relay, room_name: &str, sid: &str) {
    let mut rooms = relay.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let Some(room) = rooms.get_mut(room_name) else {
        return;
    };
    if let Some(p) = room.participants.remove(sid) {
        for ufrag in [p.publisher.map(|x| x.1), p.subscriber.map(|s| s.ufrag)]
            .into_iter()
            .flatten()
        {
            relay.send(Command::RemoveTransport { ufrag });
        }
    }
    // The relay does not renegotiate: others keep an idle m-line.
    room.tracks.retain(|t| t.owner != sid);
    if room.participants.is_empty() {
        rooms.remove(room_name);
    }
}
