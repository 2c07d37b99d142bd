//! Synthetic media: Opus-sized audio frames every 20 ms, and VP8-like video
//! frames at a set frame rate, with a keyframe every few seconds, sized so
//! the stream averages the asked bitrate, and split into packets the way a
//! VP8 packetizer does. Payloads carry a [`Mark`].

use std::time::Duration;

use bytes::Bytes;

use super::payload::{MARK_LEN, Mark};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// Bytes of codec header before the mark: the Opus TOC byte; the VP8
    /// payload descriptor and the 3-byte frame tag.
    pub fn prefix_len(self) -> usize {
        match self {
            MediaKind::Audio => 1,
            MediaKind::Video => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// Most payload bytes in one video packet (fits a 1200-byte MTU with RTP,
/// SRTP and header extensions).
pub const MAX_VIDEO_PAYLOAD: usize = 1100;
/// Opus at 32 kbit/s: 80 bytes every 20 ms.
pub const AUDIO_FRAME_BYTES: usize = 80;
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_FACTOR: usize = 6;

/// One frame's packets: payload lengths, all sharing one RTP timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub keyframe: bool,
    pub packet_lens: Vec<usize>,
    /// RTP timestamp step to the next frame.
    pub timestamp_step: u32,
}

/// Video frame sizes for a bitrate, frame rate and keyframe interval.
#[derive(Debug, Clone)]
pub struct VideoSource {
    fps: u32,
    gop: u32,
    delta_bytes: usize,
    frame: u32,
}

impl VideoSource {
    pub fn new(kbps: u32, fps: u32, keyframe_interval: Duration) -> VideoSource {
        let fps = fps.max(1);
        let gop = ((keyframe_interval.as_secs_f64() * f64::from(fps)).round() as u32).max(1);
        // One GOP is one keyframe and gop-1 delta frames; together they
        // carry the GOP's share of the bitrate.
        let gop_bytes = f64::from(kbps) * 1000.0 / 8.0 * f64::from(gop) / f64::from(fps);
        let units = (KEYFRAME_FACTOR + gop as usize - 1) as f64;
        let delta_bytes = ((gop_bytes / units) as usize).max(MARK_LEN + 4);
        VideoSource {
            fps,
            gop,
            delta_bytes,
            frame: 0,
        }
    }

    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }

    pub fn next_frame(&mut self) -> Frame {
        let keyframe = self.frame.is_multiple_of(self.gop);
        self.frame = self.frame.wrapping_add(1);
        let bytes = if keyframe {
            self.delta_bytes * KEYFRAME_FACTOR
        } else {
            self.delta_bytes
        };
        let packets = bytes.div_ceil(MAX_VIDEO_PAYLOAD).max(1);
        let min = MediaKind::Video.prefix_len() + MARK_LEN;
        let packet_lens = (0..packets)
            .map(|i| {
                // Spread evenly: the first `bytes % packets` get one more.
                let len = bytes / packets + usize::from(i < bytes % packets);
                len.max(min)
            })
            .collect();
        Frame {
            keyframe,
            packet_lens,
            timestamp_step: 90_000 / self.fps,
        }
    }
}

/// One audio frame: one packet.
pub fn audio_frame() -> Frame {
    Frame {
        keyframe: false,
        packet_lens: vec![AUDIO_FRAME_BYTES],
        timestamp_step: 960,
    }
}

/// The payload of one packet of a frame: codec prefix, mark, zero filler.
pub fn payload(kind: MediaKind, mark: &Mark, len: usize, first_of_frame: bool) -> Bytes {
    let prefix = kind.prefix_len();
    let mut v = vec![0u8; len.max(prefix + MARK_LEN)];
    match kind {
        // TOC: config 31 (CELT FB 20 ms), stereo, one frame.
        MediaKind::Audio => v[0] = 0xfc,
        MediaKind::Video => {
            // Payload descriptor: S (start of partition) on a frame's first packet.
            v[0] = if first_of_frame { 0x10 } else { 0x00 };
            if first_of_frame {
                // Frame tag: P = 0 for a keyframe, show_frame = 1.
                v[1] = if mark.keyframe { 0x10 } else { 0x11 };
            }
        }
    }
    mark.write(&mut v[prefix..]);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_frames_average_the_bitrate_with_periodic_keyframes() {
        let mut source = VideoSource::new(1000, 30, Duration::from_secs(3));
        let frames: Vec<Frame> = (0..300).map(|_| source.next_frame()).collect();
        let keyframes: Vec<usize> = (0..300).filter(|i| frames[*i].keyframe).collect();
        assert_eq!(keyframes, vec![0, 90, 180, 270]);
        let bytes: usize = frames[..270].iter().flat_map(|f| &f.packet_lens).sum();
        let kbps = bytes as f64 * 8.0 / 9.0 / 1000.0;
        assert!((kbps - 1000.0).abs() < 10.0, "{kbps} kbit/s");
        assert!(frames[0].packet_lens.len() > frames[1].packet_lens.len());
        assert!(
            frames
                .iter()
                .flat_map(|f| &f.packet_lens)
                .all(|l| *l <= MAX_VIDEO_PAYLOAD)
        );
        assert_eq!(frames[1].timestamp_step, 3000);
    }

    #[test]
    fn payloads_carry_their_mark_after_the_codec_prefix() {
        let mark = Mark {
            track: 3,
            seq: 9,
            sent_us: 12,
            keyframe: true,
        };
        let p = payload(MediaKind::Video, &mark, 1000, true);
        assert_eq!(p.len(), 1000);
        assert_eq!(&p[..2], &[0x10, 0x10]);
        assert_eq!(Mark::find(MediaKind::Video, &p), Some(mark));
        let a = payload(MediaKind::Audio, &mark, 10, false);
        assert_eq!(a.len(), 1 + MARK_LEN, "never shorter than its mark");
        assert_eq!(Mark::find(MediaKind::Audio, &a), Some(mark));
    }
}
