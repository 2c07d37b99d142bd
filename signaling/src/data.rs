//! Data messages between a room's participants (docs/protocol.md, "Data
//! messages"): relayed over the signaling WebSockets, bounded per message
//! and per sender.
//!
//! Over signaling rather than WebRTC data channels: the WebSocket is open
//! already, ordered and reliable, and carries each message to the server
//! once whatever the room's size; data channels would add an SCTP
//! association (and its DCEP negotiation) to every participant's
//! transports on the server for the same result.

use std::time::Duration;

use tokio::time::Instant;

/// Messages a participant may send per second, on average.
pub const DATA_MESSAGES_PER_SECOND: u32 = 20;
/// Messages it may send at once after a quiet spell.
pub const DATA_MESSAGE_BURST: u32 = 40;
/// Payload bytes it may send per second, on average.
pub const DATA_BYTES_PER_SECOND: u32 = 64 * 1024;
/// Payload bytes it may send at once after a quiet spell.
pub const DATA_BYTE_BURST: u32 = 128 * 1024;
/// Reliable messages kept for a participant that is reconnecting; beyond
/// this the oldest are dropped.
pub const MAX_KEPT_WHILE_RECONNECTING: usize = 256;

/// One token bucket: `rate` a second, at most `burst` saved.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn full(rate: u32, burst: u32) -> Bucket {
        Bucket {
            level: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.level = (self.level + self.rate * elapsed.as_secs_f64()).min(self.burst);
    }
}

/// A sender's allowance: messages and payload bytes.
#[derive(Debug, Clone)]
pub struct DataLimiter {
    messages: Bucket,
    bytes: Bucket,
    at: Instant,
}

impl DataLimiter {
    pub fn new(now: Instant) -> DataLimiter {
        DataLimiter {
            messages: Bucket::full(DATA_MESSAGES_PER_SECOND, DATA_MESSAGE_BURST),
            bytes: Bucket::full(DATA_BYTES_PER_SECOND, DATA_BYTE_BURST),
            at: now,
        }
    }

    /// Whether a message of `bytes` payload bytes may go at `now`; if so,
    /// it is counted. A refused one counts nothing.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now.max(self.at);
        self.messages.refill(elapsed);
        self.bytes.refill(elapsed);
        let bytes = bytes as f64;
        if self.messages.level < 1.0 || self.bytes.level < bytes {
            return false;
        }
        self.messages.level -= 1.0;
        self.bytes.level -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_then_the_rate_holds_and_refusals_cost_nothing() {
        let t0 = Instant::now();
        let mut limiter = DataLimiter::new(t0);
        for i in 0..DATA_MESSAGE_BURST {
            assert!(limiter.admit(t0, 10), "message {i} of the burst");
        }
        assert!(!limiter.admit(t0, 10), "the burst is spent");
        assert!(!limiter.admit(t0, 10), "and stays spent");
        // 50 ms later one more message has accrued (20 a second).
        let later = t0 + Duration::from_millis(50);
        assert!(limiter.admit(later, 10));
        assert!(!limiter.admit(later, 10));
        // A second later, 20 more.
        let after = later + Duration::from_secs(1);
        for i in 0..DATA_MESSAGES_PER_SECOND {
            assert!(limiter.admit(after, 10), "message {i} of the second");
        }
        assert!(!limiter.admit(after, 10));
    }

    #[test]
    fn payload_bytes_are_limited_too() {
        let t0 = Instant::now();
        let mut limiter = DataLimiter::new(t0);
        let big = 16 * 1024;
        for i in 0..(DATA_BYTE_BURST as usize / big) {
            assert!(limiter.admit(t0, big), "payload {i}");
        }
        assert!(!limiter.admit(t0, big), "128 KiB spent");
        assert!(
            limiter.admit(t0, 0),
            "an empty payload costs one message only"
        );
        // A quarter second brings 16 KiB back.
        assert!(limiter.admit(t0 + Duration::from_millis(250), big));
    }
}
