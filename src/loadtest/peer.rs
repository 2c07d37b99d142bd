//! The simulated participants' peer connections of the async `webrtc`
//! crate (the client crate's, as a real client has them), with received
//! packets handed to the recorder.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{Notify, mpsc};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use callgate_client::{ClientMessage, PeerObserver, PeerOptions, RemoteTrack, TransportRole};

use super::error::LoadTestError;
use super::media::MediaKind;
use super::payload::Mark;
use super::stats::Recorder;

/// The run's clock: microseconds since its epoch, shared by senders and
/// receivers (one process, so one clock).
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What a participant's peer connections report to: its arrivals go to
/// the recorder, a failed transport to the run's failures.
struct Observer {
    participant: usize,
    recorder: Arc<Mutex<Recorder>>,
    clock: Clock,
    failures: Arc<Mutex<Vec<String>>>,
    arrivals: Arc<Notify>,
}

impl PeerObserver for Observer {
    fn on_rtp(&self, track: &RemoteTrack, packet: &rtp::Packet) {
        let kind = match track.kind {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        if let Some(mark) = Mark::find(kind, &packet.payload) {
            let now = self.clock.now_us();
            let first = self
                .recorder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .received(self.participant, &mark, packet.payload.len(), now);
            if first {
                self.arrivals.notify_waiters();
            }
        }
    }

    fn on_connection_state(&self, role: TransportRole, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Failed {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "participant {} {} transport failed",
                    self.participant,
                    role.as_str()
                ));
        }
    }
}

/// What a peer connection reports to.
#[derive(Clone)]
pub struct PeerContext {
    pub participant: usize,
    pub signal: mpsc::UnboundedSender<ClientMessage>,
    pub recorder: Arc<Mutex<Recorder>>,
    pub clock: Clock,
    pub failures: Arc<Mutex<Vec<String>>>,
    /// Told when a track delivers its first packet to a participant.
    pub arrivals: Arc<Notify>,
}

/// A peer connection of the async `webrtc` crate on one loopback UDP
/// socket, built as the client crate builds every participant's.
pub async fn new_peer(
    ctx: &PeerContext,
    target: TransportRole,
) -> Result<Arc<dyn PeerConnection>, LoadTestError> {
    let observer = Arc::new(Observer {
        participant: ctx.participant,
        recorder: ctx.recorder.clone(),
        clock: ctx.clock,
        failures: ctx.failures.clone(),
        arrivals: ctx.arrivals.clone(),
    });
    callgate_client::new_peer(
        target,
        &PeerOptions::default(),
        ctx.signal.clone(),
        observer,
    )
    .await
    .map_err(LoadTestError::webrtc)
}
