//! One simulated participant: its signaling WebSocket (docs/protocol.md),
//! its publisher and subscriber transports, and its synthetic sources.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use callgate_client::{
    ClientMessage, ParticipantEvent, Receiver, ServerMessage, Signaling, TransportRole,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::error::LoadTestError;
use super::media::{self, Frame, MediaKind, VideoSource};
use super::peer::{PeerContext, new_peer};
use super::rtc_peer::RtcPeer;
use super::scenario::ParticipantPlan;

/// How the synthetic video looks.
#[derive(Debug, Clone, Copy)]
pub struct VideoShape {
    pub kbps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
}

/// Which WebRTC engine the simulated participants run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// webrtc-rs's sans-I/O `rtc` peer connections, one light task each.
    Rtc,
    /// The async `webrtc` crate (the client the end-to-end tests use).
    Webrtc,
}

/// One transport of a participant, in either engine.
enum Pc {
    Webrtc(Arc<dyn PeerConnection>),
    Rtc(RtcPeer),
}

impl Pc {
    async fn new(
        kind: ClientKind,
        ctx: &PeerContext,
        target: TransportRole,
        video: VideoShape,
        stop: &watch::Receiver<bool>,
    ) -> Result<Arc<Pc>, LoadTestError> {
        Ok(Arc::new(match kind {
            ClientKind::Webrtc => Pc::Webrtc(new_peer(ctx, target).await?),
            ClientKind::Rtc => Pc::Rtc(RtcPeer::new(ctx, target, video, stop.clone()).await?),
        }))
    }

    /// Applies a subscribe offer; returns the answer.
    async fn apply_offer(&self, sdp: String) -> Result<String, String> {
        match self {
            Pc::Rtc(p) => p.apply_offer(sdp).await,
            Pc::Webrtc(pc) => async {
                let offer = RTCSessionDescription::offer(sdp)?;
                pc.set_remote_description(offer).await?;
                let answer = pc.create_answer(None).await?;
                pc.set_local_description(answer.clone()).await?;
                Ok::<_, webrtc::error::Error>(answer.sdp)
            }
            .await
            .map_err(|e| e.to_string()),
        }
    }

    async fn close(&self) {
        match self {
            Pc::Rtc(p) => p.close(),
            Pc::Webrtc(pc) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
            }
        }
    }
}

/// Bound on each signaling step (join, publish answer).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A joined participant; `leave` ends it.
pub struct Participant {
    signal: mpsc::UnboundedSender<ClientMessage>,
    publisher: Option<Arc<Pc>>,
    subscriber: Option<Arc<Pc>>,
    tasks: Vec<JoinHandle<()>>,
}

fn signaling_error(url: &str, message: impl std::fmt::Display) -> LoadTestError {
    LoadTestError::Signaling {
        url: url.to_owned(),
        message: message.to_string(),
    }
}

pub(crate) fn codec(kind: MediaKind) -> (RTCRtpCodec, u8) {
    match kind {
        MediaKind::Audio => (
            RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            111,
        ),
        MediaKind::Video => (
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

/// A track to publish: the webrtc track, its SSRC and payload type.
struct Outgoing {
    id: u32,
    kind: MediaKind,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
}

fn outgoing(id: u32, kind: MediaKind) -> Outgoing {
    let ssrc = rand::random::<u32>();
    let (codec, payload_type) = codec(kind);
    let rtc_kind = match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    };
    let name = format!("{}-{id}", kind.as_str());
    let track = TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "loadtest".into(),
        name.clone(),
        name,
        rtc_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    ));
    Outgoing {
        id,
        kind,
        track: Arc::new(track),
        ssrc,
        payload_type,
    }
}

