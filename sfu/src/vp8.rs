//! The VP8 RTP payload descriptor (RFC 7741 §4.2) and what a consumer does
//! with it: spot a keyframe start, read a keyframe's size, and keep picture
//! ids continuous when it switches between simulcast layers.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (required)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (present if X)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (present if I; M=1: 15-bit id, one more byte)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   |
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (present if L)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (present if T or K)
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! Each simulcast layer is its own VP8 stream with its own picture id and
//! TL0PICIDX counters. A receiver uses picture ids to tell lost pictures from
//! late ones (libwebrtc's frame-reference finder), so when a consumer moves
//! from one layer to another the ids it sends must carry on from the last
//! ones sent rather than jump to the new layer's counters.

#![allow(dead_code)] // wired by the consumer

use bytes::Bytes;

/// A picture id as the descriptor carries it: the M bit picks the width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureId {
    /// M=0: 7 bits.
    Short(u8),
    /// M=1: 15 bits.
    Long(u16),
}

impl PictureId {
    fn value(self) -> u16 {
        match self {
            PictureId::Short(v) => u16::from(v),
            PictureId::Long(v) => v,
        }
    }

    /// 2^bits: the picture id counts modulo this.
    fn modulus(self) -> u16 {
        match self {
            PictureId::Short(_) => 1 << 7,
            PictureId::Long(_) => 1 << 15,
        }
    }

    /// The id of the same width as `self` holding `value` modulo its width.
    fn with_value(self, value: u16) -> PictureId {
        match self {
            PictureId::Short(_) => PictureId::Short((value & 0x7F) as u8),
            PictureId::Long(_) => PictureId::Long(value & 0x7FFF),
        }
    }
}

/// A parsed VP8 payload descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame is not used as a reference by any other frame.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: which partition this packet's first byte belongs to.
    pub partition_index: u8,
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    /// TID, when the T bit is set.
    pub temporal_id: Option<u8>,
    /// Y: the frame depends only on the base temporal layer (meaningful with T).
    pub layer_sync: bool,
    /// KEYIDX, when the K bit is set.
    pub key_idx: Option<u8>,
    /// The descriptor's length: the VP8 payload starts at this offset.
    pub len: usize,
    /// Where the picture id and TL0PICIDX sit, for rewriting in place.
    picture_id_at: usize,
    tl0_pic_idx_at: usize,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the front of an RTP payload; `None` if the
    /// payload is too short for the fields its flags announce.
    pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
        let first = *payload.first()?;
        let mut desc = Vp8Descriptor {
            non_reference: first & 0x20 != 0,
            start_of_partition: first & 0x10 != 0,
            partition_index: first & 0x07,
            picture_id: None,
            tl0_pic_idx: None,
            temporal_id: None,
            layer_sync: false,
            key_idx: None,
            len: 1,
            picture_id_at: 0,
            tl0_pic_idx_at: 0,
        };
        if first & 0x80 == 0 {
            return Some(desc);
        }
        let ext = *payload.get(1)?;
        let mut at = 2;
        if ext & 0x80 != 0 {
            let b = *payload.get(at)?;
            desc.picture_id_at = at;
            if b & 0x80 != 0 {
                let low = *payload.get(at + 1)?;
                desc.picture_id =
                    Some(PictureId::Long((u16::from(b & 0x7F) << 8) | u16::from(low)));
                at += 2;
            } else {
                desc.picture_id = Some(PictureId::Short(b));
                at += 1;
            }
        }
        if ext & 0x40 != 0 {
            desc.tl0_pic_idx_at = at;
            desc.tl0_pic_idx = Some(*payload.get(at)?);
            at += 1;
        }
        let has_tid = ext & 0x20 != 0;
        let has_keyidx = ext & 0x10 != 0;
        if has_tid || has_keyidx {
            let b = *payload.get(at)?;
            if has_tid {
                desc.temporal_id = Some(b >> 6);
                desc.layer_sync = b & 0x20 != 0;
            }
            if has_keyidx {
                desc.key_idx = Some(b & 0x1F);
            }
            at += 1;
        }
        desc.len = at;
        Some(desc)
    }
}

