//! Subscribers' bandwidth: each subscriber transport's estimate (our
//! send-side one on its transport-wide feedback, or its browser's REMB
//! where it sends no such feedback) split among the
//! tracks each receives (module `allocation`), a track's consumer paused
//! when its share is nothing, and each single-stream publisher told (REMB)
//! the least any of its subscribers can take, so a weak downlink lowers the
//! publisher's bitrate instead of freezing the picture.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;

use super::Shard;
use crate::allocation::{Demand, VIDEO_MIN, allocate};
use crate::layers::{select, wanted};
use crate::session::{EstimateSource, LayerState, ParticipantEvent, TrackKind};
use crate::transport::TransportId;

/// A REMB is sent again at least this often while it applies (receivers
/// refresh theirs about once a second too).
const REMB_REFRESH: Duration = Duration::from_secs(1);
/// A new target goes out at once when it differs from the last by more
/// than this fraction.
const REMB_CHANGE: f64 = 0.1;
/// What a publisher is told when no subscriber limits it any more: far
/// above any camera's bitrate, so its own estimate governs again.
const REMB_RELEASE: u64 = 100_000_000;
/// Estimates above this are taken as this (a REMB can say up to ~2^81).
const MAX_ESTIMATE: u64 = 1_000_000_000;
/// A subscriber's REMB is ignored while transport-wide feedback has come
/// within this long (feedback comes every 50-100 ms while media flows).
const SEND_SIDE_FRESH: Duration = Duration::from_secs(2);
/// The send-side estimate is applied at most this often unless it falls:
/// each application shares out the room's bandwidth again.
const SEND_SIDE_APPLY_EVERY: Duration = Duration::from_millis(200);

impl Shard {
    /// Subscriber transport `id` sent a REMB of `bitrate` bits per second.
    /// It is the transport's estimate only while no transport-wide feedback
    /// comes: a browser that negotiated transport-cc leaves estimation to
    /// the sender (libwebrtc then sends no REMB for those streams), so a
    /// REMB beside feedback is a client's own idea we do not mix in; two
    /// estimators of one path with different dynamics, combined, would
    /// inherit the faults of whichever is lower at the time.
    pub(super) fn estimate_heard(&mut self, now: Instant, id: TransportId, bitrate: f32) {
        if !bitrate.is_finite() || bitrate < 0.0 {
            return;
        }
        let send_side_active = self.transports.get(&id).is_some_and(|t| {
            t.feedback_heard_at
                .is_some_and(|at| now < at + SEND_SIDE_FRESH)
        });
        if send_side_active {
            return;
        }
        self.apply_estimate(now, id, bitrate as u64, EstimateSource::Remb);
    }

    /// Transport-wide feedback from subscriber transport `id` reported
    /// packets we sent: its send-side estimate may have changed. Applied
    /// (a reallocation of the room) when it fell by more than a tenth, at
    /// once, otherwise at most every `SEND_SIDE_APPLY_EVERY`.
    pub(super) fn send_side_feedback_heard(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        t.feedback_heard_at = Some(now);
        let Some(bps) = t.send_side.as_ref().map(|bwe| bwe.bps()) else {
            return;
        };
        let due = match t.send_side_applied {
            None => true,
            Some((last, at)) => {
                (bps < last - last / 10 || now >= at + SEND_SIDE_APPLY_EVERY) && bps != last
            }
        };
        if due {
            t.send_side_applied = Some((bps, now));
            self.apply_estimate(now, id, bps, EstimateSource::SendSide);
        }
    }

    fn apply_estimate(&mut self, now: Instant, id: TransportId, bps: u64, source: EstimateSource) {
        if !self.config.adapt_to_subscribers {
            return;
        }
        let bps = bps.min(MAX_ESTIMATE);
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if t.estimate.is_some_and(|before| bps < before - before / 10) {
            t.estimate_fell_at = Some(now);
        }
        t.estimate = Some(bps);
        tracing::debug!(subscriber = id, bps, ?source, "subscriber estimate");
        t.estimate_source = Some(source);
        match source {
            EstimateSource::SendSide => self.metrics.send_side_estimates.observe(bps as f64),
            EstimateSource::Remb => self.metrics.remb_estimates.observe(bps as f64),
        }
        let room = t.room.clone();
        self.allocate_room(now, &room);
    }

