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
//! is dropped. LiveKit's SFU bounds its resends the same way (3 per packet).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::nack_edit::{edit_nacks, retain_packets};
use crate::packet_filter::{Filtered, PacketFilter};

/// Most times one packet is sent again.
pub const MAX_RESENDS: u8 = 3;
/// A packet asked for again sooner than this after its last resend is not
/// sent again yet.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// How long a packet's resends are remembered (far longer than any
/// receiver keeps asking).
const REMEMBERED: Duration = Duration::from_secs(3);

/// One packet's resends so far.
#[derive(Clone, Copy)]
struct Resends {
    count: u8,
    last: Instant,
}

/// Removes packets asked for too often (or too soon again) from inbound
/// NACKs; see the module docs.
pub struct LimitResends {
    resends: HashMap<(u32, u16), Resends>,
    /// When each entry of `resends` was made, oldest first, to forget it.
    made: VecDeque<(Instant, (u32, u16))>,
    refused: IntCounter,
}

impl LimitResends {
    /// The interceptor; `refused` counts the packets left out of a NACK.
    pub fn new(refused: IntCounter) -> Filtered<LimitResends> {
        Filtered::new(LimitResends {
            resends: HashMap::new(),
            made: VecDeque::new(),
            refused,
        })
    }

    /// Whether packet `seq` of `ssrc` may be sent again now; counts it if so.
    fn allow(&mut self, now: Instant, ssrc: u32, seq: u16) -> bool {
        let key = (ssrc, seq);
        match self.resends.get_mut(&key) {
            Some(r) if r.count >= MAX_RESENDS || now < r.last + MIN_INTERVAL => false,
            Some(r) => {
                r.count += 1;
                r.last = now;
                true
            }
            None => {
                self.resends.insert(
                    key,
                    Resends {
                        count: 1,
                        last: now,
                    },
                );
                self.made.push_back((now, key));
                true
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.made.front() {
            if now < at + REMEMBERED {
                break;
            }
            self.made.pop_front();
            self.resends.remove(&key);
        }
    }

    /// `nack` with only the packets that may be sent again; `None` if none.
    fn limit(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let ssrc = nack.media_ssrc;
        let (limited, refused) = retain_packets(nack, |seq| self.allow(now, ssrc, seq));
        self.refused.inc_by(refused);
        limited
    }
}

impl PacketFilter for LimitResends {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        let now = msg.now;
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            self.forget_old(now);
        }
        edit_nacks(msg, |nack| self.limit(now, nack))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;
    use rtc::sansio::Protocol;
    use rtc::shared::{TransportContext, TransportMessage};

    fn nack(now: Instant, seqs: &[u16]) -> TaggedPacket {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        let rr = ReceiverReport::default();
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(rr), Box::new(nack)])),
        }
    }

    /// The sequence numbers of the NACK that went on, and how many RTCP
    /// packets went on with it.
    fn passed(limit: &mut Filtered<LimitResends>) -> Option<(Vec<u16>, usize)> {
        limit.poll_read().map(crate::nack_edit::nacked_in)
    }

    #[test]
    fn a_packet_is_resent_at_most_three_times_and_not_twice_within_50ms() {
        let refused = IntCounter::new("refused", "test").unwrap();
        let mut limit = LimitResends::new(refused.clone());
        let t0 = Instant::now();
        limit.handle_read(nack(t0, &[10, 11])).unwrap();
        assert_eq!(passed(&mut limit), Some((vec![10, 11], 2)));
        // Asked again 10 ms later (crossed our resend): not yet; the
        // receiver report in the same compound still goes on.
        limit
            .handle_read(nack(t0 + Duration::from_millis(10), &[10, 12]))
            .unwrap();
        assert_eq!(passed(&mut limit), Some((vec![12], 2)));
        assert_eq!(refused.get(), 1);
        for i in 1..=2 {
            limit
                .handle_read(nack(t0 + Duration::from_millis(100 * i), &[10]))
                .unwrap();
            assert_eq!(passed(&mut limit), Some((vec![10], 2)), "resend {}", i + 1);
        }
        // A fourth time: only the receiver report goes on.
        limit
            .handle_read(nack(t0 + Duration::from_millis(400), &[10]))
            .unwrap();
        assert_eq!(passed(&mut limit), Some((vec![], 1)));
        assert_eq!(refused.get(), 2);
        // Long after, the number is remembered no more.
        limit
            .handle_read(nack(t0 + Duration::from_secs(10), &[10]))
            .unwrap();
        assert_eq!(passed(&mut limit), Some((vec![10], 2)));
        assert!(limit.filter().resends.len() <= 1);
    }
}