/// Whether this RTP payload is the first packet of a VP8 keyframe: it starts
/// partition 0 (S=1, PID=0) and the frame tag's P bit (inverse key frame
/// flag, RFC 6386 §9.1) is 0.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(desc) = Vp8Descriptor::parse(payload) else {
        return false;
    };
    desc.start_of_partition
        && desc.partition_index == 0
        && payload.get(desc.len).is_some_and(|tag| tag & 0x01 == 0)
}

/// The width and height of a keyframe, read from the keyframe header that
/// follows the 3-byte frame tag (RFC 6386 §9.1): start code 9d 01 2a, then
/// 16-bit little-endian width and height whose top 2 bits are a scaling
/// hint, not part of the size.
pub fn keyframe_dimensions(payload: &[u8]) -> Option<(u16, u16)> {
    if !is_keyframe_start(payload) {
        return None;
    }
    let frame = &payload[Vp8Descriptor::parse(payload)?.len..];
    let header = frame.get(3..10)?;
    if header[..3] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[3], header[4]]) & 0x3FFF;
    let height = u16::from_le_bytes([header[5], header[6]]) & 0x3FFF;
    Some((width, height))
}

/// Keeps one consumer's outgoing VP8 picture ids and TL0PICIDX continuous
/// across layer switches.
///
/// Within one source (one simulcast layer's SSRC) ids map by a constant
/// offset, so reordered and retransmitted packets get the ids they would
/// have had in order. When the source changes (or after [`rebase`]) the
/// first packet's ids become the last ids sent plus one.
///
/// The width of the picture id is kept as the source sends it: growing or
/// shrinking the field would move the VP8 payload, so it could not be done
/// in place. If a switch goes between a 7-bit and a 15-bit source, ids stay
/// continuous modulo 128 (the narrower width). Chromium sends 15-bit ids on
/// every simulcast layer, so in practice the width never changes.
///
/// [`rebase`]: PictureIdRewriter::rebase
#[derive(Debug, Default)]
pub struct PictureIdRewriter {
    /// The source the offsets apply to; `None` until the first packet and
    /// after a rebase.
    source: Option<u32>,
    picture_id_offset: u16,
    tl0_offset: u8,
    /// Whether the offsets have been fixed yet for the current source (a
    /// source's first packets may lack one field or the other).
    picture_id_set: bool,
    tl0_set: bool,
    /// The newest ids sent.
    last_picture_id: Option<PictureId>,
    last_tl0: Option<u8>,
}

impl PictureIdRewriter {
    pub fn new() -> PictureIdRewriter {
        PictureIdRewriter::default()
    }

    /// The next packet starts a new mapping, continuing from the last ids
    /// sent: call it when the consumer resumes after a pause (same source,
    /// but its counters moved on while nothing was sent).
    pub fn rebase(&mut self) {
        self.source = None;
    }

    /// Rewrites the picture id and TL0PICIDX of a packet from `src_ssrc` in
    /// place. Call it only for packets the consumer sends, in the order it
    /// sends them; the first packet from a new source must be the one its
    /// switch started at (a keyframe start). Returns false, leaving the
    /// payload as it was, if it has no valid descriptor.
    pub fn rewrite(&mut self, src_ssrc: u32, payload: &mut [u8]) -> bool {
        let Some(desc) = Vp8Descriptor::parse(payload) else {
            return false;
        };
        let (picture_id, tl0) = self.map(src_ssrc, &desc);
        write_ids(&desc, payload, picture_id, tl0);
        true
    }

