//! Connection quality: every `QUALITY_WINDOW` each participant's streams
//! are scored (module `quality`) from what the window's stats say: loss and
//! jitter of what it publishes, as we receive it; loss, jitter and round
//! trip of what we send it, as its receiver reports say. A change of level
//! goes to the participant and to everyone subscribed to it.

use std::collections::HashMap;
use std::time::Instant;

use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::Shard;
use crate::quality::StreamWindow;
use crate::room::StreamCounters;
use crate::session::{ConnectionQualityInfo, ParticipantEvent, TrackKind};

fn kind_of(kind: rtc::rtp_transceiver::rtp_sender::RtpCodecKind) -> TrackKind {
    match kind {
        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    }
}

/// Jitter in milliseconds from rtc's figure, which is RFC 3550's
/// interarrival jitter in RTP timestamp units as the receiver report
/// carries it (rtc 0.21 documents seconds but stores the report's raw
/// value): every codec we negotiate has a 48 kHz (Opus) or 90 kHz (video)
/// clock.
fn jitter_ms(kind: TrackKind, jitter: f64) -> f64 {
    let clock_rate = match kind {
        TrackKind::Audio => 48_000.0,
        TrackKind::Video => 90_000.0,
    };
    jitter / clock_rate * 1000.0
}

/// How much a cumulative counter grew since `before` (never negative: a
/// receiver report's loss can go down when duplicates arrive).
fn grew(now: i64, before: i64) -> u64 {
    u64::try_from(now.saturating_sub(before)).unwrap_or(0)
}

impl Shard {
    /// Ends the quality window of every participant of every room.
    pub(super) fn end_quality_windows(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let sids: Vec<String> = self
                .rooms
                .get(&room)
                .map(|r| r.participants.keys().cloned().collect())
                .unwrap_or_default();
            for sid in sids {
                self.end_quality_window(now, &room, &sid);
            }
        }
    }

    fn end_quality_window(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(p) = room.participants.get_mut(sid) else {
            return;
        };
        let mut streams = Vec::new();
        let mut counters: HashMap<u32, StreamCounters> = HashMap::new();
        // What it publishes, as we receive it (muted tracks are not judged:
        // silence there is by choice).
        if let Some(t) = p.publisher.and_then(|id| self.transports.get_mut(&id)) {
            let report = t.pc.get_stats(now, StatsSelector::None);
            for s in report.inbound_rtp_streams() {
                let received = &s.received_rtp_stream_stats;
                let ssrc = received.rtp_stream_stats.ssrc;
                let muted = t
                    .producer_by_ssrc
                    .get(&ssrc)
                    .and_then(|sid| room.producers.get(sid))
                    .is_none_or(|producer| producer.muted);
                let now_counts = StreamCounters {
                    packets: received.packets_received,
                    lost: received.packets_lost,
                };
                let before = p.stream_counters.get(&ssrc).copied().unwrap_or_default();
                counters.insert(ssrc, now_counts);
                if muted {
                    continue;
                }
                let lost = grew(now_counts.lost, before.lost);
                let arrived = now_counts.packets.saturating_sub(before.packets);
                let kind = kind_of(received.rtp_stream_stats.kind);
                streams.push(StreamWindow {
                    kind,
                    packets_expected: arrived + lost,
                    packets_lost: lost,
                    jitter_ms: jitter_ms(kind, received.jitter),
                    rtt_ms: None,
                    opus_fec: kind == TrackKind::Audio,
                    bitrate: None,
                });
            }
        }
        // What we send it, as its receiver reports say (streams we sent
        // nothing on this window, paused or disabled, are not judged).
        if let Some(t) = p.subscriber.and_then(|id| self.transports.get_mut(&id)) {
            let report = t.pc.get_stats(now, StatsSelector::None);
            let sent: HashMap<u32, u64> = report
                .outbound_rtp_streams()
                .map(|o| {
                    let sent = &o.sent_rtp_stream_stats;
                    (sent.rtp_stream_stats.ssrc, sent.packets_sent)
                })
                .collect();
            for entry in report.iter() {
                let RTCStatsReportEntry::RemoteInboundRtp(r) = entry else {
                    continue;
                };
                let received = &r.received_rtp_stream_stats;
                let ssrc = received.rtp_stream_stats.ssrc;
                let now_counts = StreamCounters {
                    packets: sent.get(&ssrc).copied().unwrap_or(0),
                    lost: received.packets_lost,
                };
                let before = p.stream_counters.get(&ssrc).copied().unwrap_or_default();
                counters.insert(ssrc, now_counts);
                let sent_now = now_counts.packets.saturating_sub(before.packets);
                if sent_now == 0 {
                    continue;
                }
                let kind = kind_of(received.rtp_stream_stats.kind);
                streams.push(StreamWindow {
                    kind,
                    packets_expected: sent_now,
                    packets_lost: grew(now_counts.lost, before.lost).min(sent_now),
                    jitter_ms: jitter_ms(kind, received.jitter),
                    rtt_ms: (r.round_trip_time_measurements > 0)
                        .then_some(r.round_trip_time * 1000.0),
                    opus_fec: kind == TrackKind::Audio,
                    bitrate: None,
                });
            }
        }
        p.stream_counters = counters;
        let Some(quality) = p.quality.end_window(&streams) else {
            return;
        };
        let event = ParticipantEvent::ConnectionQuality {
            updates: vec![ConnectionQualityInfo {
                participant_sid: sid.to_owned(),
                quality,
            }],
        };
        // It, and whoever receives any of its tracks.
        let own: Vec<&String> = room
            .producers
            .values()
            .filter(|producer| producer.owner_sid == sid)
            .map(|producer| &producer.sid)
            .collect();
        for other in room.participants.values() {
            let subscribed = own.iter().any(|t| other.subscriptions.contains_key(*t));
            if other.sid == sid || subscribed {
                self.outbox.send(&other.sid, event.clone());
            }
        }
    }
}
