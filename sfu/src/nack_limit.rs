//! How often one packet is sent again on a subscriber's NACKs.
//!
//! rtc 0.21's NACK responder resends a packet every time it is asked, and a
//! receiver asks again for as long as the packet is missing: rtc's own NACK
//! generator every 100 ms while the packet is in its window, a browser
//! until it gives up on the frame. On a downlink already short of
//! bandwidth, each resend is more load on the link that lost the packet: in
//! the simulated-time harness a 700 kbit/s downlink was kept full by
//! resends alone (over 1,000 drops a second) and the subscriber's estimate
//! never recovered. A packet the receiver still lacks after a few resends
//! is better replaced by the next keyframe, which the receiver asks for.
//!
//! [`LimitResends`] sits between the wire and the responder on a subscriber
//! transport and removes from each inbound NACK the packets already resent
//! [`MAX_RESENDS`] times, or resent less than [`MIN_INTERVAL`] ago (a
//! request that crossed our resend on the way); a NACK left with no packet
//! is dropped. LiveKit's SFU bounds its resends too, at 3 per packet.
//!
//! Only resends count. A subscriber also asks for packets we have not sent
//! yet: a packet lost on the publisher's link leaves the same hole in the
//! consumer's numbering, and the subscriber asks for it while we ask the
//! publisher. The responder has nothing to resend then, and those asks must
//! not use up the packet's budget: when the publisher's retransmission
//! comes and we forward it, that first transmission may be lost too, and
//! the subscriber's asks for it must still be answered. They used to count,
//! and a packet whose repair took more than three asks (about 300 ms: one
//! lost NACK or retransmission on the publisher's link) and was then lost
//! on the subscriber's was never resent (`sim_tests::resends`). A lost
//! reference frame freezes a browser's video until its own keyframe
//! request, about 3 s later. So the filter also watches what is written: a
//! packet's budget starts when it is first sent, and an ask for a packet
//! not sent (or no longer in the responder's buffer, the same 1,024
//! packets) is left out of the NACK.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rtc::interceptor::{Attribute, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::nack_edit::{edit_nacks, retain_packets};
use crate::packet_filter::{Filtered, PacketFilter};

/// Most times one packet is sent again. On a link losing 5%, a lost
/// packet's resends are all lost too about once in 160,000 (with 3, once
/// in 8,000: a few times in an hour of video). A fifth resend kept the
/// capped downlink of the simulated-time harness too full of resends for
/// the estimate to stay above 400 kbit/s on a 700 kbit/s link.
pub const MAX_RESENDS: u8 = 4;
/// A packet asked for again sooner than this after its last resend is not
/// sent again yet.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Packets remembered per stream: as many as rtc's NACK responder keeps to
/// resend from.
const WINDOW: usize = 1024;

/// One sent packet: which (its slot is shared with every sequence number
/// `WINDOW` apart) and its resends so far.
#[derive(Clone, Copy)]
struct Sent {
    seq: u16,
    resends: u8,
    last_resend: Option<Instant>,
}

/// The packets of one stream we send, by sequence number modulo `WINDOW`.
struct SentStream {
    slots: Box<[Option<Sent>]>,
}

impl SentStream {
    fn new() -> SentStream {
        SentStream {
            slots: vec![None; WINDOW].into_boxed_slice(),
        }
    }

    fn slot(&mut self, seq: u16) -> &mut Option<Sent> {
        &mut self.slots[usize::from(seq) % WINDOW]
    }
}

/// What becomes of one packet a NACK asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// Sent again.
    Resend,
    /// Not sent yet, or no longer in the responder's buffer: nothing to
    /// resend, and nothing counted.
    NotSent,
    /// Resent too often, or too recently.
    Refused,
}

/// Removes packets not sent, asked for too often or too soon again from
/// inbound NACKs; see the module docs.
pub struct LimitResends {
    streams: HashMap<u32, SentStream>,
    refused: IntCounter,
}