    /// [`rewrite`](Self::rewrite) for an immutable payload: copies it only if
    /// an id actually changes, which is never the case before the first
    /// switch.
    pub fn rewrite_bytes(&mut self, src_ssrc: u32, payload: Bytes) -> Bytes {
        let Some(desc) = Vp8Descriptor::parse(&payload) else {
            return payload;
        };
        let (picture_id, tl0) = self.map(src_ssrc, &desc);
        if picture_id == desc.picture_id && tl0 == desc.tl0_pic_idx {
            return payload;
        }
        let mut copy = payload.to_vec();
        write_ids(&desc, &mut copy, picture_id, tl0);
        Bytes::from(copy)
    }

    /// The outgoing ids for this packet, updating the mapping.
    fn map(&mut self, src_ssrc: u32, desc: &Vp8Descriptor) -> (Option<PictureId>, Option<u8>) {
        if self.source != Some(src_ssrc) {
            self.source = Some(src_ssrc);
            self.picture_id_set = false;
            self.tl0_set = false;
        }

        let picture_id = desc.picture_id.map(|src| {
            if !self.picture_id_set {
                self.picture_id_set = true;
                self.picture_id_offset = match self.last_picture_id {
                    Some(last) => last.value().wrapping_add(1).wrapping_sub(src.value()),
                    None => 0,
                };
            }
            let out = src.with_value(src.value().wrapping_add(self.picture_id_offset));
            let newer = match self.last_picture_id {
                Some(last) => {
                    let m = out.modulus();
                    let ahead = out.value().wrapping_sub(last.value()) & (m - 1);
                    ahead != 0 && ahead < m / 2
                }
                None => true,
            };
            if newer {
                self.last_picture_id = Some(out);
            }
            out
        });

        let tl0 = desc.tl0_pic_idx.map(|src| {
            if !self.tl0_set {
                self.tl0_set = true;
                self.tl0_offset = match self.last_tl0 {
                    Some(last) => last.wrapping_add(1).wrapping_sub(src),
                    None => 0,
                };
            }
            let out = src.wrapping_add(self.tl0_offset);
            let newer = self
                .last_tl0
                .is_none_or(|last| (1..128).contains(&out.wrapping_sub(last)));
            if newer {
                self.last_tl0 = Some(out);
            }
            out
        });

        (picture_id, tl0)
    }
}

