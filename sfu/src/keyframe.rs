//! Is this RTP payload the first packet of a keyframe? A consumer may only
//! start a new layer (or resume after a pause) at such a packet: anything
//! else would hand the decoder a picture that refers to pictures it never
//! received.
//!
//! Each codec says so in its own payload format; every check below looks
//! only at the first bytes of the payload and is bounds-checked, so a short
//! or garbled payload is simply "not a keyframe".

use crate::vp8;

/// The video codecs whose keyframes we can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl VideoCodec {
    /// The codec for a MIME type such as `video/VP8` (case-insensitive);
    /// `None` for audio and for video codecs we do not know.
    pub fn from_mime(mime: &str) -> Option<VideoCodec> {
        [
            ("video/vp8", VideoCodec::Vp8),
            ("video/vp9", VideoCodec::Vp9),
            ("video/h264", VideoCodec::H264),
            ("video/av1", VideoCodec::Av1),
        ]
        .into_iter()
        .find(|(name, _)| mime.eq_ignore_ascii_case(name))
        .map(|(_, codec)| codec)
    }

    /// Whether `payload` (an RTP payload, padding removed) starts a keyframe.
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8::is_keyframe_start(payload),
            VideoCodec::Vp9 => vp9_is_keyframe_start(payload),
            VideoCodec::H264 => h264_is_keyframe_start(payload),
            VideoCodec::Av1 => av1_is_keyframe_start(payload),
        }
    }
}

/// Whether `payload` starts a keyframe of the codec named by `mime`. False
/// for audio and unknown codecs: they have no keyframes to wait for (a
/// consumer treats every audio packet as a switching point itself).
#[cfg(test)]
pub fn is_keyframe(mime: &str, payload: &[u8]) -> bool {
    VideoCodec::from_mime(mime).is_some_and(|codec| codec.is_keyframe(payload))
}

/// VP9 (RFC 9628 §4.2). The descriptor's first byte is
/// `I|P|L|F|B|E|V|Z`: P (0x40) is "inter-picture predicted" and B (0x08)
/// "beginning of a frame". A keyframe starts where P=0 and B=1 on the base
/// spatial layer (SID 0, when the layer byte is present). P=0 alone also
/// marks intra-only frames, which are not keyframes, so the frame_type bit
/// of the VP9 uncompressed header after the descriptor settles it.
fn vp9_is_keyframe_start(payload: &[u8]) -> bool {
    vp9_keyframe_start(payload).unwrap_or(false)
}

fn vp9_keyframe_start(payload: &[u8]) -> Option<bool> {
    const I: u8 = 0x80;
    const P: u8 = 0x40;
    const L: u8 = 0x20;
    const F: u8 = 0x10;
    const B: u8 = 0x08;
    const V: u8 = 0x02;

    let first = *payload.first()?;
    if first & P != 0 || first & B == 0 {
        return Some(false);
    }
    let mut at = 1;
    if first & I != 0 {
        // M bit: a 15-bit picture id takes a second byte.
        at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if first & L != 0 {
        let layer = *payload.get(at)?;
        if (layer >> 1) & 0x07 != 0 {
            return Some(false);
        }
        // Non-flexible mode carries TL0PICIDX after the layer byte.
        at += if first & F == 0 { 2 } else { 1 };
    }
    // F with P=1 would add P_DIFF bytes here; P=0 on this path.
    if first & V != 0 {
        let ss = *payload.get(at)?;
        at += 1;
        let spatial_layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            // Y: width and height (2 bytes each) per spatial layer.
            at += 4 * spatial_layers;
        }
        if ss & 0x08 != 0 {
            // G: N_G picture-group entries, each a byte plus R P_DIFF bytes.
            let groups = *payload.get(at)?;
            at += 1;
            for _ in 0..groups {
                let entry = *payload.get(at)?;
                at += 1 + usize::from((entry >> 2) & 0x03);
            }
        }
    }
    // The uncompressed header: frame_marker (2 bits, = 2), profile low and
    // high bits, a reserved zero bit for profile 3, show_existing_frame,
    // then frame_type (0 = KEY_FRAME).
    let header = *payload.get(at)?;
    if header >> 6 != 0b10 {
        return Some(false);
    }
    let profile = (((header >> 4) & 0x01) << 1) | ((header >> 5) & 0x01);
    let show_existing_at = if profile == 3 { 2 } else { 3 };
    let show_existing = (header >> show_existing_at) & 0x01;
    let frame_type = (header >> (show_existing_at - 1)) & 0x01;
    Some(show_existing == 0 && frame_type == 0)
}

