//! Connection quality of one participant (excellent / good / poor / lost),
//! scored from a window of a few seconds of its streams' statistics.
//!
//! Per stream, with loss % = 100 × lost / expected:
//!
//! * effective delay = RTT / 2 + 2 × jitter (ms; an unknown RTT counts 0);
//! * delay penalty = delay / 40 up to 160 ms, (delay − 120) / 10 beyond
//!   (the two meet at 4 points for 160 ms);
//! * loss penalty = loss % × 8 for audio (÷ 1.5 when Opus in-band FEC is
//!   on), loss % × 10 for video;
//! * network score = 100 − delay penalty − loss penalty, at least 0;
//! * for video with a known expected bitrate, bitrate score =
//!   100 − 20 × ln(expected / received), within 0..=100;
//! * a stream that received no packet in the window scores 0.
//!
//! A stream scores the lower of its network and bitrate scores, the
//! participant the lowest of its streams. A score above 80 is excellent,
//! above 40 good, above 20 poor, anything else lost.
//!
//! [`QualityTracker`] adds hysteresis: the level it reports moves only after
//! two windows in a row land on the same side of it, so one bad window on a
//! mobile link does not flip the indicator back and forth.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::TrackKind;

/// How much statistics one window should hold: long enough that a few lost
/// packets on a mobile link are a percentage, not a verdict.
pub const QUALITY_WINDOW: Duration = Duration::from_secs(5);

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionQuality {
    // Worst first, so `<` means worse.
    Lost,
    Poor,
    Good,
    Excellent,
}

impl ConnectionQuality {
    /// The level of a 0..=100 score.
    pub fn from_score(score: f64) -> ConnectionQuality {
        if score > 80.0 {
            ConnectionQuality::Excellent
        } else if score > 40.0 {
            ConnectionQuality::Good
        } else if score > 20.0 {
            ConnectionQuality::Poor
        } else {
            ConnectionQuality::Lost
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionQuality::Excellent => "excellent",
            ConnectionQuality::Good => "good",
            ConnectionQuality::Poor => "poor",
            ConnectionQuality::Lost => "lost",
        }
    }
}

/// What one stream did during one window. The caller leaves out streams
/// that are not meant to flow (muted tracks, paused layers): a stream that
/// is listed and received nothing counts as lost.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamWindow {
    pub kind: TrackKind,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    /// Opus in-band FEC is in use (audio only): a lost packet is often
    /// rebuilt from the next one, so loss hurts less.
    pub opus_fec: bool,
    /// Video only: the bitrate received against what its layer should carry.
    pub bitrate: Option<VideoBitrate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoBitrate {
    pub received_bps: u64,
    pub expected_bps: u64,
}

impl StreamWindow {
    /// The stream's score, 0..=100 (see the module doc).
    pub fn score(&self) -> f64 {
        let lost = self.packets_lost.min(self.packets_expected);
        if self.packets_expected == lost {
            // Nothing arrived (or nothing was even expected): the stream is gone.
            return 0.0;
        }
        let loss_percent = lost as f64 * 100.0 / self.packets_expected as f64;
        // `max(0.0)` also turns a NaN from a broken stats source into 0.
        let delay = self.rtt_ms.unwrap_or(0.0).max(0.0) / 2.0 + 2.0 * self.jitter_ms.max(0.0);
        let delay_penalty = if delay <= 160.0 {
            delay / 40.0
        } else {
            (delay - 120.0) / 10.0
        };
        let loss_penalty = match self.kind {
            TrackKind::Audio if self.opus_fec => loss_percent * 8.0 / 1.5,
            TrackKind::Audio => loss_percent * 8.0,
            TrackKind::Video => loss_percent * 10.0,
        };
        let network = (100.0 - delay_penalty - loss_penalty).max(0.0);
        match (self.kind, self.bitrate) {
            (TrackKind::Video, Some(bitrate)) => network.min(bitrate.score()),
            _ => network,
        }
    }
}

impl VideoBitrate {
    /// 100 − 20 × ln(expected / received), within 0..=100; 100 when nothing
    /// is expected. Logarithmic because encoders undershoot their target on
    /// still scenes: half the expected rate still scores 86 (excellent), a
    /// tenth 54 (good); only a starved stream drops further.
    pub fn score(self) -> f64 {
        if self.expected_bps == 0 {
            return 100.0;
        }
        if self.received_bps == 0 {
            return 0.0;
        }
        let shortfall = self.expected_bps as f64 / self.received_bps as f64;
        (100.0 - 20.0 * shortfall.ln()).clamp(0.0, 100.0)
    }
}

/// The participant's score: its worst stream's, since one broken stream is
/// what the others in the call notice. `None` for a window with no streams.
pub fn participant_score(streams: &[StreamWindow]) -> Option<f64> {
    streams.iter().map(StreamWindow::score).reduce(f64::min)
}

