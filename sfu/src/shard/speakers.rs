//! Active speakers: each room's detector (module `speaker`) is fed audio
//! levels as packets are forwarded; when its update falls due, the room is
//! told who speaks (`speakers_changed`) if that changed.

use std::time::Instant;

use super::Shard;
use crate::session::{ParticipantEvent, SpeakerInfo};
use crate::timers::Timer;

impl Shard {
    /// Room `room_name`'s speaker update (its timer entry `at`) is due.
    pub(super) fn update_speakers(&mut self, now: Instant, at: Instant, room_name: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        room.speakers_scheduled.fired(at);
        if let Some(list) = room.speakers.poll(now) {
            let speakers = list
                .into_iter()
                .filter_map(|s| {
                    let producer = room.producers.get(&s.producer)?;
                    Some(SpeakerInfo {
                        participant_sid: producer.owner_sid.clone(),
                        track_sid: s.producer,
                        level: s.level,
                    })
                })
                .collect();
            let event = ParticipantEvent::SpeakersChanged { speakers };
            room.broadcast(&mut self.outbox, None, &event);
        }
        if let Some(next) = room.speakers.next_timeout()
            && room.speakers_scheduled.needs(next)
        {
            self.timers
                .schedule(next, Timer::Speakers(room_name.to_owned()));
        }
    }
}
