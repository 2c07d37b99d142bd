//! Producers and consumers: a publisher's tracks opening and closing, a
//! subscriber's consumers of them, and each RTP packet's way from one to
//! the others.

use std::time::Instant;

use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::RTCTrackEventInit;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpTransceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use tracing::{debug, info, warn};

use crate::ids;
use crate::session::{ParticipantEvent, SfuError, SubscriptionSettings, TrackKind, TransportRole};

use super::Shard;
use crate::consumer::{Consumer, Leg};
use crate::continuity::{Arrival, Continuity};
use crate::early_packets::EarlyPackets;
use crate::header_ext::SendStamps;
use crate::header_ext::{ExtensionMap, audio_level};
use crate::keyframe::VideoCodec;
use crate::layers::{Layer, is_sending, select};
use crate::metrics::WorkerMetrics;
use crate::producer::Dynacast;
use crate::producer::Producer;
use crate::rewriter::SequenceRewriter;
use crate::timers::Timer;
use crate::transport::{Transport, TransportId};
use crate::vp8;
use crate::vp8::PictureIdRewriter;

impl Shard {
    pub(super) fn forward(
        &mut self,
        now: Instant,
        from: TransportId,
        track_id: &str,
        packet: rtp::Packet,
    ) {
        self.metrics.packets_in.inc();
        let ssrc = packet.header.ssrc;
        let Some(t) = self.transports.get_mut(&from) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        if t.media_held {
            self.metrics.drop_media_held.inc();
            return;
        }
        if !t.producer_by_ssrc.contains_key(&ssrc) {
            // A stream of a track rtc announced under another SSRC (a
            // simulcast layer, a new SSRC after renegotiation): routed by
            // rtc's track id once, by SSRC from then on.
            let Some(sid) = t.producers.get(track_id).cloned() else {
                self.metrics.drop_unroutable.inc();
                return;
            };
            // A simulcast layer is known by the rid rtc read off its first
            // packets.
            if let Some(producer) = self
                .rooms
                .get_mut(&t.room)
                .and_then(|r| r.producers.get_mut(&sid))
                && let Some(receiver) = t.pc.rtp_receiver(producer.receiver_id)
                && let Some(rid) = receiver.track().rid(ssrc)
            {
                producer.add_layer(rid.to_string(), ssrc);
            }
            t.producer_by_ssrc.insert(ssrc, sid);
        }
        let Some(producer_sid) = t.producer_by_ssrc.get(&ssrc) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        let Some(room) = self.rooms.get_mut(&t.room) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
        if packet.payload.is_empty() {
            // Padding only (a publisher probing its bandwidth): nothing for a
            // subscriber to decode, and its own probing is ours to do. The
            // consumers' numbering closes up over it.
            self.metrics.drop_padding.inc();
            for consumer in &mut producer.consumers {
                consumer.sequence.drop_packet(ssrc, seq);
            }
            return;
        }
        if producer.kind == TrackKind::Audio
            && let Some(level) = audio_level(&packet.header, &producer.extensions)
        {
            room.speakers.observe(producer_sid, level, now);
            if let Some(at) = room.speakers.next_timeout()
                && room.speakers_scheduled.needs(at)
            {
                self.timers.schedule(at, Timer::Speakers(room.name.clone()));
            }
        }
        // Where a consumer may start (or start again) after a pause: any
        // audio packet, a keyframe's first packet of video.
        let switching_point = match producer.video_codec {
            None => producer.kind == TrackKind::Audio,
            Some(codec) => codec.is_keyframe(&packet.payload),
        };
        let simulcast = !producer.layers.is_empty();
        let arrival = if let Some(layer) = producer.layer_of(ssrc).map(|i| &mut producer.layers[i])
        {
            let arrival = layer.count(now, packet.payload.len(), seq);
            if switching_point
                && producer.video_codec == Some(VideoCodec::Vp8)
                && let Some((width, height)) = vp8::keyframe_dimensions(&packet.payload)
            {
                layer.size = Some((u32::from(width), u32::from(height)));
            }
            arrival
        } else {
            if producer
                .stream_continuity
                .is_none_or(|(known, _)| known != ssrc)
            {
                producer.stream_continuity = Some((ssrc, Continuity::new(now, seq)));
            }
            match &mut producer.stream_continuity {
                Some((_, continuity)) => continuity.observe(now, seq),
                None => Arrival::Older,
            }
        };
        if producer.video_codec.is_some()
            && !switching_point
            && arrival == (Arrival::Newer { after_outage: true })
        {
            // Back after an outage with the packets in between lost for
            // good: its consumers start again at its next keyframe, asked
            // for below (module `continuity`).
            debug!(producer = %producer.sid, ssrc, seq, "stream resumed after an outage");
            for consumer in &mut producer.consumers {
                if consumer.sequence.current_source() == Some(ssrc) {
                    consumer.sequence.pause();
                    consumer.sequence.resume();
                    consumer.picture_ids.rebase();
                }
            }
        }
        let rewrite_picture_ids = simulcast && producer.video_codec == Some(VideoCodec::Vp8);
        // Layers consumers switch to, each needing a keyframe.
        let mut switched_to = Vec::new();
        // A consumer is waiting for a keyframe of this stream.
        let mut awaiting_keyframe = false;
        for consumer in &mut producer.consumers {
            let Some(sub) = self.transports.get_mut(&consumer.transport) else {
                self.metrics.drop_unroutable.inc();
                continue;
            };
            let blocked = if producer.muted {
                Some(&self.metrics.drop_muted)
            } else if !sub.connected {
                Some(&self.metrics.drop_not_connected)
            } else if sub.media_held {
                Some(&self.metrics.drop_media_held)
            } else if consumer.settings.disabled {
                Some(&self.metrics.drop_subscription_disabled)
            } else if consumer.share == Some(0) {
                Some(&self.metrics.drop_bandwidth)
            } else {
                None
            };
            if let Some(counter) = blocked {
                // Whatever stops the flow, the numbering picks up after it
                // with no gap (at a keyframe, for video).
                counter.inc();
                consumer.sequence.pause();
                continue;
            }
            if consumer.sequence.is_paused() {
                consumer.sequence.resume();
                consumer.picture_ids.rebase();
            }
            if simulcast {
                // No layer yet, or the publisher stopped sending the one
                // chosen (module `layers`, `is_sending`): choose again now
                // rather than at the next allocation, so a consumer is not
                // left on a stopped layer.
                if consumer
                    .layer
                    .is_none_or(|i| !is_sending(&producer.layers, i, now))
                {
                    consumer.layer = select(
                        &producer.layers,
                        now,
                        consumer.share,
                        consumer.settings.max_size(),
                        false,
                    );
                }
                let Some(target) = consumer.layer.map(|i| producer.layers[i].ssrc) else {
                    continue;
                };
                let current = consumer.sequence.current_source();
                if current != Some(target) && consumer.sequence.pending_source() != Some(target) {
                    debug!(
                        producer = %producer.sid,
                        subscriber = consumer.transport,
                        from = ?current,
                        to = target,
                        share = ?consumer.share,
                        "consumer switching layer"
                    );
                    consumer.sequence.switch_to(target);
                    switched_to.push(target);
                }
                // Another layer's packet is not this consumer's.
                if Some(ssrc) != current && ssrc != target {
                    continue;
                }
            }
            if consumer.leg.is_none() {
                consumer.leg = Leg::negotiated(
                    &mut sub.pc,
                    consumer.sender_id,
                    &producer.codec,
                    &producer.extensions,
                );
            }
            if consumer.leg.is_none() {
                self.metrics.drop_not_negotiated.inc();
                continue;
            }
            let source_before = consumer.sequence.current_source();
            // A keyframe's first packet a waiting consumer starts at.
            let starting = switching_point && consumer.sequence.pending_source() == Some(ssrc);
            let forwarded = consumer
                .sequence
                .forward(ssrc, seq, ts, now, switching_point);
            if consumer.sequence.current_source() != source_before {
                debug!(
                    producer = %producer.sid,
                    subscriber = consumer.transport,
                    source = ssrc,
                    seq,
                    "consumer segment started"
                );
            }
            let Some(numbered) = forwarded else {
                if consumer.sequence.pending_source() == Some(ssrc) {
                    // Waiting for a keyframe of this stream: keep asking
                    // (throttled) while it waits. A request made before the
                    // subscriber connected, or lost on the way, must not
                    // leave it waiting until the publisher's next periodic
                    // keyframe (seconds, or never).
                    self.metrics.drop_awaiting_keyframe.inc();
                    awaiting_keyframe = true;
                }
                continue;
            };
            let mut write = Write {
                sub,
                consumer,
                now,
                rewrite_picture_ids,
                metrics: &self.metrics,
                send_stamps: &mut self.send_stamps,
            };
            write.packet(&packet, numbered);
            if starting {
                // The rest of the keyframe may have come first (module
                // `early_packets`).
                for packet in producer.early_packets.after(ssrc, seq) {
                    let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
                    if let Some(numbered) =
                        write.consumer.sequence.forward(ssrc, seq, ts, now, false)
                    {
                        write.metrics.early_packets_forwarded.inc();
                        write.packet(&packet, numbered);
                    }
                }
            }
            if !sub.queued {
                sub.queued = true;
                self.dirty.push(consumer.transport);
            }
        }
        if awaiting_keyframe {
            producer.early_packets.keep(now, &packet);
        }
        if awaiting_keyframe && !switched_to.contains(&ssrc) {
            switched_to.push(ssrc);
        }
        if !switched_to.is_empty() {
            let (room, producer) = (room.name.clone(), producer.sid.clone());
            switched_to.sort_unstable();
            switched_to.dedup();
            for stream_ssrc in switched_to {
                if simulcast {
                    self.request_layer_keyframe(now, &room, &producer, stream_ssrc);
                } else {
                    self.request_keyframe(now, &room, &producer);
                }
            }
        }
    }

