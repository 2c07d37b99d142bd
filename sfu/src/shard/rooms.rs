//! Rooms and their participants as the control plane sees them: rooms
//! made ahead with their own limits and metadata, joining, leaving, mute,
//! media holds, listings.

use std::collections::HashMap;
use std::time::Instant;

use tracing::info;

use crate::ids;
use crate::session::{
    JoinRequest, LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo, RoomOptions, SfuError,
    TrackSelector, TransportRole,
};

use super::{Admission, Shard};
use crate::quality::QualityTracker;
use crate::room::{Participant, Room, RoomDefaults};
use crate::speaker::{ActiveSpeakers, SpeakerConfig};
use crate::timers::{Scheduled, Timer};

impl Shard {
    /// The node's room settings.
    pub(crate) fn room_defaults(&self) -> RoomDefaults {
        RoomDefaults {
            max_participants: self.config.max_participants,
            empty_timeout: self.config.empty_room_timeout,
        }
    }

    fn open_room(&mut self, options: RoomOptions) {
        info!(room = %options.name, "room opened");
        self.metrics.rooms.inc();
        let room = Room {
            name: options.name.clone(),
            sid: ids::room_sid(&mut self.rng),
            max_participants: options.max_participants,
            empty_timeout: options.empty_timeout,
            metadata: options.metadata,
            allow_remote_unmute: options.allow_remote_unmute,
            participants: HashMap::new(),
            producers: HashMap::new(),
            empty_since: None,
            speakers: ActiveSpeakers::new(SpeakerConfig::default()),
            speakers_scheduled: Scheduled::default(),
        };
        self.rooms.insert(options.name, room);
    }

    /// Opens a room ahead of its first join, with its own limits and
    /// metadata. It closes after its empty timeout if nobody comes.
    pub(crate) fn create_room(
        &mut self,
        now: Instant,
        options: RoomOptions,
    ) -> Result<RoomInfo, SfuError> {
        if self.rooms.contains_key(&options.name) {
            return Err(SfuError::RoomExists);
        }
        let name = options.name.clone();
        self.open_room(options);
        let defaults = self.room_defaults();
        let room = self.rooms.get_mut(&name).ok_or(SfuError::RoomNotFound)?;
        room.empty_since = Some(now);
        let timeout = room.empty_timeout(&defaults);
        let info = room.info(&defaults);
        self.timers.schedule(now + timeout, Timer::EmptyRoom(name));
        Ok(info)
    }

