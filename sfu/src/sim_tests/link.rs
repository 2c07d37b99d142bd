//! A bottleneck link in one direction: datagrams leave one after another at
//! the link's rate after waiting in a first-in first-out queue of limited
//! size; one that finds the queue full is dropped (tail drop), as a home
//! router's buffer does. Deterministic: no randomness, simulated time only.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub(super) struct Link {
    /// Bits per second; `None`: no limit, every datagram arrives at once.
    rate: Option<u64>,
    /// The most bytes the queue holds, the datagram being sent included.
    queue_limit: usize,
    /// Datagrams not yet fully sent, with when each will have arrived.
    queue: VecDeque<(Instant, BytesMut)>,
    /// When the link finishes sending the last datagram queued.
    busy_until: Option<Instant>,
    /// Bytes delivered so far, and datagrams dropped.
    delivered: u64,
    dropped: u64,
}

impl Link {
    /// A link that takes everything at once.
    pub(super) fn unlimited() -> Link {
        Link {
            rate: None,
            queue_limit: usize::MAX,
            queue: VecDeque::new(),
            busy_until: None,
            delivered: 0,
            dropped: 0,
        }
    }

    /// A link of `bps` bits per second whose queue holds `queue` bytes.
    pub(super) fn capped(bps: u64, queue: usize) -> Link {
        Link {
            rate: Some(bps),
            queue_limit: queue,
            ..Link::unlimited()
        }
    }

    /// From now on the link sends at `bps` (what is queued keeps the
    /// times it was given).
    pub(super) fn set_rate(&mut self, bps: u64) {
        self.rate = Some(bps);
    }

    /// A datagram handed to the link at `now`: queued, or dropped if the
    /// queue is full.
    pub(super) fn send(&mut self, now: Instant, datagram: BytesMut) {
        let Some(bps) = self.rate else {
            self.queue.push_back((now, datagram));
            return;
        };
        let queued: usize = self
            .queue
            .iter()
            .filter(|(arrives, _)| *arrives > now)
            .map(|(_, d)| d.len())
            .sum();
        if queued + datagram.len() > self.queue_limit {
            self.dropped += 1;
            return;
        }
        let starts = self.busy_until.filter(|at| *at > now).unwrap_or(now);
        let takes = Duration::from_nanos(datagram.len() as u64 * 8 * 1_000_000_000 / bps);
        let arrives = starts + takes;
        self.busy_until = Some(arrives);
        self.queue.push_back((arrives, datagram));
    }

    /// The datagrams that have arrived by `now`, in order.
    pub(super) fn arrived(&mut self, now: Instant) -> Vec<BytesMut> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, d)) = self.queue.pop_front() {
                self.delivered += d.len() as u64;
                out.push(d);
            }
        }
        out
    }

    /// Bytes the link has delivered so far.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Datagrams it has dropped so far.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(len: usize) -> BytesMut {
        BytesMut::from(&vec![0u8; len][..])
    }

    #[test]
    fn a_link_sends_at_its_rate_and_drops_what_overflows_its_queue() {
        let t0 = Instant::now();
        // 8 kbit/s: 1,000 bytes a second; the queue holds 2,500 bytes.
        let mut link = Link::capped(8_000, 2_500);
        for _ in 0..3 {
            link.send(t0, datagram(1_000));
        }
        assert_eq!(link.dropped(), 1, "the third does not fit");
        assert!(link.arrived(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(link.arrived(t0 + Duration::from_secs(1)).len(), 1);
        // One has left: room for one more, behind the one being sent.
        link.send(t0 + Duration::from_secs(1), datagram(1_000));
        assert_eq!(link.dropped(), 1);
        assert_eq!(link.arrived(t0 + Duration::from_secs(3)).len(), 2);
        assert_eq!(link.delivered(), 3_000);
        // Idle since: the next one takes its own time only.
        link.send(t0 + Duration::from_secs(10), datagram(500));
        assert_eq!(link.arrived(t0 + Duration::from_millis(10_500)).len(), 1);
    }

    #[test]
    fn a_link_without_a_limit_delivers_at_once() {
        let t0 = Instant::now();
        let mut link = Link::unlimited();
        link.send(t0, datagram(100_000));
        assert_eq!(link.arrived(t0).len(), 1);
    }
}
