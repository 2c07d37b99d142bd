//! Whether participants are still there: silence makes one reconnecting,
//! traffic or a resumed signaling connection brings it back, the grace or a
//! stalled DTLS handshake ends it; ICE restarts of subscriber transports.

use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use tracing::{info, warn};

use crate::ice_creds::Credentials;
use crate::ids;
use crate::session::{
    LeaveReason, ParticipantEvent, ParticipantInfo, ReconnectReason, Resumed, SfuError,
    TransportRole,
};

use super::Shard;
use crate::room::{Participant, Reconnecting};

impl Shard {
    /// When anything last arrived on any of a participant's transports.
    pub(super) fn last_heard(&self, p: &Participant) -> Option<Instant> {
        [p.publisher, p.subscriber]
            .into_iter()
            .flatten()
            .filter_map(|id| self.transports.get(&id)?.last_heard)
            .max()
    }

    /// Declares participants reconnecting after the silence window, ends
    /// those past the grace, and those whose DTLS did not complete in time.
    pub(super) fn check_liveness(&mut self, now: Instant) {
        let (silence, grace, dtls) = (
            self.config.reconnect_after_silence,
            self.config.reconnect_grace,
            self.config.dtls_timeout,
        );
        let mut silent = Vec::new();
        let mut lost = Vec::new();
        let mut stalled = Vec::new();
        for room in self.rooms.values() {
            for p in room.participants.values() {
                let heard = self.last_heard(p);
                match p.reconnecting {
                    None if !p.detached && p.media_connected => {
                        if let Some(heard) = heard.filter(|h| *h + silence <= now) {
                            silent.push((room.name.clone(), p.sid.clone(), heard));
                        }
                    }
                    Some(r) if r.declared + grace <= now => {
                        lost.push((room.name.clone(), p.sid.clone()));
                    }
                    _ => {}
                }
                let stalled_transport = [p.publisher, p.subscriber]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.transports.get(&id))
                    .find(|t| {
                        !t.connected && t.dtls_waiting_since.is_some_and(|at| at + dtls <= now)
                    });
                if let Some(t) = stalled_transport {
                    warn!(room = %room.name, participant = %p.sid, role = ?t.role, handshake = %t.flights.describe(), "DTLS did not complete in time");
                    stalled.push((room.name.clone(), p.sid.clone()));
                }
            }
        }
        for (room, sid, heard) in silent {
            self.declare_reconnecting(
                now,
                &room,
                &sid,
                heard,
                Some(now.saturating_duration_since(heard)),
            );
        }
        for (room, sid) in lost {
            self.remove_participant(now, &room, &sid, LeaveReason::ConnectionLost);
        }
        for (room, sid) in stalled {
            self.remove_participant(now, &room, &sid, LeaveReason::DtlsTimeout);
        }
    }

    /// Marks a participant reconnecting and tells the others (and, when
    /// its media went silent while its signaling is up, the participant).
    pub(super) fn declare_reconnecting(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        stopped_at: Instant,
        silent_for: Option<std::time::Duration>,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(p) = room.participants.get_mut(sid) else {
            return;
        };
        if p.reconnecting.is_some() {
            return;
        }
        p.reconnecting = Some(Reconnecting {
            declared: now,
            stopped_at,
        });
        // Detached, traffic cannot bring it back (its signaling must come
        // first): no per-packet check until `attach`.
        let watch = !p.detached;
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.owner_reconnecting = watch;
            }
        }
        info!(room = %room_name, participant = %sid, identity = %p.identity, "participant reconnecting");
        self.metrics.reconnecting.inc();
        if let Some(silent_for) = silent_for {
            self.outbox.send(
                &p.sid,
                ParticipantEvent::Reconnecting {
                    reason: ReconnectReason::MediaSilent,
                    silent_for,
                },
            );
        }
        let event = ParticipantEvent::ParticipantReconnecting {
            participant_sid: sid.to_owned(),
            identity: p.identity.clone(),
        };
        room.broadcast(&mut self.outbox, Some(sid), &event);
    }

    /// Resumes the reconnecting participants whose transports heard traffic.
    pub(super) fn resume_heard(&mut self, now: Instant) {
        while let Some(id) = self.heard_again.pop() {
            let Some(t) = self.transports.get(&id) else {
                continue;
            };
            let (room, sid) = (t.room.clone(), t.participant_sid.clone());
            self.try_resume(now, &room, &sid);
        }
    }

    /// A reconnecting participant is back once its signaling is attached and
    /// traffic arrived after it stopped.
    pub(super) fn try_resume(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self.participant(room_name, sid) else {
            return;
        };
        let Some(r) = p.reconnecting else {
            return;
        };
        // With media, back means traffic after it stopped; a participant
        // whose media never connected is back with its signaling.
        let heard_since = self.last_heard(p).is_some_and(|h| h > r.stopped_at);
        if p.detached || (p.media_connected && !heard_since) {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(p) = room.participants.get_mut(sid) else {
            return;
        };
        p.reconnecting = None;
        self.metrics.reconnecting.dec();
        self.metrics.resumes.inc();
        info!(room = %room_name, participant = %sid, identity = %p.identity, "participant resumed");
        self.outbox.send(&p.sid, ParticipantEvent::Resumed);
        let event = ParticipantEvent::ParticipantResumed {
            participant_sid: sid.to_owned(),
            identity: p.identity.clone(),
        };
        room.broadcast(&mut self.outbox, Some(sid), &event);
        self.watch_traffic(room_name, sid, false);
        // The others' decoders lost its video, and its own lost theirs.
        self.request_keyframes_both_ways(now, room_name, sid);
    }

    /// The participant's signaling connection is gone (without `leave`):
    /// keep it for the grace, reconnecting.
    pub(crate) fn detach(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self.participant_mut(room_name, sid) else {
            return;
        };
        p.detached = true;
        self.declare_reconnecting(now, room_name, sid, now, None);
        self.watch_traffic(room_name, sid, false);
        self.flush(now);
    }

    /// Whether traffic on the participant's transports is checked against
    /// its reconnecting state (`Transport::owner_reconnecting`).
    pub(super) fn watch_traffic(&mut self, room_name: &str, sid: &str, on: bool) {
        let Some(p) = self.participant(room_name, sid) else {
            return;
        };
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.owner_reconnecting = on;
            }
        }
    }

    /// The participant's signaling is back (`resume`): the room as it is,
    /// and a subscribe offer restarting ICE on its subscriber transport.
    pub(crate) fn attach(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Result<Resumed, SfuError> {
        let defaults = self.room_defaults();
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::ParticipantNotFound)?;
        room.participants
            .get_mut(sid)
            .ok_or(SfuError::ParticipantNotFound)?
            .detached = false;
        let participant = room
            .participants
            .get(sid)
            .ok_or(SfuError::ParticipantNotFound)?
            .info(room);
        let mut others: Vec<ParticipantInfo> = room
            .participants
            .values()
            .filter(|o| o.sid != sid)
            .map(|o| o.info(room))
            .collect();
        others.sort_by(|a, b| a.identity.cmp(&b.identity));
        let resumed = Resumed {
            room: room.info(&defaults),
            participant,
            others,
        };
        self.restart_subscriber(now, room_name, sid);
        self.try_resume(now, room_name, sid);
        // Not back yet: its next traffic will be.
        let waiting = self
            .participant(room_name, sid)
            .is_some_and(|p| p.reconnecting.is_some());
        self.watch_traffic(room_name, sid, waiting);
        self.flush(now);
        Ok(resumed)
    }

    /// A subscribe offer with new ICE credentials (`ice_restart`).
    pub(crate) fn ice_restart(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Result<(), SfuError> {
        self.participant_transport(room_name, sid, TransportRole::Subscriber)?;
        self.restart_subscriber(now, room_name, sid);
        self.flush(now);
        Ok(())
    }

    /// Presents new ICE credentials on the participant's subscriber
    /// transport and offers them. An offer still unanswered (its answer was
    /// lost with the connection) is rolled back first.
    pub(super) fn restart_subscriber(&mut self, now: Instant, room_name: &str, sid: &str) {
        // Field by field: the participant and its transport are borrowed together.
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
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        if p.offer_pending {
            let rolled_back = RTCSessionDescription::rollback(None)
                .and_then(|rollback| t.pc.set_local_description(now, rollback));
            if let Err(e) = rolled_back {
                warn!(transport = tid, error = %e, "could not roll an unanswered offer back");
            }
            p.offer_pending = false;
        }
        let (ufrag, pwd) = ids::ice_credentials(self.worker, &mut self.rng);
        self.endpoint.add_ufrag(ufrag.clone(), tid);
        if let Some(retired) = t.ice.rotate(Credentials { ufrag, pwd }) {
            self.endpoint.remove_ufrag(&retired);
        }
        self.negotiate_subscriber(now, room_name, sid);
    }
}