    /// Replaces a room's metadata and tells everyone in it (`room_updated`).
    pub(crate) fn update_room(
        &mut self,
        name: &str,
        metadata: String,
    ) -> Result<RoomInfo, SfuError> {
        let defaults = self.room_defaults();
        let room = self.rooms.get_mut(name).ok_or(SfuError::RoomNotFound)?;
        room.metadata = metadata;
        let info = room.info(&defaults);
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::RoomUpdated { room: info.clone() },
        );
        Ok(info)
    }

    pub(crate) fn join(&mut self, now: Instant, req: JoinRequest) -> Result<Admission, SfuError> {
        let defaults = self.room_defaults();
        // The same identity joining again replaces the old session, as in LiveKit.
        let duplicate = self.rooms.get(&req.room).and_then(|r| {
            r.participants
                .values()
                .find(|p| p.identity == req.identity)
                .map(|p| p.sid.clone())
        });
        // One who replaces their own session adds no load; a newcomer to a
        // worker that cannot keep up would cost everyone's media, its own too.
        if duplicate.is_none() && self.overloaded() {
            self.metrics.overload_refusals.inc();
            return Err(SfuError::WorkerOverloaded);
        }
        if let Some(old) = duplicate {
            self.remove_participant(now, &req.room, &old, LeaveReason::DuplicateIdentity);
        }
        if self
            .rooms
            .get(&req.room)
            .is_some_and(|r| r.participants.len() >= r.max_participants(&defaults))
        {
            return Err(SfuError::RoomFull(req.room));
        }
        if !self.rooms.contains_key(&req.room) {
            self.open_room(RoomOptions {
                name: req.room.clone(),
                ..RoomOptions::default()
            });
        }
        let sid = ids::participant_sid(&mut self.rng);
        let publisher = if req.can_publish {
            Some(self.new_transport(
                now,
                &req.room,
                &sid,
                TransportRole::Publisher,
                req.media_held,
            )?)
        } else {
            None
        };
        let participant = Participant {
            sid: sid.clone(),
            identity: req.identity.clone(),
            name: req.name.clone(),
            can_publish: req.can_publish,
            can_subscribe: req.can_subscribe,
            can_publish_data: req.can_publish_data,
            metadata: String::new(),
            attributes: Default::default(),
            publisher,
            subscriber: None,
            offer_pending: false,
            needs_offer: false,
            subscriptions: HashMap::new(),
            media_connected: false,
            media_held: req.media_held,
            detached: false,
            reconnecting: None,
            quality: QualityTracker::new(),
            stream_counters: HashMap::new(),
        };
        let room = self
            .rooms
            .get_mut(&req.room)
            .ok_or(SfuError::RoomNotFound)?;
        room.empty_since = None;
        let info = participant.info(room);
        let mut others: Vec<ParticipantInfo> =
            room.participants.values().map(|p| p.info(room)).collect();
        others.sort_by(|a, b| a.identity.cmp(&b.identity));
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::ParticipantJoined {
                participant: info.clone(),
            },
        );
        room.participants.insert(sid.clone(), participant);
        self.metrics.participants.inc();
        info!(room = %req.room, participant = %sid, identity = %req.identity, "participant joined");

        let room_info = room.info(&defaults);
        if req.can_subscribe {
            let producers: Vec<String> = room.producers.keys().cloned().collect();
            for producer in &producers {
                self.subscribe(now, &req.room, &sid, producer);
            }
            if !producers.is_empty() {
                self.negotiate_subscriber(now, &req.room, &sid);
            }
        }
        self.flush(now);
        Ok(Admission {
            room: room_info,
            participant: info,
            others,
        })
    }

    pub(crate) fn remove_participant(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        reason: LeaveReason,
    ) {
        let defaults = self.room_defaults();
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(participant) = room.participants.remove(sid) else {
            return;
        };
        self.metrics.participants.dec();
        info!(room = %room_name, participant = %sid, identity = %participant.identity, reason = reason.as_str(), "participant left");
        self.outbox
            .send(&participant.sid, ParticipantEvent::Ended { reason });
        // Its consumers of others' tracks go with its subscriber transport.
        for producer in room.producers.values_mut() {
            let before = producer.consumers.len();
            producer.consumers.retain(|c| c.subscriber_sid != sid);
            for _ in producer.consumers.len()..before {
                self.metrics.subscriptions.dec();
            }
        }
        let own = room.producers_of(sid);
        if room.participants.is_empty() {
            room.empty_since = Some(now);
            let timeout = room.empty_timeout(&defaults);
            self.timers
                .schedule(now + timeout, Timer::EmptyRoom(room_name.to_owned()));
        }
        for producer in own {
            self.remove_producer(now, room_name, &producer);
        }
        if let Some(room) = self.rooms.get(room_name) {
            room.broadcast(
                &mut self.outbox,
                None,
                &ParticipantEvent::ParticipantLeft {
                    participant_sid: participant.sid.clone(),
                    identity: participant.identity.clone(),
                    reason,
                },
            );
        }
        for id in [participant.publisher, participant.subscriber]
            .into_iter()
            .flatten()
        {
            self.close_transport(now, id);
        }
        self.flush(now);
    }

    pub(crate) fn mute(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<(), SfuError> {
        self.set_muted(now, room_name, sid, track_sid, muted, false)
    }

    /// A moderator mutes (or, where the room allows it, unmutes) the
    /// tracks of `identity` that `which` selects. Returns their sids.
    pub(crate) fn moderate_mute(
        &mut self,
        now: Instant,
        room_name: &str,
        identity: &str,
        which: &TrackSelector,
        muted: bool,
    ) -> Result<Vec<String>, SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        if !muted && !room.allow_remote_unmute {
            return Err(SfuError::RemoteUnmuteRefused);
        }
        let sid = room.by_identity(identity)?.sid.clone();
        let mut tracks: Vec<String> = room
            .producers
            .values()
            .filter(|p| p.owner_sid == sid)
            .filter(|p| match which {
                TrackSelector::Sid(track) => &p.sid == track,
                TrackSelector::Kind(kind) => p.kind == *kind,
            })
            .map(|p| p.sid.clone())
            .collect();
        if tracks.is_empty() {
            return Err(SfuError::TrackNotFound);
        }
        tracks.sort();
        for track in &tracks {
            self.set_muted(now, room_name, &sid, track, muted, true)?;
        }
        Ok(tracks)
    }

    fn set_muted(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        track_sid: &str,
        muted: bool,
        by_moderator: bool,
    ) -> Result<(), SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let producer = room
            .producers
            .get_mut(track_sid)
            .filter(|p| p.owner_sid == sid)
            .ok_or(SfuError::TrackNotFound)?;
        if producer.muted != muted {
            producer.muted = muted;
            room.broadcast(
                &mut self.outbox,
                None,
                &ParticipantEvent::TrackMuted {
                    participant_sid: sid.to_owned(),
                    track_sid: track_sid.to_owned(),
                    muted,
                    by_moderator,
                },
            );
            if !muted {
                // Its consumers start again at a keyframe.
                self.request_keyframe(now, room_name, track_sid);
                self.flush(now);
            }
        }
        Ok(())
    }

    /// Holds (`held`) or releases the media of participant `sid`: while
    /// held, nothing it publishes is forwarded and nothing is forwarded to
    /// it. On release, its subscriptions and its subscribers ask for
    /// keyframes, so video starts at once rather than at the next one.
    pub(crate) fn hold_media(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        held: bool,
    ) -> Result<(), SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let p = room
            .participants
            .get_mut(sid)
            .ok_or(SfuError::ParticipantNotFound)?;
        if p.media_held == held {
            return Ok(());
        }
        p.media_held = held;
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.media_held = held;
            }
        }
        if !held {
            self.request_keyframes_both_ways(now, room_name, sid);
            self.flush(now);
        }
        info!(room = %room_name, participant = %sid, held, "media hold changed");
        Ok(())
    }

    pub(crate) fn list_rooms(&self) -> Vec<RoomInfo> {
        self.rooms
            .values()
            .map(|r| r.info(&self.room_defaults()))
            .collect()
    }

    pub(crate) fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, SfuError> {
        let room = self.rooms.get(room).ok_or(SfuError::RoomNotFound)?;
        let mut list: Vec<ParticipantInfo> =
            room.participants.values().map(|p| p.info(room)).collect();
        list.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(list)
    }

    pub(crate) fn remove_identity(
        &mut self,
        now: Instant,
        room_name: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let sid = room.by_identity(identity)?.sid.clone();
        self.remove_participant(now, room_name, &sid, reason);
        Ok(())
    }

    pub(crate) fn close_room(
        &mut self,
        now: Instant,
        room_name: &str,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let sids: Vec<String> = room.participants.keys().cloned().collect();
        for sid in sids {
            self.remove_participant(now, room_name, &sid, reason);
        }
        if self.rooms.remove(room_name).is_some() {
            self.metrics.rooms.dec();
        }
        Ok(())
    }

    pub(crate) fn close_all(&mut self, now: Instant, reason: LeaveReason) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let _ = self.close_room(now, &name, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::bench_support::{ROOM, join_request, new_shard};
    use crate::session::SfuError;

    #[test]
    fn an_overloaded_worker_refuses_newcomers_but_not_a_rejoin() {
        let now = Instant::now();
        let (mut shard, _) = new_shard(Duration::from_millis(500));
        assert_eq!(shard.config.max_worker_load, 0.95);
        shard
            .join(now, join_request("alice"))
            .expect("idle worker admits");

        shard.set_load(0.96);
        assert_eq!(shard.metrics().load.get(), 0.96);
        let refused = shard.join(now, join_request("bob")).err();
        assert!(
            matches!(refused, Some(SfuError::WorkerOverloaded)),
            "{refused:?}"
        );
        assert_eq!(shard.metrics().overload_refusals.get(), 1);
        assert_eq!(shard.rooms[ROOM].participants.len(), 1, "nobody added");

        // Alice's new connection replaces her old session: no new load.
        shard
            .join(now, join_request("alice"))
            .expect("a rejoin is admitted");
        assert_eq!(shard.rooms[ROOM].participants.len(), 1);

        shard.set_load(0.95);
        shard
            .join(now, join_request("bob"))
            .expect("at the limit, admitted");
        assert_eq!(shard.rooms[ROOM].participants.len(), 2);
        assert_eq!(shard.metrics().overload_refusals.get(), 1);
    }

    #[test]
    fn a_limit_of_one_never_refuses() {
        let now = Instant::now();
        let (mut shard, _) = new_shard(Duration::from_millis(500));
        shard.config.max_worker_load = 1.0;
        shard.set_load(1.0);
        shard
            .join(now, join_request("alice"))
            .expect("the check is off");
        assert_eq!(shard.metrics().overload_refusals.get(), 0);
    }
}