impl LimitResends {
    /// The interceptor; `refused` counts the packets left out of a NACK
    /// for having been resent too often or too recently.
    pub fn new(refused: IntCounter) -> Filtered<LimitResends> {
        Filtered::new(LimitResends {
            streams: HashMap::new(),
            refused,
        })
    }

    /// What becomes of the ask for packet `seq` of `ssrc` now; counts a
    /// resend.
    fn ask(&mut self, now: Instant, ssrc: u32, seq: u16) -> Ask {
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            // A stream the responder does not resend either.
            return Ask::NotSent;
        };
        match stream.slot(seq) {
            Some(sent) if sent.seq == seq => {
                if sent.resends >= MAX_RESENDS {
                    tracing::debug!(ssrc, seq, "packet asked for after its last resend");
                    return Ask::Refused;
                }
                if sent
                    .last_resend
                    .is_some_and(|last| now < last + MIN_INTERVAL)
                {
                    return Ask::Refused;
                }
                sent.resends += 1;
                sent.last_resend = Some(now);
                Ask::Resend
            }
            _ => Ask::NotSent,
        }
    }

    /// `nack` with only the packets that may be sent again; `None` if none.
    fn limit(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let ssrc = nack.media_ssrc;
        let mut refused = 0;
        let (limited, _) = retain_packets(nack, |seq| match self.ask(now, ssrc, seq) {
            Ask::Resend => true,
            Ask::NotSent => false,
            Ask::Refused => {
                refused += 1;
                false
            }
        });
        self.refused.inc_by(refused);
        limited
    }
}