/// H.264 (RFC 6184 §5). The NAL unit header is `F|NRI|Type`. A keyframe
/// starts with an IDR slice (type 5) or, as encoders send them, with the
/// SPS (type 7) that precedes it; either may come alone, inside a STAP-A
/// aggregate (type 24: 2-byte sizes, each followed by a NAL unit), or as
/// the first fragment of an FU-A (type 28: FU header `S|E|R|Type`, S set).
/// Other packetizations (STAP-B, MTAP, FU-B) need interleaved mode, which
/// WebRTC does not use; they answer false.
fn h264_is_keyframe_start(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;

    let starts_keyframe = |nal_header: u8| {
        let nal_type = nal_header & 0x1F;
        nal_header & 0x80 == 0 && (nal_type == IDR || nal_type == SPS)
    };

    let Some(&header) = payload.first() else {
        return false;
    };
    if header & 0x80 != 0 {
        // forbidden_zero_bit: the unit is corrupt.
        return false;
    }
    match header & 0x1F {
        1..=23 => starts_keyframe(header),
        STAP_A => {
            // Every unit must be well formed; a size running past the end
            // means the packet is garbage, whatever it claimed before.
            let mut rest = &payload[1..];
            let mut found = false;
            while !rest.is_empty() {
                let Some(size) = rest.get(..2) else {
                    return false;
                };
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(unit) = rest.get(2..2 + size) else {
                    return false;
                };
                let Some(&unit_header) = unit.first() else {
                    return false;
                };
                found |= starts_keyframe(unit_header);
                rest = &rest[2 + size..];
            }
            found
        }
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && starts_keyframe((header & 0xE0) | (fu & 0x1F))),
        _ => false,
    }
}

