//! NACKs toward a publisher only for packets that still matter.
//!
//! rtc 0.21's NACK generator asks for every packet missing from its
//! 512-packet window, every 100 ms, with no limit and no notion of age.
//! After an outage (a phone changing networks, a few seconds of a dead
//! link) the first packet on the new path reveals a gap of a hundred or
//! more, and the generator asks for all of them. A browser answers from its
//! send history, on the media SSRC (publishers get no RTX), through its
//! pacer: the retransmissions of seconds-old packets take the uplink its
//! estimator has just cut to a few hundred kbit/s, and new frames wait
//! behind them. Seen in the network-move browser test with simulcast: for
//! about 2 s after the move the server received almost only
//! retransmissions of the outage, and the subscriber froze.
//!
//! Those packets are useless by then: the publisher answers the keyframe
//! requests made during the outage, and a keyframe makes every packet
//! before it unnecessary to every decoder (libwebrtc's receiver stops
//! asking for packets older than a keyframe it has for the same reason).
//! [`SkipSupersededNacks`] sits between rtc's NACK generator and the wire
//! on a publisher transport. It notes the first packet of the newest
//! keyframe of each video stream as packets come in, and removes from each
//! outgoing NACK the packets older than that; a NACK left with none is not
//! sent.

use std::collections::HashMap;