    pub(super) fn open_producer(&mut self, now: Instant, id: TransportId, init: RTCTrackEventInit) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if t.role != TransportRole::Publisher || t.producers.contains_key(&init.track_id) {
            return;
        }
        let transceiver_id = RTCRtpTransceiverId::from(init.receiver_id);
        let mid =
            t.pc.rtp_transceiver(transceiver_id)
                .and_then(|tr| tr.mid().clone());
        let Some(mut receiver) = t.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let extensions = ExtensionMap::from_pairs(
            receiver
                .get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .filter_map(|e| Some((u8::try_from(e.id).ok()?, e.uri.as_str()))),
        );
        let track = receiver.track();
        let kind = kind_of(track.kind());
        let Some(codec) = track.codec(init.ssrc).cloned() else {
            warn!(
                transport = id,
                ssrc = init.ssrc,
                "track opened with no codec"
            );
            return;
        };
        let sid = ids::track_sid(&mut self.rng);
        t.producers.insert(init.track_id.clone(), sid.clone());
        t.producer_by_ssrc.insert(init.ssrc, sid.clone());
        let (room_name, owner_sid) = (t.room.clone(), t.participant_sid.clone());
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let producer = Producer {
            sid: sid.clone(),
            owner_sid: owner_sid.clone(),
            transport: id,
            receiver_id: init.receiver_id,
            kind,
            mid,
            video_codec: VideoCodec::from_mime(&codec.mime_type),
            codec,
            extensions,
            media_ssrc: init.ssrc,
            muted: false,
            consumers: Vec::new(),
            remb_sent: None,
            last_keyframe_request: None,
            layers: init
                .rid
                .map(|rid| vec![Layer::new(rid.to_string(), init.ssrc)])
                .unwrap_or_default(),
            stream_continuity: None,
            early_packets: EarlyPackets::default(),
            dynacast: Dynacast::default(),
        };
        info!(room = %room_name, participant = %owner_sid, track = %sid, ?kind, codec = %producer.codec.mime_type, "track published");
        let event = ParticipantEvent::TrackPublished {
            participant_sid: owner_sid.clone(),
            track: producer.info(),
        };
        room.producers.insert(sid.clone(), producer);
        room.broadcast(&mut self.outbox, None, &event);
        self.metrics.tracks.inc();