impl PacketFilter for LimitResends {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        let now = msg.now;
        edit_nacks(msg, |nack| self.limit(now, nack))
    }

    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        // A first transmission (a late one included: the publisher's
        // retransmission of a packet it lost) starts the packet's budget;
        // the responder's resends, tagged, do not.
        if let Packet::Rtp(packet) = &msg.message.packet
            && !msg.message.has(&Attribute::Retransmission)
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
        {
            let seq = packet.header.sequence_number;
            *stream.slot(seq) = Some(Sent {
                seq,
                resends: 0,
                last_resend: None,
            });
        }
        Some(msg)
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        // The streams rtc's responder keeps a buffer for.
        if info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
        {
            self.streams.insert(info.ssrc, SentStream::new());
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::{AttributedPacket, Interceptor, RTCPFeedback};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;
    use rtc::rtp;
    use rtc::sansio::Protocol;
    use rtc::shared::{TransportContext, TransportMessage};

    const SSRC: u32 = 7;

    fn tagged(now: Instant, message: AttributedPacket) -> TaggedPacket {
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message,
        }
    }

    fn nack(now: Instant, seqs: &[u16]) -> TaggedPacket {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        let rr = ReceiverReport::default();
        tagged(
            now,
            AttributedPacket::new(Packet::Rtcp(vec![Box::new(rr), Box::new(nack)])),
        )
    }

    fn rtp_packet(seq: u16) -> Packet {
        Packet::Rtp(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                ssrc: SSRC,
                sequence_number: seq,
                ..Default::default()
            },
            payload: Bytes::from_static(&[1, 2, 3]),
        })
    }

    /// A limiter for one NACK-capable stream we send, with `seqs` sent.
    fn limiter(now: Instant, seqs: &[u16]) -> (Filtered<LimitResends>, IntCounter) {
        let refused = IntCounter::new("refused", "test").unwrap();
        let mut limit = LimitResends::new(refused.clone());
        limit.bind_local_stream(&StreamInfo {
            ssrc: SSRC,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        for &seq in seqs {
            send(&mut limit, now, AttributedPacket::new(rtp_packet(seq)));
        }
        (limit, refused)
    }

    fn send(limit: &mut Filtered<LimitResends>, now: Instant, message: AttributedPacket) {
        limit.handle_write(tagged(now, message)).unwrap();
        assert!(limit.poll_write().is_some(), "a written packet goes on");
    }

    /// The sequence numbers of the NACK that went on, and how many RTCP
    /// packets went on with it.
    fn passed(limit: &mut Filtered<LimitResends>) -> Option<(Vec<u16>, usize)> {
        limit.poll_read().map(crate::nack_edit::nacked_in)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_sent_packet_is_resent_at_most_four_times_and_not_twice_within_50ms() {
        let t0 = Instant::now();
        let (mut limit, refused) = limiter(t0, &[10, 11, 12]);
        limit.handle_read(nack(t0, &[10, 11])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![10, 11], 2)));
        // Asked again 10 ms later (crossed our resend): not yet; the
        // receiver report in the same compound still goes on.
        limit.handle_read(nack(t0 + ms(10), &[10, 12])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![12], 2)));
        assert_eq!(refused.get(), 1);
        for i in 1..u64::from(MAX_RESENDS) {
            limit.handle_read(nack(t0 + ms(100 * i), &[10])).unwrap();
            assert_eq!(passed(&mut limit), Some((vec![10], 2)), "resend {}", i + 1);
        }
        // Once more: only the receiver report goes on.
        limit.handle_read(nack(t0 + ms(1_000), &[10])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![], 1)));
        assert_eq!(refused.get(), 2);
    }

    #[test]
    fn asks_for_a_packet_not_sent_yet_do_not_use_up_its_resends() {
        let t0 = Instant::now();
        // 11 was lost on the publisher's link: the subscriber asks for it
        // again and again while we have nothing to resend.
        let (mut limit, refused) = limiter(t0, &[10, 12]);
        for i in 0..10 {
            limit.handle_read(nack(t0 + ms(100 * i), &[11])).unwrap();
            assert_eq!(passed(&mut limit), Some((vec![], 1)), "ask {i}");
        }
        assert_eq!(
            refused.get(),
            0,
            "nothing was refused: there was nothing to send"
        );
        // The publisher's retransmission comes and is forwarded; lost
        // again, it is resent on every ask up to the limit.
        send(
            &mut limit,
            t0 + ms(1_000),
            AttributedPacket::new(rtp_packet(11)),
        );
        for i in 1..=u64::from(MAX_RESENDS) {
            limit
                .handle_read(nack(t0 + ms(1_000 + 100 * i), &[11]))
                .unwrap();
            assert_eq!(passed(&mut limit), Some((vec![11], 2)), "resend {i}");
        }
        limit.handle_read(nack(t0 + ms(2_000), &[11])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![], 1)));
        assert_eq!(refused.get(), 1);
    }

    #[test]
    fn resends_do_not_renew_a_packets_budget_and_unknown_streams_are_left_out() {
        let t0 = Instant::now();
        let (mut limit, refused) = limiter(t0, &[10]);
        for i in 0..u64::from(MAX_RESENDS) {
            limit.handle_read(nack(t0 + ms(100 * i), &[10])).unwrap();
            assert_eq!(passed(&mut limit), Some((vec![10], 2)));
            // The responder's resend passes on its way out, tagged.
            send(
                &mut limit,
                t0 + ms(100 * i + 1),
                AttributedPacket::new(rtp_packet(10)).with(Attribute::Retransmission),
            );
        }
        limit.handle_read(nack(t0 + ms(1_000), &[10])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![], 1)));
        assert_eq!(refused.get(), 1);
        // A packet 1,024 numbers on takes the slot: the old one is gone
        // from the responder's buffer too.
        send(
            &mut limit,
            t0 + ms(1_100),
            AttributedPacket::new(rtp_packet(10 + 1024)),
        );
        limit
            .handle_read(nack(t0 + ms(1_200), &[10, 10 + 1024]))
            .unwrap();
        assert_eq!(passed(&mut limit), Some((vec![10 + 1024], 2)));
        assert_eq!(refused.get(), 1);
        // A stream we were never bound to send.
        let mut other = nack(t0 + ms(1_300), &[10]);
        if let Packet::Rtcp(packets) = &mut other.message.packet {
            packets.truncate(1);
            packets.push(Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: SSRC + 1,
                nacks: nack_pairs_from_sequence_numbers(&[10]),
            }));
        }
        limit.handle_read(other).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![], 1)));
    }
}