use prometheus::IntCounter;
use rtc::interceptor::{Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::keyframe::VideoCodec;
use crate::nack_edit::{edit_nacks, retain_packets};
use crate::packet_filter::{Filtered, PacketFilter};

/// One video stream the publisher sends.
struct Stream {
    codec: VideoCodec,
    /// Sequence number of the first packet of the newest keyframe.
    keyframe_start: Option<u16>,
}

/// Removes packets older than their stream's newest keyframe from outgoing
/// NACKs; see the module docs.
pub struct SkipSupersededNacks {
    streams: HashMap<u32, Stream>,
    skipped: IntCounter,
}

impl SkipSupersededNacks {
    /// The interceptor; `skipped` counts the packets left out of a NACK.
    pub fn new(skipped: IntCounter) -> Filtered<SkipSupersededNacks> {
        Filtered::new(SkipSupersededNacks {
            streams: HashMap::new(),
            skipped,
        })
    }

    /// `nack` without the packets a keyframe superseded; `None` if none is
    /// left.
    fn still_needed(&self, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let Some(start) = self
            .streams
            .get(&nack.media_ssrc)
            .and_then(|s| s.keyframe_start)
        else {
            return Some(nack.clone());
        };
        let (needed, skipped) = retain_packets(nack, |seq| is_at_or_after(seq, start));
        self.skipped.inc_by(skipped);
        needed
    }
}

/// Whether `seq` is `start` or later, in serial-number order (RFC 1982).
fn is_at_or_after(seq: u16, start: u16) -> bool {
    seq.wrapping_sub(start) < 0x8000
}

impl PacketFilter for SkipSupersededNacks {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
            && stream.codec.is_keyframe(&packet.payload)
        {
            let seq = packet.header.sequence_number;
            // A retransmitted packet of an older keyframe does not move the
            // mark back.
            if stream
                .keyframe_start
                .is_none_or(|start| is_at_or_after(seq, start))
            {
                stream.keyframe_start = Some(seq);
            }
        }
        Some(msg)
    }

    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        edit_nacks(msg, |nack| self.still_needed(nack))
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(codec) = VideoCodec::from_mime(&info.mime_type) {
            self.streams.insert(
                info.ssrc,
                Stream {
                    codec,
                    keyframe_start: None,
                },
            );
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;
    use std::time::Instant;

    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::{AttributedPacket, Interceptor};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtp;
    use rtc::sansio::Protocol;
    use rtc::shared::{TransportContext, TransportMessage};

    const SSRC: u32 = 7;

    fn tagged(now: Instant, packet: Packet) -> TaggedPacket {
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        }
    }

    /// A VP8 packet: the first of a keyframe when `keyframe`, else the first
    /// of an interframe.
    fn vp8(now: Instant, seq: u16, keyframe: bool) -> TaggedPacket {
        // Descriptor: S=1, partition 0; then the payload header, whose low
        // bit (P) is 0 on a keyframe.
        let payload = Bytes::from(vec![0x10, if keyframe { 0x00 } else { 0x01 }, 0, 0]);
        tagged(
            now,
            Packet::Rtp(rtp::Packet {
                header: rtp::header::Header {
                    ssrc: SSRC,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload,
            }),
        )
    }

    fn nack(now: Instant, seqs: &[u16]) -> TaggedPacket {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        tagged(
            now,
            Packet::Rtcp(vec![Box::new(ReceiverReport::default()), Box::new(nack)]),
        )
    }

    /// The NACKed sequence numbers that went on toward the wire, and how
    /// many RTCP packets went with them; `None` if nothing went.
    fn sent(filter: &mut Filtered<SkipSupersededNacks>) -> Option<(Vec<u16>, usize)> {
        filter.poll_write().map(crate::nack_edit::nacked_in)
    }

    fn video_stream() -> StreamInfo {
        StreamInfo {
            ssrc: SSRC,
            mime_type: "video/VP8".into(),
            ..Default::default()
        }
    }

    #[test]
    fn packets_older_than_the_newest_keyframe_are_not_asked_for() {
        let skipped = IntCounter::new("skipped", "test").unwrap();
        let mut filter = SkipSupersededNacks::new(skipped.clone());
        filter.bind_remote_stream(&video_stream());
        let now = Instant::now();
        // Before any keyframe, a NACK goes on whole.
        filter.handle_write(nack(now, &[5, 6])).unwrap();
        assert_eq!(sent(&mut filter), Some((vec![5, 6], 2)));
        // 10..=109 lost in an outage; 110 starts a keyframe.
        filter.handle_read(vp8(now, 9, false)).unwrap();
        filter.handle_read(vp8(now, 110, true)).unwrap();
        let lost: Vec<u16> = (10..110).chain([112]).collect();
        filter.handle_write(nack(now, &lost)).unwrap();
        // Only the packet after the keyframe's start is asked for; the
        // receiver report goes on with it.
        assert_eq!(sent(&mut filter), Some((vec![112], 2)));
        assert_eq!(skipped.get(), 100);
        // A NACK of superseded packets only goes nowhere, but the report in
        // its compound still goes.
        filter.handle_write(nack(now, &[50, 60])).unwrap();
        assert_eq!(sent(&mut filter), Some((vec![], 1)));
        assert_eq!(skipped.get(), 102);
    }

    #[test]
    fn a_retransmitted_older_keyframe_does_not_move_the_mark_back() {
        let skipped = IntCounter::new("skipped", "test").unwrap();
        let mut filter = SkipSupersededNacks::new(skipped);
        filter.bind_remote_stream(&video_stream());
        let now = Instant::now();
        filter.handle_read(vp8(now, 200, true)).unwrap();
        filter.handle_read(vp8(now, 100, true)).unwrap();
        filter.handle_write(nack(now, &[150, 201])).unwrap();
        assert_eq!(sent(&mut filter), Some((vec![201], 2)));
    }

    #[test]
    fn the_mark_follows_sequence_numbers_across_their_wrap() {
        let skipped = IntCounter::new("skipped", "test").unwrap();
        let mut filter = SkipSupersededNacks::new(skipped);
        filter.bind_remote_stream(&video_stream());
        let now = Instant::now();
        filter.handle_read(vp8(now, 65_530, true)).unwrap();
        filter.handle_read(vp8(now, 3, true)).unwrap();
        filter
            .handle_write(nack(now, &[65_531, 65_535, 0, 2, 4]))
            .unwrap();
        assert_eq!(sent(&mut filter), Some((vec![4], 2)));
    }

    #[test]
    fn streams_it_does_not_know_and_audio_are_left_alone() {
        let skipped = IntCounter::new("skipped", "test").unwrap();
        let mut filter = SkipSupersededNacks::new(skipped);
        filter.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            mime_type: "audio/opus".into(),
            ..Default::default()
        });
        let now = Instant::now();
        // Opus payload bytes that would read as a VP8 keyframe start.
        filter.handle_read(vp8(now, 100, true)).unwrap();
        filter.handle_write(nack(now, &[50])).unwrap();
        assert_eq!(sent(&mut filter), Some((vec![50], 2)));
    }
}
