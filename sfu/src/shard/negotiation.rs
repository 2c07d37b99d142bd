//! SDP offers and answers on both transports, and trickled candidates.

use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverId};
use rtc::sansio::Protocol;
use tracing::warn;

use crate::engine::new_peer_connection;
use crate::sdp_check;
use crate::session::{ParticipantEvent, SfuError, TransportRole};

use super::Shard;
use crate::transport::TransportId;

impl Shard {
    /// Sends a new subscribe offer if subscriptions changed, one offer at a time.
    pub(super) fn negotiate_subscriber(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.get_mut(sid))
        else {
            return;
        };
        let Some(tid) = p.subscriber else {
            return;
        };
        if p.offer_pending {
            p.needs_offer = true;
            return;
        }
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        let offer =
            t.pc.create_offer(None)
                .and_then(|offer| {
                    t.pc.set_local_description(now, offer)?;
                    Ok(())
                })
                .map(|()| t.pc.local_description().map(|d| d.sdp));
        match offer {
            Ok(Some(sdp)) => {
                p.offer_pending = true;
                p.needs_offer = false;
                let sdp = t.ice.present(&sdp);
                self.outbox
                    .send(&p.sid, ParticipantEvent::SubscribeOffer { sdp });
            }
            Ok(None) => {
                warn!(room = %room_name, participant = %sid, "offer has no local description")
            }
            Err(e) => {
                warn!(room = %room_name, participant = %sid, error = %e, "could not create subscribe offer")
            }
        }
        self.mark_dirty(tid);
    }

    pub(crate) fn publish_offer(
        &mut self,
        now: Instant,
        room: &str,
        sid: &str,
        sdp: String,
    ) -> Result<String, SfuError> {
        let id = self.participant_transport(room, sid, TransportRole::Publisher)?;
        let sdp = sdp_check::check_remote(&sdp)?;
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        t.ice.learn_remote(&sdp);
        let sdp = match answer_offer(&mut t.pc, now, sdp) {
            Ok(answer) => answer,
            Err(e) => {
                self.undo_offer(now, id);
                return Err(e);
            }
        };
        self.forget_unbound_layers(id);
        self.replay_early(now, id);
        self.drive(now, id);
        self.close_stopped_producers(now, id);
        self.flush(now);
        Ok(sdp)
    }

    /// After a publisher's renegotiation: the simulcast layers its `rtc`
    /// no longer knows by SSRC, whose packets it would now drop, are taken
    /// past it (module `forgotten_layers`).
    fn forget_unbound_layers(&mut self, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&t.room) else {
            return;
        };
        for producer in room.producers.values().filter(|p| p.transport == id) {
            if producer.layers.is_empty() {
                continue;
            }
            let bound: Vec<u32> =
                t.pc.rtp_receiver(producer.receiver_id)
                    .map(|r| r.track().ssrcs().collect())
                    .unwrap_or_default();
            for layer in &producer.layers {
                if !bound.contains(&layer.ssrc) {
                    t.hooks.forgotten.forget(layer.ssrc);
                }
            }
        }
    }

    /// Puts a publisher transport back where it was before an offer `rtc`
    /// refused half-way, so the client's next offer is taken: a first offer
    /// leaves a fresh peer connection with the same ICE credentials (nothing
    /// was negotiated yet), a later one is rolled back (RFC 9429 §5.7).
    pub(super) fn undo_offer(&mut self, now: Instant, id: TransportId) {
        let (local_addr, tcp_addr) = (self.endpoint.udp_addr(), self.endpoint.tcp_addr());
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if t.pc.current_remote_description().is_some() {
            let rolled_back = RTCSessionDescription::rollback(None)
                .and_then(|rollback| t.pc.set_remote_description(now, rollback));
            if let Err(e) = rolled_back {
                warn!(transport = id, error = %e, "could not roll a refused offer back");
            }
            return;
        }
        let creds = t.ice.internal();
        match new_peer_connection(
            TransportRole::Publisher,
            local_addr,
            tcp_addr,
            (&creds.ufrag, &creds.pwd),
            &t.hooks,
            now,
        ) {
            Ok(pc) => {
                let _ = std::mem::replace(&mut t.pc, pc).close();
                t.early.clear();
                t.next_timeout = None;
            }
            Err(e) => warn!(transport = id, error = %e, "could not renew a transport"),
        }
    }

    /// A renegotiation that stops a track (`removeTrack` makes its m-line
    /// `inactive`, a stopped transceiver gets port 0) unpublishes it.
    pub(super) fn close_stopped_producers(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&t.room) else {
            return;
        };
        let mut stopped = Vec::new();
        for (track_id, producer_sid) in &t.producers {
            let Some(producer) = room.producers.get(producer_sid) else {
                continue;
            };
            let receiving = t
                .pc
                .rtp_transceiver(RTCRtpTransceiverId::from(producer.receiver_id))
                .is_some_and(|tr| {
                    matches!(
                        tr.current_direction(),
                        RTCRtpTransceiverDirection::Recvonly | RTCRtpTransceiverDirection::Sendrecv
                    )
                });
            if !receiving {
                stopped.push(track_id.clone());
            }
        }
        for track_id in stopped {
            self.close_producer(now, id, &track_id);
        }
    }

    pub(crate) fn subscribe_answer(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        sdp: String,
    ) -> Result<(), SfuError> {
        let id = self.participant_transport(room_name, sid, TransportRole::Subscriber)?;
        let p = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.get_mut(sid))
            .ok_or(SfuError::ParticipantNotFound)?;
        if !p.offer_pending {
            return Err(SfuError::NoPendingOffer);
        }
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        let sdp = sdp_check::check_remote(&sdp)?;
        t.ice.learn_remote(&sdp);
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        t.pc.set_remote_description(now, answer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        p.offer_pending = false;
        let again = p.needs_offer;
        // Payload types and extension ids may have changed with the new answer.
        if let Some(room) = self.rooms.get_mut(room_name) {
            for producer in room.producers.values_mut() {
                for c in producer.consumers.iter_mut().filter(|c| c.transport == id) {
                    c.leg = None;
                }
            }
        }
        if again {
            self.negotiate_subscriber(now, room_name, sid);
        }
        self.replay_early(now, id);
        self.request_keyframes_for(now, room_name, sid);
        self.drive(now, id);
        self.flush(now);
        Ok(())
    }

    pub(crate) fn add_candidate(
        &mut self,
        now: Instant,
        room: &str,
        sid: &str,
        role: TransportRole,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SfuError> {
        let id = self.participant_transport(room, sid, role)?;
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        t.pc.add_remote_candidate(candidate)
            .map_err(|e| SfuError::InvalidCandidate(e.to_string()))?;
        self.drive(now, id);
        self.flush(now);
        Ok(())
    }
}

/// Applies a client's offer and returns our answer.
fn answer_offer(pc: &mut RTCPeerConnection, now: Instant, sdp: String) -> Result<String, SfuError> {
    let invalid = |e: rtc::shared::error::Error| SfuError::InvalidSdp(e.to_string());
    let offer = RTCSessionDescription::offer(sdp).map_err(invalid)?;
    pc.set_remote_description(now, offer).map_err(invalid)?;
    let answer = pc.create_answer(None).map_err(invalid)?;
    pc.set_local_description(now, answer).map_err(invalid)?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| SfuError::Internal("answer has no local description".into()))
}
