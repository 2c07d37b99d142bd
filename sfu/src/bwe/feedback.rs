//! Transport-wide congestion control feedback (`TransportLayerCc`) read
//! into one status per packet: its 16-bit number and, if it arrived, when,
//! on the receiver's clock. The receiver's clock has its own epoch; only
//! differences between arrivals mean anything.
//!
//! Feedback comes from the network: counts may not match the chunks, the
//! deltas may run out, values may be absurd. Whatever it says, this reads
//! what is consistent and stops at the first thing that is not.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};

/// The reference time counts in steps of 64 ms, on 24 bits.
const REFERENCE_TICK_US: i64 = 64_000;
const REFERENCE_WRAP: i64 = 1 << 24;

/// The most statuses read from one feedback packet: more than any sender
/// has in flight between two feedbacks (rtc's and libwebrtc's receivers
/// report every 100 ms or less).
const MAX_STATUSES: usize = 4096;

/// One packet as the feedback reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketStatus {
    pub seq: u16,
    /// When it arrived, in microseconds on the receiver's clock; `None`:
    /// not received (yet).
    pub arrival_us: Option<i64>,
}

/// Reads feedback packets one after another, keeping the receiver's clock
/// continuous across the reference time's wraparound (every ~12 days).
#[derive(Debug, Default)]
pub(crate) struct FeedbackReader {
    /// The last reference time, unwrapped, in 64 ms ticks.
    reference: Option<i64>,
}

impl FeedbackReader {
    /// The statuses `feedback` reports, in sequence order, appended to
    /// `out` (cleared first).
    pub(crate) fn read(&mut self, feedback: &TransportLayerCc, out: &mut Vec<PacketStatus>) {
        out.clear();
        let reference = self.unwrap_reference(feedback.reference_time);
        let count = usize::from(feedback.packet_status_count).min(MAX_STATUSES);
        let mut arrival_us = reference.saturating_mul(REFERENCE_TICK_US);
        let mut deltas = feedback.recv_deltas.iter();
        let mut seq = feedback.base_sequence_number;
        for symbol in symbols(&feedback.packet_chunks).take(count) {
            let arrival = match symbol {
                SymbolTypeTcc::PacketNotReceived => None,
                SymbolTypeTcc::PacketReceivedWithoutDelta => {
                    // Received, time unknown: useless to the estimator,
                    // and not a loss either. Skipped.
                    seq = seq.wrapping_add(1);
                    continue;
                }
                SymbolTypeTcc::PacketReceivedSmallDelta
                | SymbolTypeTcc::PacketReceivedLargeDelta => {
                    let Some(delta) = deltas.next() else {
                        // Fewer deltas than received packets: malformed.
                        return;
                    };
                    arrival_us = arrival_us.saturating_add(delta.delta);
                    Some(arrival_us)
                }
            };
            out.push(PacketStatus {
                seq,
                arrival_us: arrival,
            });
            seq = seq.wrapping_add(1);
        }
    }

    fn unwrap_reference(&mut self, raw: u32) -> i64 {
        let raw = i64::from(raw) % REFERENCE_WRAP;
        let unwrapped = match self.reference {
            None => raw,
            Some(last) => {
                let mut step = (raw - last.rem_euclid(REFERENCE_WRAP)).rem_euclid(REFERENCE_WRAP);
                if step >= REFERENCE_WRAP / 2 {
                    step -= REFERENCE_WRAP;
                }
                last.saturating_add(step)
            }
        };
        self.reference = Some(unwrapped);
        unwrapped
    }
}

/// Every status symbol the chunks carry, in order.
fn symbols(chunks: &[PacketStatusChunk]) -> impl Iterator<Item = SymbolTypeTcc> + '_ {
    chunks
        .iter()
        .flat_map(|chunk| -> Box<dyn Iterator<Item = SymbolTypeTcc>> {
            match chunk {
                PacketStatusChunk::RunLengthChunk(run) => Box::new(std::iter::repeat_n(
                    run.packet_status_symbol,
                    usize::from(run.run_length),
                )),
                PacketStatusChunk::StatusVectorChunk(vector) => {
                    Box::new(vector.symbol_list.iter().copied())
                }
            }
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
    };

    /// Feedback for packets `base..` whose arrivals (µs after the
    /// reference time) are `arrivals` (`None`: lost).
    pub(crate) fn feedback(
        base: u16,
        reference: u32,
        arrivals: &[Option<i64>],
    ) -> TransportLayerCc {
        let mut last = 0;
        let mut recv_deltas = Vec::new();
        let symbols: Vec<SymbolTypeTcc> = arrivals
            .iter()
            .map(|a| match a {
                None => SymbolTypeTcc::PacketNotReceived,
                Some(at) => {
                    let delta = at - last;
                    last = *at;
                    let small = (0..=63_750).contains(&delta);
                    let symbol = if small {
                        SymbolTypeTcc::PacketReceivedSmallDelta
                    } else {
                        SymbolTypeTcc::PacketReceivedLargeDelta
                    };
                    recv_deltas.push(RecvDelta {
                        type_tcc_packet: symbol,
                        delta,
                    });
                    symbol
                }
            })
            .collect();
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: base,
            packet_status_count: arrivals.len() as u16,
            reference_time: reference,
            fb_pkt_count: 0,
            packet_chunks: symbols
                .chunks(7)
                .map(|list| {
                    PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                        type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                        symbol_size: SymbolSizeTypeTcc::TwoBit,
                        symbol_list: list.to_vec(),
                    })
                })
                .collect(),
            recv_deltas,
        }
    }

    #[test]
    fn statuses_carry_arrival_times_from_the_reference_time() {
        let mut reader = FeedbackReader::default();
        let mut out = Vec::new();
        reader.read(
            &feedback(65_535, 2, &[Some(1_000), None, Some(3_500)]),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                PacketStatus {
                    seq: 65_535,
                    arrival_us: Some(129_000)
                },
                PacketStatus {
                    seq: 0,
                    arrival_us: None
                },
                PacketStatus {
                    seq: 1,
                    arrival_us: Some(131_500)
                },
            ]
        );
    }

    #[test]
    fn the_reference_time_unwraps() {
        let mut reader = FeedbackReader::default();
        let mut out = Vec::new();
        reader.read(&feedback(0, (1 << 24) - 1, &[Some(0)]), &mut out);
        reader.read(&feedback(1, 0, &[Some(0)]), &mut out);
        assert_eq!(out[0].arrival_us, Some((1 << 24) * 64_000));
    }

    #[test]
    fn inconsistent_feedback_is_read_as_far_as_it_is_consistent() {
        let mut reader = FeedbackReader::default();
        let mut out = Vec::new();
        // Three received, one delta.
        let mut fb = feedback(10, 0, &[Some(10), Some(20), Some(30)]);
        fb.recv_deltas.truncate(1);
        reader.read(&fb, &mut out);
        assert_eq!(out.len(), 1);
        // A count far beyond the chunks, and a run of 60,000.
        let fb = TransportLayerCc {
            packet_status_count: u16::MAX,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                run_length: 60_000,
            })],
            ..Default::default()
        };
        reader.read(&fb, &mut out);
        assert_eq!(out.len(), MAX_STATUSES);
        reader.read(&TransportLayerCc::default(), &mut out);
        assert!(out.is_empty());
    }
}
