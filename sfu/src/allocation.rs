//! How one subscriber's downlink is shared among the tracks it receives.
//!
//! The subscriber's browser estimates what its downlink can take and says
//! so in REMB (docs/congestion-control.md). That estimate is split here:
//!
//! 1. Audio first: every audio consumer is given `AUDIO_RESERVE`, whatever
//!    the estimate (a call without voice is worse than a call without
//!    video, and Opus needs little).
//! 2. Then video, by priority (higher first; `update_subscription`), equal
//!    shares within one priority. A video consumer needs at least
//!    `VIDEO_MIN` to be worth sending; when the rest cannot give every
//!    consumer of a priority that much, the lowest-priority ones get
//!    nothing (paused) before the others are starved.
//! 3. One video of the highest priority is never paused: it gets at least
//!    `VIDEO_MIN` whatever the estimate (see `allocate`).
//! 4. Disabled consumers take nothing.
//!
//! Pure: no clock, no I/O; the shard calls it when an estimate arrives.

use crate::session::TrackKind;

/// Bits per second kept for each audio track (Opus voice with FEC, plus
/// headers).
pub(crate) const AUDIO_RESERVE: u64 = 48_000;
/// Least bits per second a video track is worth sending at.
pub(crate) const VIDEO_MIN: u64 = 100_000;

/// One consumer of the subscriber, as allocation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demand {
    pub kind: TrackKind,
    pub priority: u8,
    pub disabled: bool,
}

/// Each consumer's share of `estimate` (bits per second), in the order of
/// `demands`: 0 for one paused for want of bandwidth or disabled.
pub(crate) fn allocate(estimate: u64, demands: &[Demand]) -> Vec<u64> {
    let mut shares = vec![0; demands.len()];
    let mut left = estimate;
    for (share, demand) in shares.iter_mut().zip(demands) {
        if demand.kind == TrackKind::Audio && !demand.disabled {
            *share = AUDIO_RESERVE;
            left = left.saturating_sub(AUDIO_RESERVE);
        }
    }
    let mut priorities: Vec<u8> = demands
        .iter()
        .filter(|d| d.kind == TrackKind::Video && !d.disabled)
        .map(|d| d.priority)
        .collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    for (rank, priority) in priorities.iter().enumerate() {
        let members: Vec<usize> = (0..demands.len())
            .filter(|&i| {
                let d = demands[i];
                d.kind == TrackKind::Video && !d.disabled && d.priority == *priority
            })
            .collect();
        let count = members.len() as u64;
        let lower_wanting = priorities.len() > rank + 1;
        // What this priority gets: an equal share of the rest, but lower
        // priorities keep their minimum when there is enough for both.
        let reserve_below = if lower_wanting {
            let below = demands
                .iter()
                .filter(|d| d.kind == TrackKind::Video && !d.disabled && d.priority < *priority)
                .count() as u64;
            below * VIDEO_MIN
        } else {
            0
        };
        let available = if left >= count * VIDEO_MIN + reserve_below {
            left - reserve_below
        } else {
            left
        };
        let each = available / count;
        if each < VIDEO_MIN {
            // Not enough for all of this priority: the lower ones get
            // nothing, and this one is shared among as many as fit their
            // minimum. But one video of the highest priority always goes,
            // at its minimum if need be: we do not probe, so a subscriber's
            // estimate recovers only from the traffic it receives, and with
            // its only video paused it would stay paused (seen in the
            // capped-downlink browser test).
            let mut fit = (left / VIDEO_MIN).min(count);
            if rank == 0 {
                fit = fit.max(1);
            }
            if let Some(each) = left.checked_div(fit) {
                for &i in members.iter().take(fit as usize) {
                    shares[i] = each.max(VIDEO_MIN);
                }
            }
            return shares;
        }
        for &i in &members {
            shares[i] = each;
        }
        left -= each * count;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio() -> Demand {
        Demand {
            kind: TrackKind::Audio,
            priority: 128,
            disabled: false,
        }
    }

    fn video(priority: u8) -> Demand {
        Demand {
            kind: TrackKind::Video,
            priority,
            disabled: false,
        }
    }

    #[test]
    fn a_one_to_one_call_gives_video_all_but_the_audio_reserve() {
        assert_eq!(
            allocate(500_000, &[audio(), video(128)]),
            vec![48_000, 452_000]
        );
    }

    #[test]
    fn audio_keeps_its_reserve_and_the_only_video_its_minimum_when_the_estimate_is_below_both() {
        assert_eq!(
            allocate(30_000, &[audio(), video(128)]),
            vec![48_000, VIDEO_MIN]
        );
        assert_eq!(
            allocate(119_000, &[audio(), video(128)]),
            vec![48_000, VIDEO_MIN]
        );
    }

    #[test]
    fn equal_priorities_share_equally() {
        assert_eq!(
            allocate(648_000, &[audio(), video(128), video(128), video(128)]),
            vec![48_000, 200_000, 200_000, 200_000]
        );
    }

    #[test]
    fn the_higher_priority_is_served_first_and_the_lower_keeps_its_minimum() {
        // 1 Mbit/s for a speaker (200) and two thumbnails (100).
        assert_eq!(
            allocate(1_000_000, &[video(100), video(200), video(100)]),
            vec![100_000, 800_000, 100_000]
        );
    }

    #[test]
    fn far_short_of_bandwidth_one_top_priority_video_still_goes_at_its_minimum() {
        assert_eq!(
            allocate(60_000, &[video(100), video(200), video(200)]),
            vec![0, VIDEO_MIN, 0]
        );
    }

    #[test]
    fn short_of_bandwidth_the_lowest_priority_is_paused_before_the_higher_is_starved() {
        // 250 kbit/s: the speaker gets it all, the thumbnails nothing.
        assert_eq!(
            allocate(250_000, &[video(100), video(200), video(100)]),
            vec![0, 250_000, 0]
        );
    }

    #[test]
    fn within_one_priority_only_as_many_as_fit_their_minimum_are_sent() {
        assert_eq!(
            allocate(250_000, &[video(128), video(128), video(128)]),
            vec![125_000, 125_000, 0]
        );
    }

    #[test]
    fn disabled_consumers_take_nothing() {
        let mut hidden = video(128);
        hidden.disabled = true;
        let mut muted_audio = audio();
        muted_audio.disabled = true;
        assert_eq!(
            allocate(400_000, &[muted_audio, hidden, video(128)]),
            vec![0, 0, 400_000]
        );
    }
}
