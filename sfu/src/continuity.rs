//! Whether a publisher's video stream goes on where it left off.
//!
//! When a publisher's link dies for a while (a phone changing networks),
//! the packets it sent meanwhile are gone for good: the server never had
//! them, and by the time the stream comes back they are too old to ask for
//! (module `superseded_nacks`). What comes first on the new path is usually
//! a frame that depends on the lost ones. Forwarded as it is, a subscriber
//! sees a hole it asks to have filled in vain and cannot decode anything
//! until its own keyframe request (sent only after its NACKs fail) has gone
//! all the way to the publisher and back. Seen in the network-move browser
//! test: the subscriber decoded nothing for 2.5 s after the publisher's
//! stream was back.
//!
//! [`Continuity`] tells, packet by packet, when a stream *resumes after an
//! outage*: it was silent for [`OUTAGE`] and comes back with packets
//! missing. The shard then restarts the stream's consumers at its next
//! keyframe (their numbering closes up over the hole) and asks for that
//! keyframe at once.

use std::time::{Duration, Instant};

/// Silence after which missing packets are taken as lost with the link, not
/// as the ordinary loss NACKs repair. A camera stream sends a frame every
/// 33–100 ms; a still screen share may send one a second, and a packet lost
/// just before such a pause costs at most one early keyframe.
pub(crate) const OUTAGE: Duration = Duration::from_millis(500);

/// What one packet was, for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Newer than any before it. `after_outage`: the stream was silent for
    /// `OUTAGE` and packets are missing right before this one.
    Newer { after_outage: bool },
    /// Not newer than the newest so far: a retransmission or a reordered
    /// packet, which says nothing about whether the stream is still sent.
    Older,
}

/// The newest packet of one stream (one SSRC).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Continuity {
    highest_seq: u16,
    /// When the packet with `highest_seq` arrived.
    newest_at: Instant,
}

impl Continuity {
    /// A stream whose first packet, `seq`, arrived at `now`.
    pub(crate) fn new(now: Instant, seq: u16) -> Continuity {
        Continuity {
            highest_seq: seq,
            newest_at: now,
        }
    }

    /// When the newest packet arrived: the stream is being sent as long as
    /// this keeps moving (retransmissions do not move it).
    pub(crate) fn newest_at(&self) -> Instant {
        self.newest_at
    }

    /// Packet `seq` arrived at `now`.
    pub(crate) fn observe(&mut self, now: Instant, seq: u16) -> Arrival {
        // Serial-number order (RFC 1982): newer when less than half the
        // sequence space ahead.
        let ahead = seq.wrapping_sub(self.highest_seq);
        if ahead == 0 || ahead >= 0x8000 {
            return Arrival::Older;
        }
        let after_outage = ahead > 1 && now.saturating_duration_since(self.newest_at) >= OUTAGE;
        self.highest_seq = seq;
        self.newest_at = now;
        Arrival::Newer { after_outage }
    }
}

/// `continuity` of a stream told of packet `seq`: made on its first packet.
pub(crate) fn observe(continuity: &mut Option<Continuity>, now: Instant, seq: u16) -> Arrival {
    match continuity {
        Some(c) => c.observe(now, seq),
        None => {
            *continuity = Some(Continuity::new(now, seq));
            Arrival::Newer {
                after_outage: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(33);

    #[test]
    fn a_stream_flowing_with_ordinary_loss_never_resumes_after_an_outage() {
        let t0 = Instant::now();
        let mut c = None;
        assert_eq!(
            observe(&mut c, t0, 100),
            Arrival::Newer {
                after_outage: false
            }
        );
        // Two packets lost, the next frame 33 ms later.
        assert_eq!(
            observe(&mut c, t0 + FRAME, 103),
            Arrival::Newer {
                after_outage: false
            }
        );
        // A retransmission of one of them.
        assert_eq!(observe(&mut c, t0 + 2 * FRAME, 101), Arrival::Older);
        assert_eq!(observe(&mut c, t0 + 2 * FRAME, 103), Arrival::Older);
    }

    #[test]
    fn silence_then_a_gap_is_an_outage_but_silence_alone_is_a_pause() {
        let t0 = Instant::now();
        let mut c = Some(Continuity::new(t0, 100));
        // Muted or a still screen: silent, then the very next number.
        assert_eq!(
            observe(&mut c, t0 + Duration::from_secs(3), 101),
            Arrival::Newer {
                after_outage: false
            }
        );
        // Silent for the outage time with 80 packets gone.
        let back = t0 + Duration::from_secs(3) + OUTAGE;
        assert_eq!(
            observe(&mut c, back, 182),
            Arrival::Newer { after_outage: true }
        );
        assert_eq!(c.map(|c| c.newest_at()), Some(back));
        // Just under the outage time: ordinary loss.
        assert_eq!(
            observe(&mut c, back + OUTAGE - Duration::from_millis(1), 190),
            Arrival::Newer {
                after_outage: false
            }
        );
    }

    #[test]
    fn sequence_numbers_are_followed_across_their_wrap() {
        let t0 = Instant::now();
        let mut c = Some(Continuity::new(t0, 65_530));
        assert_eq!(
            observe(&mut c, t0 + OUTAGE, 20),
            Arrival::Newer { after_outage: true }
        );
        assert_eq!(observe(&mut c, t0 + OUTAGE, 65_535), Arrival::Older);
    }
}
