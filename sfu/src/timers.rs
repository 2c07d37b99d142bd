//! When the shard next has work: a min-heap of deadlines keyed by what is
//! due, so a wake-up touches only what is due instead of scanning every
//! transport and room.
//!
//! Entries are never removed early: a deadline that moved later leaves its
//! old entry behind, which fires as a spurious wake-up (the owner checks its
//! own deadline and schedules the real one). To keep the heap small, an
//! owner schedules only a deadline earlier than the one it already has in
//! the heap (`Scheduled`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::transport::TransportId;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A transport's `rtc` timers or its DTLS flight timer.
    Transport(TransportId),
    /// An empty room's close.
    EmptyRoom(String),
    /// A room's next speaker update.
    Speakers(String),
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline (possibly one that has since moved later).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The deadline an owner has in the heap, so it schedules again only when
/// its next deadline comes earlier.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Scheduled(Option<Instant>);

impl Scheduled {
    /// Whether `next` must be pushed: nothing of ours is in the heap, or
    /// what is there is later than `next`.
    pub(crate) fn needs(&mut self, next: Instant) -> bool {
        if self.0.is_some_and(|at| at <= next) {
            return false;
        }
        self.0 = Some(next);
        true
    }

    /// Our entry at `at` came out of the heap.
    pub(crate) fn fired(&mut self, at: Instant) {
        if self.0 == Some(at) {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_timers_come_out_earliest_first_and_later_ones_stay() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_millis(30), Timer::Transport(3));
        timers.schedule(t0 + Duration::from_millis(10), Timer::Transport(1));
        timers.schedule(t0 + Duration::from_millis(20), Timer::EmptyRoom("r".into()));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        let now = t0 + Duration::from_millis(25);
        let due: Vec<Timer> = std::iter::from_fn(|| timers.pop_due(now).map(|(_, t)| t)).collect();
        assert_eq!(due, vec![Timer::Transport(1), Timer::EmptyRoom("r".into())]);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(30)));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn an_owner_pushes_only_a_deadline_earlier_than_the_one_it_has() {
        let t0 = Instant::now();
        let mut scheduled = Scheduled::default();
        assert!(scheduled.needs(t0 + Duration::from_millis(50)));
        assert!(!scheduled.needs(t0 + Duration::from_millis(80)));
        assert!(scheduled.needs(t0 + Duration::from_millis(20)));
        // The 50 ms entry firing is not ours any more; the 20 ms one is.
        scheduled.fired(t0 + Duration::from_millis(50));
        assert!(!scheduled.needs(t0 + Duration::from_millis(30)));
        scheduled.fired(t0 + Duration::from_millis(20));
        assert!(scheduled.needs(t0 + Duration::from_millis(80)));
    }
}