    /// Shares out every subscriber's estimate and refreshes publishers' REMB.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.allocate_room(now, &room);
        }
    }

    fn allocate_room(&mut self, now: Instant, room_name: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        // Each subscriber transport's consumers: (producer, index, demand).
        let mut by_subscriber: HashMap<TransportId, Vec<(String, usize, Demand)>> = HashMap::new();
        for (producer_sid, producer) in &room.producers {
            for (index, c) in producer.consumers.iter().enumerate() {
                by_subscriber.entry(c.transport).or_default().push((
                    producer_sid.clone(),
                    index,
                    Demand {
                        kind: producer.kind,
                        priority: c.settings.priority,
                        disabled: c.settings.disabled || producer.muted,
                    },
                ));
            }
        }
        let mut restarted = Vec::new();
        for (transport, consumers) in by_subscriber {
            let estimate = self.transports.get(&transport).and_then(|t| t.estimate);
            let demands: Vec<Demand> = consumers.iter().map(|(_, _, d)| *d).collect();
            let shares: Vec<Option<u64>> = match estimate {
                Some(estimate) => allocate(estimate, &demands).into_iter().map(Some).collect(),
                None => vec![None; demands.len()],
            };
            for ((producer_sid, index, _), share) in consumers.into_iter().zip(shares) {
                let Some(consumer) = room
                    .producers
                    .get_mut(&producer_sid)
                    .and_then(|p| p.consumers.get_mut(index))
                else {
                    continue;
                };
                if consumer.share == Some(0) && share != Some(0) {
                    restarted.push(producer_sid);
                }
                consumer.share = share;
            }
        }
        let mut rembs = Vec::new();
        for producer in room.producers.values_mut() {
            // A simulcast track adapts by layer, per consumer.
            if producer.kind != TrackKind::Video || !producer.layers.is_empty() {
                continue;
            }
            let target = producer
                .consumers
                .iter()
                .filter_map(|c| c.share)
                .filter(|share| *share > 0)
                .min()
                .map(|share| share.max(VIDEO_MIN));
            let send = match (target, producer.remb_sent) {
                (Some(target), None) => Some(target),
                (Some(target), Some((last, at))) => {
                    let change = (target as f64 - last as f64).abs() / last.max(1) as f64;
                    (change > REMB_CHANGE || now >= at + REMB_REFRESH).then_some(target)
                }
                (None, Some((last, _))) if last != REMB_RELEASE => Some(REMB_RELEASE),
                (None, _) => None,
            };
            if let Some(bps) = send {
                // A release is told once: nothing more until a subscriber
                // limits the publisher again.
                producer.remb_sent = Some((bps, now));
                rembs.push((
                    producer.transport,
                    producer.receiver_id,
                    producer.media_ssrc,
                    bps,
                ));
            }
        }
        for producer_sid in restarted {
            // A consumer paused for bandwidth starts again at a keyframe.
            self.request_keyframe(now, room_name, &producer_sid);
        }
        self.choose_layers(now, room_name);
        for (transport, receiver_id, media_ssrc, bps) in rembs {
            let Some(t) = self.transports.get_mut(&transport) else {
                continue;
            };
            let Some(mut receiver) = t.pc.rtp_receiver(receiver_id) else {
                continue;
            };
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 0,
                bitrate: bps as f32,
                ssrcs: vec![media_ssrc],
            };
            if receiver.write_rtcp(now, vec![Box::new(remb)]).is_ok() {
                self.metrics.rembs.inc();
            }
            self.mark_dirty(transport);
        }
    }
}

/// A consumer steps up a layer beyond its share only this long after its
/// subscriber's estimate last fell.
const STEP_UP_AFTER_FALL: Duration = Duration::from_secs(5);

/// How long fewer layers must have been enough before the publisher is
/// told to stop the others.
const DYNACAST_DOWN_AFTER: Duration = Duration::from_secs(5);

impl Shard {
    /// Each simulcast consumer's layer, by its share and the size its
    /// subscriber shows it at; and the publisher told which layers anyone
    /// receives (dynacast): every layer up to the highest wanted, at once
    /// when more are wanted, after `DYNACAST_DOWN_AFTER` when fewer are.
    pub(super) fn choose_layers(&mut self, now: Instant, room_name: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        for producer in room.producers.values_mut() {
            if producer.layers.is_empty() {
                continue;
            }
            let mut highest_wanted = None;
            for consumer in &mut producer.consumers {
                let (share, size) = (consumer.share, consumer.settings.max_size());
                // One layer above the share while the subscriber's estimate
                // has not fallen lately (module `layers`, `select`).
                let step_up = self.transports.get(&consumer.transport).is_some_and(|t| {
                    t.estimate_fell_at
                        .is_none_or(|at| now >= at + STEP_UP_AFTER_FALL)
                });
                consumer.layer = select(&producer.layers, now, share, size, step_up);
                let receives = !consumer.settings.disabled && share != Some(0);
                if receives {
                    highest_wanted =
                        highest_wanted.max(wanted(&producer.layers, share, size, step_up));
                }
            }
            let active: Vec<bool> = (0..producer.layers.len())
                .map(|i| highest_wanted.is_some_and(|top| i <= top))
                .collect();
            let dynacast = &mut producer.dynacast;
            // A layer just learnt is being sent: it counts as on, so being
            // unwanted stops it only after the hold, like any other.
            while dynacast.sent.len() < active.len() && !dynacast.sent.is_empty() {
                dynacast.sent.push(true);
            }
            let more = active
                .iter()
                .enumerate()
                .any(|(i, on)| *on && !dynacast.sent.get(i).copied().unwrap_or(false));
            let send = if dynacast.sent == active {
                dynacast.fewer_since = None;
                false
            } else if dynacast.sent.len() != active.len() || more {
                true
            } else {
                let since = *dynacast.fewer_since.get_or_insert(now);
                now >= since + DYNACAST_DOWN_AFTER
            };
            if !send {
                continue;
            }
            dynacast.sent = active.clone();
            dynacast.fewer_since = None;
            for (layer, on) in producer.layers.iter_mut().zip(&active) {
                if !on {
                    layer.stopped_by_us();
                }
            }
            tracing::debug!(producer = %producer.sid, ?active, "subscribed layers");
            let layers = producer
                .layers
                .iter()
                .zip(active)
                .map(|(layer, active)| LayerState {
                    rid: layer.rid.clone(),
                    active,
                })
                .collect();
            self.outbox.send(
                &producer.owner_sid,
                ParticipantEvent::SubscribedLayers {
                    track_sid: producer.sid.clone(),
                    layers,
                },
            );
        }
    }
}