impl Participant {
    /// Connects, joins with `token`, negotiates the transports the plan
    /// needs and starts publishing. The join clock starts here.
    pub async fn join(
        url: &str,
        token: &str,
        plan: &ParticipantPlan,
        ctx: PeerContext,
        client: ClientKind,
        video: VideoShape,
        stop: watch::Receiver<bool>,
    ) -> Result<Participant, LoadTestError> {
        let started = ctx.clock.now_us();
        ctx.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join_started(plan.index, started);
        let (signaling, _welcome) = tokio::time::timeout(STEP_TIMEOUT, Signaling::join(url, token))
            .await
            .map_err(|_| signaling_error(url, "no `joined` in time"))?
            .map_err(|e| signaling_error(url, e))?;
        let (mut sink, stream) = signaling.split();

        let mut tasks = Vec::new();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let span = info_span!("participant", index = plan.index);
        tasks.push(tokio::spawn(
            async move {
                while let Some(message) = out_rx.recv().await {
                    if sink.send(&message).await.is_err() {
                        return;
                    }
                }
                let _ = sink.close(1000, "left").await;
            }
            .instrument(span.clone()),
        ));
        let ctx = PeerContext {
            signal: out_tx.clone(),
            ..ctx
        };
        let publisher = if plan.tracks.is_empty() {
            None
        } else {
            Some(Pc::new(client, &ctx, TransportRole::Publisher, video, &stop).await?)
        };
        let subscriber = if plan.subscribe {
            Some(Pc::new(client, &ctx, TransportRole::Subscriber, video, &stop).await?)
        } else {
            None
        };
        let (answer_tx, answer_rx) = oneshot::channel();
        tasks.push(tokio::spawn(
            drive_signaling(
                stream,
                out_tx.clone(),
                subscriber.clone(),
                answer_tx,
                ctx.failures.clone(),
            )
            .instrument(span.clone()),
        ));

        if let Some(pc) = &publisher {
            let offer = match &**pc {
                Pc::Rtc(p) => p
                    .publish(plan.tracks.clone())
                    .await
                    .map_err(LoadTestError::WebRtc)?,
                Pc::Webrtc(pc) => {
                    let outgoing: Vec<Outgoing> = plan
                        .tracks
                        .iter()
                        .map(|(id, kind)| outgoing(*id, *kind))
                        .collect();
                    for o in &outgoing {
                        pc.add_track(o.track.clone() as Arc<dyn TrackLocal>)
                            .await
                            .map_err(LoadTestError::webrtc)?;
                    }
                    for o in outgoing {
                        tasks.push(tokio::spawn(
                            send_media(o, ctx.clone(), video, stop.clone())
                                .instrument(span.clone()),
                        ));
                    }
                    let offer = pc.create_offer(None).await.map_err(LoadTestError::webrtc)?;
                    pc.set_local_description(offer.clone())
                        .await
                        .map_err(LoadTestError::webrtc)?;
                    offer.sdp
                }
            };
            let _ = out_tx.send(ClientMessage::PublishOffer { sdp: offer });
            let answer = tokio::time::timeout(STEP_TIMEOUT, answer_rx)
                .await
                .map_err(|_| signaling_error(url, "no publish_answer in time"))?
                .map_err(|_| signaling_error(url, "closed before publish_answer"))?;
            match &**pc {
                Pc::Rtc(p) => p
                    .apply_answer(answer)
                    .await
                    .map_err(LoadTestError::WebRtc)?,
                Pc::Webrtc(pc) => {
                    let answer =
                        RTCSessionDescription::answer(answer).map_err(LoadTestError::webrtc)?;
                    pc.set_remote_description(answer)
                        .await
                        .map_err(LoadTestError::webrtc)?;
                }
            }
        }
        Ok(Participant {
            signal: out_tx,
            publisher,
            subscriber,
            tasks,
        })
    }

    /// Moves both its transports to new sockets on `ip` (`rtc` client
    /// only: the `webrtc` crate owns its sockets), as a client that changed
    /// networks. False when it has nothing that can move.
    pub fn move_to(&self, ip: std::net::IpAddr) -> bool {
        let mut moved = false;
        for pc in [&self.publisher, &self.subscriber].into_iter().flatten() {
            if let Pc::Rtc(p) = &**pc {
                p.move_to(ip);
                moved = true;
            }
        }
        moved
    }

    /// Says `leave`, closes both transports and stops its tasks.
    pub async fn leave(self) {
        let _ = self.signal.send(ClientMessage::Leave);
        for pc in [self.publisher, self.subscriber].into_iter().flatten() {
            pc.close().await;
        }
        drop(self.signal);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Server messages: answers the subscribe offers, hands the publish answer
/// over.
async fn drive_signaling(
    mut stream: Receiver,
    out: mpsc::UnboundedSender<ClientMessage>,
    subscriber: Option<Arc<Pc>>,
    answer: oneshot::Sender<String>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let mut answer = Some(answer);
    let fail = |what: String| {
        failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what)
    };
    while let Ok(Some(message)) = stream.recv().await {
        match message {
            ServerMessage::Event(ParticipantEvent::SubscribeOffer { sdp }) => {
                let Some(pc) = &subscriber else { continue };
                match pc.apply_offer(sdp).await {
                    Ok(sdp) => {
                        let _ = out.send(ClientMessage::SubscribeAnswer { sdp });
                    }
                    Err(e) => fail(format!("subscribe offer: {e}")),
                }
            }
            ServerMessage::PublishAnswer { sdp } => {
                if let Some(tx) = answer.take() {
                    let _ = tx.send(sdp);
                }
            }
            ServerMessage::Error { code, message, .. } => {
                fail(format!("server error: {code}: {message}"))
            }
            ServerMessage::Left { .. } => break,
            other => debug!(
                message = serde_json::to_value(&other)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned)),
                "signaling message"
            ),
        }
    }
}

/// Writes one track's synthetic frames until `stop`.
async fn send_media(
    o: Outgoing,
    ctx: PeerContext,
    video: VideoShape,
    mut stop: watch::Receiver<bool>,
) {
    let mut source = VideoSource::new(video.kbps, video.fps, video.keyframe_interval);
    let interval = match o.kind {
        MediaKind::Audio => media::AUDIO_FRAME,
        MediaKind::Video => source.frame_interval(),
    };
    let mut tick = tokio::time::interval(interval);
    // A late tick is skipped, not made up in a burst: what was sent is counted.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = rand::random::<u16>();
    let mut timestamp = rand::random::<u32>();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let frame: Frame = match o.kind {
            MediaKind::Audio => media::audio_frame(),
            MediaKind::Video => source.next_frame(),
        };
        let last = frame.packet_lens.len() - 1;
        for (i, len) in frame.packet_lens.iter().enumerate() {
            let mark = {
                let now = ctx.clock.now_us();
                let mut r = ctx.recorder.lock().unwrap_or_else(|e| e.into_inner());
                r.stamp(o.id, frame.keyframe, *len, now)
            };
            let payload: Bytes = media::payload(o.kind, &mark, *len, i == 0);
            seq = seq.wrapping_add(1);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: o.kind == MediaKind::Video && i == last,
                    payload_type: o.payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc: o.ssrc,
                    ..Default::default()
                },
                payload,
            };
            if o.track.write_rtp(packet).await.is_err() {
                return;
            }
        }
        timestamp = timestamp.wrapping_add(frame.timestamp_step);
    }
}