fn write_ids(
    desc: &Vp8Descriptor,
    payload: &mut [u8],
    picture_id: Option<PictureId>,
    tl0: Option<u8>,
) {
    // parse() checked these offsets against this very payload.
    match picture_id {
        Some(PictureId::Short(v)) => payload[desc.picture_id_at] = v & 0x7F,
        Some(PictureId::Long(v)) => {
            payload[desc.picture_id_at] = 0x80 | (v >> 8) as u8;
            payload[desc.picture_id_at + 1] = v as u8;
        }
        None => {}
    }
    if let Some(v) = tl0 {
        payload[desc.tl0_pic_idx_at] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit), L and T set, then `rest`.
    fn full(start: bool, picture_id: u16, tl0: u8, tid: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80 | if start { 0x10 } else { 0 },
            0xE0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            tid << 6,
        ];
        p.extend_from_slice(rest);
        p
    }

    /// The first bytes of a 640x360 keyframe: frame tag (P=0), start code,
    /// width and height (with a scaling hint in the top bits of the width).
    const KEYFRAME: [u8; 10] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0x68, 0x01];
    /// The first bytes of an interframe: frame tag with P=1.
    const INTERFRAME: [u8; 3] = [0x31, 0x02, 0x00];

    #[test]
    fn parses_the_minimal_descriptor() {
        let d = Vp8Descriptor::parse(&[0x10, 0xAA]).unwrap();
        assert!(d.start_of_partition);
        assert!(!d.non_reference);
        assert_eq!(d.partition_index, 0);
        assert_eq!(d.picture_id, None);
        assert_eq!(d.len, 1);

        let d = Vp8Descriptor::parse(&[0x23]).unwrap();
        assert!(d.non_reference);
        assert!(!d.start_of_partition);
        assert_eq!(d.partition_index, 3);
    }

    #[test]
    fn parses_every_extension_field() {
        let p = [0x90, 0xF0, 0x81, 0x23, 0x07, 0b1011_0101, 0xAA];
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(0x0123)));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, Some(0x15));
        assert_eq!(d.len, 6);

        // 7-bit picture id, K without T.
        let d = Vp8Descriptor::parse(&[0x80, 0x90, 0x45, 0x1F]).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Short(0x45)));
        assert_eq!(d.tl0_pic_idx, None);
        assert_eq!(d.temporal_id, None);
        assert_eq!(d.key_idx, Some(0x1F));
        assert_eq!(d.len, 4);
    }

    #[test]
    fn truncated_descriptors_are_refused() {
        assert_eq!(Vp8Descriptor::parse(&[]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0x80]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0x80, 0x81]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0xC0, 0x01]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0xF0, 0x81, 0x00, 0x07]), None);
        assert!(!is_keyframe_start(&[0x80, 0xF0, 0x81, 0x00, 0x07]));
        assert_eq!(keyframe_dimensions(&[0x90, 0x80, 0x81]), None);
    }

    #[test]
    fn keyframe_start_needs_s_pid_zero_and_the_p_bit_clear() {
        assert!(is_keyframe_start(&full(true, 5, 1, 0, &KEYFRAME)));
        assert!(is_keyframe_start(&[0x10, 0x50]));
        // Not the start of the partition.
        assert!(!is_keyframe_start(&full(false, 5, 1, 0, &KEYFRAME)));
        // Start of partition 1.
        assert!(!is_keyframe_start(&[0x11, 0x50]));
        // An interframe.
        assert!(!is_keyframe_start(&full(true, 5, 1, 0, &INTERFRAME)));
        // Nothing after the descriptor.
        assert!(!is_keyframe_start(&full(true, 5, 1, 0, &[])));
        assert!(!is_keyframe_start(&[0x10]));
        assert!(!is_keyframe_start(&[]));
    }

    #[test]
    fn reads_keyframe_dimensions() {
        assert_eq!(
            keyframe_dimensions(&full(true, 5, 1, 0, &KEYFRAME)),
            Some((640, 360))
        );
        let mut no_start_code = KEYFRAME;
        no_start_code[4] = 0x02;
        assert_eq!(
            keyframe_dimensions(&full(true, 5, 1, 0, &no_start_code)),
            None
        );
        assert_eq!(
            keyframe_dimensions(&full(true, 5, 1, 0, &KEYFRAME[..9])),
            None
        );
        assert_eq!(keyframe_dimensions(&full(true, 5, 1, 0, &INTERFRAME)), None);
    }

    #[test]
    fn ids_pass_unchanged_before_any_switch() {
        let mut r = PictureIdRewriter::new();
        let original = Bytes::from(full(true, 300, 9, 0, &KEYFRAME));
        let out = r.rewrite_bytes(1, original.clone());
        assert_eq!(out, original);
        // No copy was made.
        assert_eq!(out.as_ptr(), original.as_ptr());
    }

    #[test]
    fn a_layer_switch_continues_picture_id_and_tl0picidx() {
        let mut r = PictureIdRewriter::new();
        let sent = |r: &mut PictureIdRewriter, ssrc, pid, tl0, tid| {
            let mut p = full(true, pid, tl0, tid, &INTERFRAME);
            assert!(r.rewrite(ssrc, &mut p));
            let d = Vp8Descriptor::parse(&p).unwrap();
            (d.picture_id.unwrap(), d.tl0_pic_idx.unwrap())
        };
        // Layer q: pictures 100 (TL0 20), 101 (TID 1, same TL0), 102 (TL0 21).
        assert_eq!(sent(&mut r, 1, 100, 20, 0), (PictureId::Long(100), 20));
        assert_eq!(sent(&mut r, 1, 101, 20, 1), (PictureId::Long(101), 20));
        assert_eq!(sent(&mut r, 1, 102, 21, 0), (PictureId::Long(102), 21));
        // Switch to layer f, whose counters are elsewhere: its keyframe
        // becomes picture 103 with TL0 22, and its later pictures follow.
        assert_eq!(sent(&mut r, 2, 7000, 200, 0), (PictureId::Long(103), 22));
        assert_eq!(sent(&mut r, 2, 7001, 200, 1), (PictureId::Long(104), 22));
        assert_eq!(sent(&mut r, 2, 7002, 201, 0), (PictureId::Long(105), 23));
        // A retransmission of an earlier f packet maps to the same ids.
        assert_eq!(sent(&mut r, 2, 7001, 200, 1), (PictureId::Long(104), 22));
        // Back to q: continues from f's newest.
        assert_eq!(sent(&mut r, 1, 150, 45, 0), (PictureId::Long(106), 24));
    }

    #[test]
    fn picture_id_and_tl0_wrap() {
        let mut r = PictureIdRewriter::new();
        let mut p = full(true, 0x7FFE, 255, 0, &INTERFRAME);
        r.rewrite(1, &mut p);
        let mut p = full(true, 0x7FFF, 255, 1, &INTERFRAME);
        r.rewrite(1, &mut p);
        let mut p = full(true, 10, 3, 0, &KEYFRAME);
        r.rewrite(2, &mut p);
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(0)));
        assert_eq!(d.tl0_pic_idx, Some(0));
        // The M bit and the other fields are untouched.
        assert_eq!(p[..2], [0x90, 0xE0]);
        assert_eq!(p[2] & 0x80, 0x80);
        assert_eq!(p[5], 0);
        assert_eq!(p[6..], KEYFRAME);
    }

    #[test]
    fn rebase_continues_the_same_source_after_a_pause() {
        let mut r = PictureIdRewriter::new();
        let mut p = full(true, 40, 4, 0, &INTERFRAME);
        r.rewrite(1, &mut p);
        r.rebase();
        // The source moved on by 60 pictures while paused.
        let out = r.rewrite_bytes(1, Bytes::from(full(true, 100, 30, 0, &KEYFRAME)));
        let d = Vp8Descriptor::parse(&out).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(41)));
        assert_eq!(d.tl0_pic_idx, Some(5));
    }

    #[test]
    fn a_seven_bit_source_keeps_its_width_and_continues_modulo_128() {
        let mut r = PictureIdRewriter::new();
        let mut p = full(true, 1000, 1, 0, &INTERFRAME);
        r.rewrite(1, &mut p);
        // 1000 mod 128 = 104, so the 7-bit keyframe becomes 105.
        let mut short = vec![0x90, 0x80, 0x33];
        short.extend_from_slice(&KEYFRAME);
        assert!(r.rewrite(2, &mut short));
        assert_eq!(short[2], 105);
        assert_eq!(short.len(), 3 + KEYFRAME.len());
        // And back to 15 bits: one more than 105.
        let mut p = full(true, 20_000, 1, 0, &KEYFRAME);
        r.rewrite(3, &mut p);
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(PictureId::Long(106)));
    }

    #[test]
    fn garbage_is_left_alone_and_never_panics() {
        let mut r = PictureIdRewriter::new();
        let mut empty: [u8; 0] = [];
        assert!(!r.rewrite(1, &mut empty));
        let mut truncated = [0x80, 0xC0, 0x81];
        assert!(!r.rewrite(1, &mut truncated));
        assert_eq!(truncated, [0x80, 0xC0, 0x81]);
        for len in 0..8 {
            for seed in 0..=255u8 {
                let mut p: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i))
                    .collect();
                let _ = Vp8Descriptor::parse(&p);
                let _ = keyframe_dimensions(&p);
                let _ = r.rewrite(u32::from(seed % 3), &mut p);
            }
        }
    }
}