        let subscribers: Vec<String> = room
            .participants
            .values()
            .filter(|p| p.sid != owner_sid && p.can_subscribe)
            .map(|p| p.sid.clone())
            .collect();
        for sub in subscribers {
            self.subscribe(now, &room_name, &sub, &sid);
            self.negotiate_subscriber(now, &room_name, &sub);
        }
    }

    pub(super) fn close_producer(&mut self, now: Instant, id: TransportId, track_id: &str) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(sid) = t.producers.remove(track_id) else {
            return;
        };
        t.producer_by_ssrc.retain(|_, producer| *producer != sid);
        let room = t.room.clone();
        self.remove_producer(now, &room, &sid);
    }

    pub(super) fn remove_producer(&mut self, now: Instant, room_name: &str, producer_sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(producer) = room.producers.remove(producer_sid) else {
            return;
        };
        room.speakers.remove(&producer.sid);
        self.metrics.tracks.dec();
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::TrackUnpublished {
                participant_sid: producer.owner_sid.clone(),
                track_sid: producer.sid.clone(),
            },
        );
        let mut renegotiate = Vec::new();
        for consumer in producer.consumers {
            self.metrics.subscriptions.dec();
            if let Some(p) = room.participants.get_mut(&consumer.subscriber_sid) {
                p.subscriptions.remove(producer_sid);
            }
            let Some(t) = self.transports.get_mut(&consumer.transport) else {
                continue;
            };
            t.consumed_by_ssrc.remove(&consumer.ssrc);
            if t.pc.remove_track(consumer.sender_id).is_ok() {
                renegotiate.push(consumer.subscriber_sid);
            }
        }
        for sub in renegotiate {
            self.negotiate_subscriber(now, room_name, &sub);
        }
    }

    /// Adds a consumer of `producer_sid` on `subscriber_sid`'s subscriber transport.
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        room_name: &str,
        subscriber_sid: &str,
        producer_sid: &str,
    ) {
        let Some(transport_id) = self.ensure_subscriber_transport(now, room_name, subscriber_sid)
        else {
            return;
        };
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            return;
        };
        let Some(participant) = room.participants.get_mut(subscriber_sid) else {
            return;
        };
        if participant.subscriptions.contains_key(producer_sid) {
            return;
        }
        let Some(t) = self.transports.get_mut(&transport_id) else {
            return;
        };
        let ssrc = self.rng.random::<u32>();
        // RFC 3550: the first sequence number and timestamp are random.
        let mut sequence = SequenceRewriter::new(
            producer.codec.clock_rate,
            self.rng.random(),
            self.rng.random(),
        );
        sequence.switch_to(producer.media_ssrc);
        let track = MediaStreamTrack::new(
            producer.owner_sid.clone(),
            producer.sid.clone(),
            producer.sid.clone(),
            rtc_kind(producer.kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    // Used if the subscriber's answer takes RTX.
                    rtx: (producer.kind == TrackKind::Video).then(|| RTCRtpRtxParameters {
                        ssrc: self.rng.random(),
                    }),
                    ..Default::default()
                },
                codec: producer.codec.clone(),
                ..Default::default()
            }],
        );
        match t.pc.add_track(track) {
            Ok(sender_id) => {
                participant
                    .subscriptions
                    .insert(producer_sid.to_owned(), sender_id);
                t.consumed_by_ssrc.insert(ssrc, producer_sid.to_owned());
                producer.consumers.push(Consumer {
                    subscriber_sid: subscriber_sid.to_owned(),
                    transport: transport_id,
                    sender_id,
                    ssrc,
                    leg: None,
                    settings: SubscriptionSettings::default(),
                    share: None,
                    sequence,
                    layer: None,
                    picture_ids: PictureIdRewriter::new(),
                });
                self.metrics.subscriptions.inc();
            }
            Err(e) => {
                warn!(room = %room_name, subscriber = %subscriber_sid, error = %e, "could not add consumer")
            }
        }
    }

    /// What subscriber `sid` wants of track `track_sid` it receives. A
    /// consumer enabled again asks for a keyframe, so its picture comes back
    /// at once.
    pub(crate) fn update_subscription(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        track_sid: &str,
        settings: SubscriptionSettings,
    ) -> Result<(), SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let consumer = room
            .producers
            .get_mut(track_sid)
            .and_then(|p| p.consumers.iter_mut().find(|c| c.subscriber_sid == sid))
            .ok_or(SfuError::TrackNotFound)?;
        let enabled_again = consumer.settings.disabled && !settings.disabled;
        consumer.settings = settings;
        // A simulcast consumer may want another layer for its new size.
        self.choose_layers(now, room_name);
        if enabled_again {
            self.request_keyframe(now, room_name, track_sid);
        }
        self.flush(now);
        Ok(())
    }

    pub(super) fn ensure_subscriber_transport(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Option<TransportId> {
        let participant = self.rooms.get(room_name)?.participants.get(sid)?;
        if participant.subscriber.is_some() {
            return participant.subscriber;
        }
        let held = participant.media_held;
        let id = self
            .new_transport(now, room_name, sid, TransportRole::Subscriber, held)
            .ok()?;
        self.rooms
            .get_mut(room_name)?
            .participants
            .get_mut(sid)?
            .subscriber = Some(id);
        Some(id)
    }
}

