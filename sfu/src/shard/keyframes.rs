//! Keyframe requests: relayed from subscribers (PLI, FIR) to the publisher
//! of the producer they consume, asked on our own account when a decoder
//! must have lost its reference (a new subscriber, a move, a resume),
//! throttled per producer.

use std::time::Instant;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use crate::session::{TrackKind, TransportRole};

use super::Shard;
use crate::transport::TransportId;

impl Shard {
    /// Media lost on the old path left decoders waiting for a keyframe:
    /// ask for one at once rather than at the receiver's next request
    /// (Chromium asks every ~3 s while stalled, and the one it sent before
    /// the move went to the dead path).
    pub(super) fn keyframes_after_a_move(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get(&id) else {
            return;
        };
        let (room, sid, role) = (t.room.clone(), t.participant_sid.clone(), t.role);
        match role {
            TransportRole::Publisher => {
                let own: Vec<String> = t.producers.values().cloned().collect();
                for producer in own {
                    self.request_keyframe(now, &room, &producer);
                }
            }
            TransportRole::Subscriber => self.request_keyframes_for(now, &room, &sid),
        }
    }

    pub(super) fn relay_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: TransportId,
        ssrc: u32,
    ) {
        let Some(t) = self.transports.get(&subscriber) else {
            return;
        };
        if let Some(producer) = t.consumed_by_ssrc.get(&ssrc) {
            let (room, producer) = (t.room.clone(), producer.clone());
            self.request_keyframe(now, &room, &producer);
        }
    }

    /// Asks the publisher of a video producer for a keyframe, at most once per
    /// `keyframe_request_interval`.
    pub(super) fn request_keyframe(&mut self, now: Instant, room: &str, producer_sid: &str) {
        let Some(room) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            return;
        };
        if producer.kind != TrackKind::Video {
            return;
        }
        if producer
            .last_keyframe_request
            .is_some_and(|at| now < at + self.config.keyframe_request_interval)
        {
            return;
        }
        producer.last_keyframe_request = Some(now);
        let Some(t) = self.transports.get_mut(&producer.transport) else {
            return;
        };
        // Every layer of a simulcast track: its consumers may be on any.
        let ssrcs: Vec<u32> = if producer.layers.is_empty() {
            vec![producer.media_ssrc]
        } else {
            producer.layers.iter().map(|l| l.ssrc).collect()
        };
        if let Some(mut receiver) = t.pc.rtp_receiver(producer.receiver_id) {
            for media_ssrc in ssrcs {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                    self.metrics.plis.inc();
                }
            }
        }
        let id = producer.transport;
        self.mark_dirty(id);
    }

    /// Asks for a keyframe of one simulcast layer (a consumer switches to
    /// it), at most once per `keyframe_request_interval` per layer.
    pub(super) fn request_layer_keyframe(
        &mut self,
        now: Instant,
        room: &str,
        producer_sid: &str,
        layer_ssrc: u32,
    ) {
        let Some(producer) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.producers.get_mut(producer_sid))
        else {
            return;
        };
        let Some(layer) = producer.layers.iter_mut().find(|l| l.ssrc == layer_ssrc) else {
            return;
        };
        if layer
            .last_keyframe_request
            .is_some_and(|at| now < at + self.config.keyframe_request_interval)
        {
            return;
        }
        layer.last_keyframe_request = Some(now);
        tracing::debug!(producer = producer_sid, layer = %layer.rid, "keyframe requested");
        let Some(t) = self.transports.get_mut(&producer.transport) else {
            return;
        };
        if let Some(mut receiver) = t.pc.rtp_receiver(producer.receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: layer_ssrc,
            };
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                self.metrics.plis.inc();
            }
        }
        let id = producer.transport;
        self.mark_dirty(id);
    }

    /// One keyframe each way: of every track `sid` publishes (for its
    /// subscribers) and of every track it receives.
    pub(super) fn request_keyframes_both_ways(&mut self, now: Instant, room_name: &str, sid: &str) {
        let own = self
            .rooms
            .get(room_name)
            .map(|room| room.producers_of(sid))
            .unwrap_or_default();
        for producer in own {
            self.request_keyframe(now, room_name, &producer);
        }
        self.request_keyframes_for(now, room_name, sid);
    }

    pub(super) fn request_keyframes_for(&mut self, now: Instant, room: &str, subscriber_sid: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(p) = r.participants.get(subscriber_sid) else {
            return;
        };
        let producers: Vec<String> = p.subscriptions.keys().cloned().collect();
        for sid in producers {
            self.request_keyframe(now, room, &sid);
        }
    }
}