/// One participant's reported quality, with hysteresis.
#[derive(Debug, Default)]
pub struct QualityTracker {
    reported: Option<ConnectionQuality>,
    /// The level the last window measured, when it differed from
    /// `reported` and is not confirmed yet.
    unconfirmed: Option<ConnectionQuality>,
}

impl QualityTracker {
    pub fn new() -> Self {
        QualityTracker::default()
    }

    /// The level reported last, `None` before the first window.
    pub fn quality(&self) -> Option<ConnectionQuality> {
        self.reported
    }

    /// Scores one window of the participant's streams. Returns the new
    /// level when the reported one changes:
    ///
    /// * the first window is reported as measured (nothing to flap against);
    /// * afterwards the level moves only when two windows in a row measure
    ///   a level on the same side of the reported one (both better or both
    ///   worse), and then to the nearer of the two, the one both support;
    /// * a window with no streams tells nothing and changes nothing.
    pub fn end_window(&mut self, streams: &[StreamWindow]) -> Option<ConnectionQuality> {
        let measured = ConnectionQuality::from_score(participant_score(streams)?);
        let Some(reported) = self.reported else {
            self.reported = Some(measured);
            return Some(measured);
        };
        if measured == reported {
            self.unconfirmed = None;
            return None;
        }
        match self.unconfirmed {
            Some(previous) if (previous > reported) == (measured > reported) => {
                let confirmed = if measured > reported {
                    previous.min(measured)
                } else {
                    previous.max(measured)
                };
                self.reported = Some(confirmed);
                // A window that went further counts as the first step of the next move.
                self.unconfirmed = (measured != confirmed).then_some(measured);
                Some(confirmed)
            }
            _ => {
                self.unconfirmed = Some(measured);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(expected: u64, lost: u64) -> StreamWindow {
        StreamWindow {
            kind: TrackKind::Audio,
            packets_expected: expected,
            packets_lost: lost,
            jitter_ms: 5.0,
            rtt_ms: Some(100.0),
            opus_fec: false,
            bitrate: None,
        }
    }

    fn video(expected: u64, lost: u64) -> StreamWindow {
        StreamWindow {
            kind: TrackKind::Video,
            ..audio(expected, lost)
        }
    }

    /// 40 ms RTT, 5 ms jitter, no loss: delay 30 ms → penalty 0.75.
    fn clean_video() -> StreamWindow {
        StreamWindow {
            rtt_ms: Some(40.0),
            ..video(2000, 0)
        }
    }

    /// 2 % of 1000 video packets lost at 100 ms RTT, 5 ms jitter: 78.5, good.
    fn lossy_video() -> StreamWindow {
        video(1000, 20)
    }

    fn assert_score(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "score {actual}, expected {expected}"
        );
    }

    #[test]
    fn clean_link_scores_99_25_and_is_excellent() {
        assert_score(clean_video().score(), 99.25);
        let mut tracker = QualityTracker::new();
        assert_eq!(
            tracker.end_window(&[clean_video()]),
            Some(ConnectionQuality::Excellent)
        );
    }

    #[test]
    fn two_percent_video_loss_at_100_ms_rtt_scores_78_5_and_is_good() {
        // Delay 100 / 2 + 2 × 5 = 60 ms → 1.5; loss 2 % × 10 = 20.
        assert_score(lossy_video().score(), 78.5);
        assert_eq!(
            ConnectionQuality::from_score(lossy_video().score()),
            ConnectionQuality::Good
        );
    }

    #[test]
    fn ten_percent_audio_loss_scores_18_5_and_is_lost() {
        // Delay 60 ms → 1.5; loss 10 % × 8 = 80.
        let score = audio(500, 50).score();
        assert_score(score, 18.5);
        assert_eq!(
            ConnectionQuality::from_score(score),
            ConnectionQuality::Lost
        );
    }

    #[test]
    fn opus_fec_divides_the_audio_loss_penalty_by_1_5() {
        let with_fec = StreamWindow {
            opus_fec: true,
            ..audio(500, 50)
        };
        // 100 − 1.5 − 80 / 1.5 = 45.1666…
        assert_score(with_fec.score(), 45.166_666_666_666_67);
        assert_eq!(
            ConnectionQuality::from_score(with_fec.score()),
            ConnectionQuality::Good
        );
    }

    #[test]
    fn delay_over_160_ms_costs_a_point_per_10_ms_beyond_120() {
        let slow = StreamWindow {
            rtt_ms: Some(300.0),
            jitter_ms: 20.0,
            ..audio(500, 0)
        };
        // Delay 150 + 40 = 190 ms → (190 − 120) / 10 = 7.
        assert_score(slow.score(), 93.0);
        let unknown_rtt = StreamWindow {
            rtt_ms: None,
            ..audio(500, 0)
        };
        // Jitter alone: 10 ms → 0.25.
        assert_score(unknown_rtt.score(), 99.75);
    }

    #[test]
    fn window_without_packets_scores_0_and_is_lost() {
        let silent = audio(0, 0);
        let all_lost = video(300, 300);
        assert_score(silent.score(), 0.0);
        assert_score(all_lost.score(), 0.0);
        let mut tracker = QualityTracker::new();
        assert_eq!(tracker.end_window(&[silent]), Some(ConnectionQuality::Lost));
    }

    #[test]
    fn video_bitrate_score_is_logarithmic_in_the_shortfall() {
        let at = |received_bps| StreamWindow {
            bitrate: Some(VideoBitrate {
                received_bps,
                expected_bps: 1_000_000,
            }),
            ..clean_video()
        };
        // Above the target the network score (99.25) is the lower one.
        assert_score(at(1_500_000).score(), 99.25);
        // Half: 100 − 20 ln 2 = 86.137…; a tenth: 100 − 20 ln 10 = 53.948…
        assert_score(at(500_000).score(), 100.0 - 20.0 * 2f64.ln());
        assert_score(at(100_000).score(), 100.0 - 20.0 * 10f64.ln());
        assert_eq!(
            ConnectionQuality::from_score(at(500_000).score()),
            ConnectionQuality::Excellent
        );
        assert_eq!(
            ConnectionQuality::from_score(at(100_000).score()),
            ConnectionQuality::Good
        );
        // The bitrate of an audio stream is not scored.
        let audio_with_bitrate = StreamWindow {
            bitrate: at(1).bitrate,
            ..audio(500, 0)
        };
        assert_score(audio_with_bitrate.score(), 98.5);
    }

    #[test]
    fn worst_stream_sets_the_participant_score() {
        let streams = [clean_video(), lossy_video(), audio(500, 0)];
        assert_score(participant_score(&streams).unwrap(), 78.5);
        let mut tracker = QualityTracker::new();
        assert_eq!(tracker.end_window(&streams), Some(ConnectionQuality::Good));
    }

    #[test]
    fn one_bad_window_after_good_ones_keeps_the_level_and_two_change_it() {
        let mut tracker = QualityTracker::new();
        assert_eq!(
            tracker.end_window(&[clean_video()]),
            Some(ConnectionQuality::Excellent)
        );
        assert_eq!(tracker.end_window(&[clean_video()]), None);

        // One dip, then back: nothing to report.
        assert_eq!(tracker.end_window(&[lossy_video()]), None);
        assert_eq!(tracker.end_window(&[clean_video()]), None);
        assert_eq!(tracker.quality(), Some(ConnectionQuality::Excellent));

        // Two in a row: the level drops on the second.
        assert_eq!(tracker.end_window(&[lossy_video()]), None);
        assert_eq!(
            tracker.end_window(&[lossy_video()]),
            Some(ConnectionQuality::Good)
        );
        // And recovery takes two clean windows as well.
        assert_eq!(tracker.end_window(&[clean_video()]), None);
        assert_eq!(
            tracker.end_window(&[clean_video()]),
            Some(ConnectionQuality::Excellent)
        );
    }

    #[test]
    fn two_worse_windows_of_different_levels_move_to_the_nearer_level() {
        let mut tracker = QualityTracker::new();
        tracker.end_window(&[clean_video()]);
        // 5 % video loss: 100 − 1.5 − 50 = 48.5, good; then nothing at all.
        let good = video(1000, 50);
        let lost = video(1000, 1000);
        assert_eq!(tracker.end_window(std::slice::from_ref(&good)), None);
        assert_eq!(
            tracker.end_window(std::slice::from_ref(&lost)),
            Some(ConnectionQuality::Good)
        );
        // The window that measured lost was the first of the next step.
        assert_eq!(
            tracker.end_window(std::slice::from_ref(&lost)),
            Some(ConnectionQuality::Lost)
        );
    }

    #[test]
    fn window_without_streams_changes_nothing() {
        let mut tracker = QualityTracker::new();
        assert_eq!(tracker.end_window(&[]), None);
        assert_eq!(tracker.quality(), None);
        tracker.end_window(&[clean_video()]);
        assert_eq!(tracker.end_window(&[]), None);
        assert_eq!(tracker.quality(), Some(ConnectionQuality::Excellent));
    }

    #[test]
    fn levels_split_above_80_40_and_20() {
        use ConnectionQuality::*;
        let cases = [
            (80.01, Excellent),
            (80.0, Good),
            (40.01, Good),
            (40.0, Poor),
            (20.01, Poor),
            (20.0, Lost),
            (0.0, Lost),
        ];
        for (score, level) in cases {
            assert_eq!(ConnectionQuality::from_score(score), level, "score {score}");
        }
    }

    #[test]
    fn quality_names_are_lower_case_in_as_str_and_serde() {
        use ConnectionQuality::*;
        for (level, name) in [
            (Excellent, "excellent"),
            (Good, "good"),
            (Poor, "poor"),
            (Lost, "lost"),
        ] {
            assert_eq!(level.as_str(), name);
            assert_eq!(
                serde_json::to_string(&level).unwrap(),
                format!("\"{name}\"")
            );
        }
    }
}