fn kind_of(kind: RtpCodecKind) -> TrackKind {
    match kind {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    }
}

fn rtc_kind(kind: TrackKind) -> RtpCodecKind {
    match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    }
}

/// Where a consumer's packets go out: its subscriber's transport, numbered
/// by its rewriter, with the leg's extensions.
struct Write<'a> {
    sub: &'a mut Transport,
    consumer: &'a mut Consumer,
    now: Instant,
    rewrite_picture_ids: bool,
    metrics: &'a WorkerMetrics,
    send_stamps: &'a mut SendStamps,
}

impl Write<'_> {
    /// Sends `packet` of the consumer's source as `(out_seq, out_ts)`.
    fn packet(&mut self, packet: &rtp::Packet, (out_seq, out_ts): (u16, u32)) {
        let (sub, consumer, now) = (&mut *self.sub, &mut *self.consumer, self.now);
        let Some(leg) = &consumer.leg else {
            self.metrics.drop_not_negotiated.inc();
            return;
        };
        let numbered = sub.transport_seq;
        let mut header = leg.extensions.rewritten(
            &packet.header,
            now,
            sub.epoch,
            &mut sub.transport_seq,
            self.send_stamps,
        );
        header.ssrc = consumer.ssrc;
        header.payload_type = leg.payload_type;
        header.sequence_number = out_seq;
        header.timestamp = out_ts;
        let payload = if self.rewrite_picture_ids {
            consumer
                .picture_ids
                .rewrite_bytes(packet.header.ssrc, packet.payload.clone())
        } else {
            packet.payload.clone()
        };
        let out = rtp::Packet { header, payload };
        // The leg numbered it transport-wide: remembered for the
        // subscriber's feedback (module `bwe`).
        let rtp_bytes =
            (sub.transport_seq != numbered).then(|| out.header.marshal_size() + out.payload.len());
        // Our own SSRC and payload type were checked when the leg was
        // resolved; `handle_write` skips re-deriving sender parameters on
        // every packet.
        match sub.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), out),
        }) {
            Ok(()) => {
                self.metrics.packets_out.inc();
                if let Some(rtp_bytes) = rtp_bytes {
                    sub.send_side
                        .get_or_insert_with(Box::default)
                        .on_sent(now, numbered, rtp_bytes);
                }
            }
            Err(_) => self.metrics.drop_send_failed.inc(),
        }
    }
}