/// AV1 (the AV1 RTP payload format, §4.4). The aggregation header is
/// `Z|Y|W W|N|-|-|-`; N (0x08) is set on the first packet of a coded video
/// sequence, which begins with a keyframe. Such a packet cannot continue an
/// OBU from an earlier packet, so Z (0x80) must be clear, and it must carry
/// some OBU data after the header.
fn av1_is_keyframe_start(payload: &[u8]) -> bool {
    match payload {
        [header, _, ..] => header & 0x08 != 0 && header & 0x80 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_named_by_mime_type_in_any_case() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), Some(VideoCodec::Vp8));
        assert_eq!(VideoCodec::from_mime("VIDEO/vp9"), Some(VideoCodec::Vp9));
        assert_eq!(VideoCodec::from_mime("video/H264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_mime("video/AV1"), Some(VideoCodec::Av1));
        assert_eq!(VideoCodec::from_mime("audio/opus"), None);
        assert_eq!(VideoCodec::from_mime("video/H265"), None);
        assert!(!is_keyframe("audio/opus", &[0x10, 0x50]));
        assert!(is_keyframe("video/vp8", &[0x10, 0x50]));
    }

    #[test]
    fn vp8() {
        assert!(is_keyframe(
            "video/VP8",
            &[0x90, 0x80, 0x05, 0x50, 0x42, 0x00]
        ));
        assert!(!is_keyframe(
            "video/VP8",
            &[0x90, 0x80, 0x05, 0x51, 0x42, 0x00]
        ));
        assert!(!is_keyframe("video/VP8", &[0x90, 0x80]));
    }

    /// A VP9 key frame's first uncompressed-header byte, profile 0:
    /// frame_marker 10, profile 00, show_existing 0, frame_type 0.
    const VP9_KEY: u8 = 0b1000_0010;
    /// The same for an inter frame (frame_type 1).
    const VP9_INTER: u8 = 0b1000_0110;

    #[test]
    fn vp9_keyframe_needs_p_clear_b_set_and_a_key_frame_header() {
        // B only, then the frame.
        assert!(is_keyframe("video/VP9", &[0x08, VP9_KEY, 0x49]));
        // I (15-bit id), B, E, V with Y (one layer, 4 bytes of size) and no G.
        assert!(is_keyframe(
            "video/VP9",
            &[
                0x8E,
                0x80 | 0x12,
                0x34,
                0x10,
                0x02,
                0x80,
                0x01,
                0x68,
                VP9_KEY
            ]
        ));
        // I (7-bit), L non-flexible (layer byte + TL0PICIDX), B, V with G.
        assert!(is_keyframe(
            "video/VP9",
            &[0xAA, 0x05, 0x00, 0x07, 0x08, 0x01, 0x04, 0x09, VP9_KEY]
        ));
        // Flexible mode: no TL0PICIDX.
        assert!(is_keyframe("video/VP9", &[0xB8, 0x05, 0x00, VP9_KEY]));
        // Profile 3 has a reserved bit before show_existing_frame.
        assert!(is_keyframe("video/VP9", &[0x08, 0b1011_0000]));
        assert!(!is_keyframe("video/VP9", &[0x08, 0b1011_0010]));

        // P set: predicted.
        assert!(!is_keyframe("video/VP9", &[0x48, VP9_KEY]));
        // B clear: not the beginning of the frame.
        assert!(!is_keyframe("video/VP9", &[0x04, VP9_KEY]));
        // Bits people confuse: 0x80 (I) and 0x40 (P) alone say nothing of B.
        assert!(!is_keyframe("video/VP9", &[0x80, 0x05, VP9_KEY]));
        // Spatial layer 1 of a keyframe is not where a decoder can start.
        assert!(!is_keyframe("video/VP9", &[0x38, 0x02, VP9_KEY]));
        // Intra-only or inter frame header, show_existing_frame, bad marker.
        assert!(!is_keyframe("video/VP9", &[0x08, VP9_INTER]));
        assert!(!is_keyframe("video/VP9", &[0x08, 0b1000_1000]));
        assert!(!is_keyframe("video/VP9", &[0x08, 0b0100_0000]));
    }

    #[test]
    fn vp9_truncated_descriptors_are_not_keyframes() {
        for payload in [
            &[][..],
            &[0x08],
            &[0x88],
            &[0x88, 0x80],
            &[0x88, 0x80, 0x01],
            &[0x28],
            &[0x28, 0x00],
            &[0x28, 0x00, 0x00],
            &[0x0A],
            &[0x0A, 0x10, 0x00, 0x01],
            &[0x0A, 0x08],
            &[0x0A, 0x08, 0x02, 0x0C, 0x00],
            &[0x0A, 0xE8, 0x01, 0x00],
        ] {
            assert!(!is_keyframe("video/VP9", payload), "{payload:02x?}");
        }
    }

    #[test]
    fn h264_single_nal_units() {
        // IDR slice (NRI 3).
        assert!(is_keyframe("video/H264", &[0x65, 0x88, 0x84]));
        // SPS.
        assert!(is_keyframe("video/H264", &[0x67, 0x42, 0xC0, 0x1F]));
        // A non-IDR slice, a PPS, SEI.
        assert!(!is_keyframe("video/H264", &[0x41, 0x9A]));
        assert!(!is_keyframe("video/H264", &[0x68, 0xCE]));
        assert!(!is_keyframe("video/H264", &[0x06, 0x05]));
        // forbidden_zero_bit set.
        assert!(!is_keyframe("video/H264", &[0xE5, 0x88]));
    }

    #[test]
    fn h264_stap_a() {
        // SPS, PPS and IDR aggregated, as Chrome sends a keyframe's start.
        let stap = [
            0x78, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1F, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x65,
            0x88,
        ];
        assert!(is_keyframe("video/H264", &stap));
        // SEI and a non-IDR slice.
        let delta = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9A];
        assert!(!is_keyframe("video/H264", &delta));
        // A size past the end, a zero size, a dangling size byte.
        assert!(!is_keyframe("video/H264", &[0x78, 0x00, 0x09, 0x67, 0x42]));
        assert!(!is_keyframe("video/H264", &[0x78, 0x00, 0x00, 0x67]));
        assert!(!is_keyframe(
            "video/H264",
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00]
        ));
        assert!(!is_keyframe("video/H264", &[0x78]));
    }

    #[test]
    fn h264_fu_a() {
        // FU indicator (NRI 3, type 28), FU header with S and type 5.
        assert!(is_keyframe("video/H264", &[0x7C, 0x85, 0x88]));
        // Start of a fragmented SPS (unusual, but a keyframe start).
        assert!(is_keyframe("video/H264", &[0x7C, 0x87, 0x42]));
        // Middle and end fragments of an IDR.
        assert!(!is_keyframe("video/H264", &[0x7C, 0x05, 0x88]));
        assert!(!is_keyframe("video/H264", &[0x7C, 0x45, 0x88]));
        // Start of a non-IDR slice.
        assert!(!is_keyframe("video/H264", &[0x7C, 0x81, 0x9A]));
        // Truncated.
        assert!(!is_keyframe("video/H264", &[0x7C]));
        assert!(!is_keyframe("video/H264", &[]));
    }

    #[test]
    fn av1_n_bit_marks_a_new_coded_video_sequence() {
        // N set, W=1; a sequence header OBU follows.
        assert!(is_keyframe("video/AV1", &[0x18, 0x0A, 0x0B]));
        // Same without N.
        assert!(!is_keyframe("video/AV1", &[0x10, 0x0A, 0x0B]));
        // N with Z (continuation) is contradictory.
        assert!(!is_keyframe("video/AV1", &[0x88, 0x0A]));
        // Nothing after the aggregation header.
        assert!(!is_keyframe("video/AV1", &[0x08]));
        assert!(!is_keyframe("video/AV1", &[]));
    }

    #[test]
    fn garbage_never_panics() {
        for codec in ["video/VP8", "video/VP9", "video/H264", "video/AV1"] {
            for len in 0..12usize {
                for seed in 0..=255u8 {
                    let p: Vec<u8> = (0..len)
                        .map(|i| {
                            seed.wrapping_mul(0x9D)
                                .wrapping_add((i as u8).wrapping_mul(0x3B))
                        })
                        .collect();
                    let _ = is_keyframe(codec, &p);
                }
            }
        }
    }
}
