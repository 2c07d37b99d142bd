//! Changing a participant while it is in the room: its grants (publish,
//! subscribe), name, metadata and attributes. A participant that may no
//! longer publish loses its tracks and its publisher transport at once; one
//! that may publish again gets a new publisher transport for its next
//! offer. Everyone in the room is told (`participant_updated`).

use std::time::Instant;

use tracing::info;

use crate::session::{
    ParticipantEvent, ParticipantInfo, ParticipantUpdate, SfuError, TransportRole,
};

use super::Shard;

impl Shard {
    pub(crate) fn update_participant(
        &mut self,
        now: Instant,
        room_name: &str,
        identity: &str,
        update: ParticipantUpdate,
    ) -> Result<ParticipantInfo, SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let sid = room.by_identity(identity)?.sid.clone();
        let p = room
            .participants
            .get_mut(&sid)
            .ok_or(SfuError::ParticipantNotFound)?;
        if let Some(name) = update.name {
            p.name = name;
        }
        if let Some(metadata) = update.metadata {
            p.metadata = metadata;
        }
        if let Some(data) = update.can_publish_data {
            p.can_publish_data = data;
        }
        for (key, value) in update.attributes.unwrap_or_default() {
            if value.is_empty() {
                p.attributes.remove(&key);
            } else {
                p.attributes.insert(key, value);
            }
        }
        let publish = update.can_publish.filter(|&c| c != p.can_publish);
        let subscribe = update.can_subscribe.filter(|&c| c != p.can_subscribe);
        let media_held = p.media_held;
        match publish {
            Some(false) => self.stop_publishing(now, room_name, &sid),
            Some(true) => {
                let transport =
                    self.new_transport(now, room_name, &sid, TransportRole::Publisher, media_held)?;
                if let Some(p) = self.participant_mut(room_name, &sid) {
                    p.can_publish = true;
                    p.publisher = Some(transport);
                }
            }
            None => {}
        }
        match subscribe {
            Some(false) => self.stop_subscribing(now, room_name, &sid),
            Some(true) => {
                if let Some(p) = self.participant_mut(room_name, &sid) {
                    p.can_subscribe = true;
                }
                let producers: Vec<String> = self
                    .rooms
                    .get(room_name)
                    .map(|r| {
                        r.producers
                            .values()
                            .filter(|pr| pr.owner_sid != sid)
                            .map(|pr| pr.sid.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for producer in &producers {
                    self.subscribe(now, room_name, &sid, producer);
                }
                if !producers.is_empty() {
                    self.negotiate_subscriber(now, room_name, &sid);
                }
            }
            None => {}
        }
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let info = room
            .participants
            .get(&sid)
            .ok_or(SfuError::ParticipantNotFound)?
            .info(room);
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::ParticipantUpdated {
                participant: info.clone(),
            },
        );
        info!(room = %room_name, participant = %sid, can_publish = info.can_publish, can_subscribe = info.can_subscribe, "participant updated");
        self.flush(now);
        Ok(info)
    }

    /// Takes the right to publish away: every track it publishes is
    /// unpublished for everyone, and its publisher transport closes.
    fn stop_publishing(&mut self, now: Instant, room_name: &str, sid: &str) {
        let own = self
            .rooms
            .get(room_name)
            .map(|room| room.producers_of(sid))
            .unwrap_or_default();
        for producer in own {
            self.remove_producer(now, room_name, &producer);
        }
        let transport = self.participant_mut(room_name, sid).and_then(|p| {
            p.can_publish = false;
            p.publisher.take()
        });
        if let Some(id) = transport {
            self.close_transport(now, id);
        }
    }

    /// Takes the right to subscribe away: nothing more is forwarded to it,
    /// and its subscriber transport drops every track (a new offer).
    fn stop_subscribing(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let mut removed = false;
        for producer in room.producers.values_mut() {
            let (gone, kept): (Vec<_>, Vec<_>) = producer
                .consumers
                .drain(..)
                .partition(|c| c.subscriber_sid == sid);
            producer.consumers = kept;
            for consumer in gone {
                self.metrics.subscriptions.dec();
                if let Some(t) = self.transports.get_mut(&consumer.transport) {
                    t.consumed_by_ssrc.remove(&consumer.ssrc);
                    removed |= t.pc.remove_track(consumer.sender_id).is_ok();
                }
            }
        }
        if let Some(p) = room.participants.get_mut(sid) {
            p.can_subscribe = false;
            p.subscriptions.clear();
        }
        if removed {
            self.negotiate_subscriber(now, room_name, sid);
        }
    }
}
