//! The mark every synthetic media payload carries, so a receiver knows
//! which publisher track and which packet it holds and when it was sent.
//!
//! Layout, after the codec's own prefix (`MediaKind::prefix_len`):
//! `b"CGLT"`, track id (u32), sequence mark (u32, counted per track from 0),
//! send time (u64, microseconds since the run's epoch), flags (u8: bit 0
//! keyframe). Big-endian.

use super::media::MediaKind;

const MAGIC: [u8; 4] = *b"CGLT";
/// Bytes a mark takes.
pub const MARK_LEN: usize = 21;
const KEYFRAME: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The publisher track, numbered by the load generator.
    pub track: u32,
    /// The packet's place in its track: 0, 1, 2, …
    pub seq: u32,
    /// When the publisher handed it to its peer connection (µs since the epoch).
    pub sent_us: u64,
    pub keyframe: bool,
}

impl Mark {
    /// Writes the mark at the start of `out` (at least `MARK_LEN` bytes).
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.track.to_be_bytes());
        out[8..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
        out[20] = if self.keyframe { KEYFRAME } else { 0 };
    }

    /// The mark at the start of `p`, if there is one.
    pub fn read(p: &[u8]) -> Option<Mark> {
        if p.len() < MARK_LEN || p[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&p[12..20]);
        Some(Mark {
            track: u32_at(4),
            seq: u32_at(8),
            sent_us: u64::from_be_bytes(sent),
            keyframe: p[20] & KEYFRAME != 0,
        })
    }

    /// The mark in an RTP payload of `kind`, after the codec prefix.
    pub fn find(kind: MediaKind, payload: &[u8]) -> Option<Mark> {
        payload.get(kind.prefix_len()..).and_then(Mark::read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_written() {
        let mark = Mark {
            track: 7,
            seq: 0xdead_beef,
            sent_us: 1 << 40,
            keyframe: true,
        };
        let mut buf = [0u8; 40];
        mark.write(&mut buf[4..]);
        assert_eq!(Mark::find(MediaKind::Video, &buf), Some(mark));
        assert_eq!(Mark::find(MediaKind::Audio, &buf), None);
        assert_eq!(Mark::read(&buf[4..4 + MARK_LEN - 1]), None, "too short");
    }
}
