//! A simulcast publisher's encoder, as much of one as the SFU can tell
//! apart: three VP8 layers (rids `q`, `h`, `f`) on their own SSRCs, each
//! a frame every `FRAME_INTERVAL` at its nominal bitrate, a keyframe every
//! so many frames and at the next frame after a PLI for its SSRC, and each
//! packet carrying the mid and rid header extensions, as browsers send
//! them (rtc's sender does not add them). Each layer numbers its packets
//! and stamps its timestamps from its own start, as separate encoders do.

use std::time::Duration;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverId};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

/// One layer: its rid, SSRC, picture size and bits per second.
pub(super) struct LayerSpec {
    pub rid: &'static str,
    pub ssrc: u32,
    pub width: u16,
    pub height: u16,
    pub bitrate: u64,
}

/// The SDK's defaults (module `layers`' nominal rates), lowest first.
pub(super) const LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        ssrc: 0x5eed_0001,
        width: 320,
        height: 180,
        bitrate: 150_000,
    },
    LayerSpec {
        rid: "h",
        ssrc: 0x5eed_0002,
        width: 640,
        height: 360,
        bitrate: 500_000,
    },
    LayerSpec {
        rid: "f",
        ssrc: 0x5eed_0003,
        width: 1280,
        height: 720,
        bitrate: 1_500_000,
    },
];

/// 25 frames a second.
pub(super) const FRAME_INTERVAL: Duration = Duration::from_millis(40);
const TS_PER_FRAME: u32 = 90_000 / 25;
/// The most VP8 payload bytes in one packet.
const MAX_PAYLOAD: usize = 1_200;

/// The layer a payload was sent on (`LAYERS` index): its last byte.
pub(super) fn layer_of(payload: &[u8]) -> Option<usize> {
    payload
        .last()
        .map(|b| usize::from(*b))
        .filter(|i| *i < LAYERS.len())
}

/// The publisher's track: one encoding per layer, each with its rid and
/// SSRC (its offer then carries `a=rid:… send` and `a=simulcast:send`).
pub(super) fn track() -> MediaStreamTrack {
    MediaStreamTrack::new(
        "stream".into(),
        "video".into(),
        "video".into(),
        RtpCodecKind::Video,
        LAYERS
            .iter()
            .map(|layer| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: layer.rid.into(),
                    ssrc: Some(layer.ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                active: true,
                ..Default::default()
            })
            .collect(),
    )
}

/// The ids the answer gave the mid and rid extensions, and the mid.
struct Extensions {
    mid_id: u8,
    rid_id: u8,
    mid: Bytes,
}

pub(super) struct Encoder {
    /// A keyframe every this many frames, whatever was asked.
    keyframe_every: u32,
    frames: u32,
    /// Per layer: a keyframe was asked for (PLI) and not yet sent.
    keyframe_asked: [bool; 3],
    /// Per layer: being sent (the SFU's dynacast may stop one).
    active: [bool; 3],
    seq: [u16; 3],
    extensions: Option<Extensions>,
    /// Whether packets carry mid and rid (a browser stops once receiver
    /// reports acknowledge the SSRC).
    labelled: bool,
}

impl Encoder {
    pub(super) fn new(keyframe_every: u32) -> Encoder {
        Encoder {
            keyframe_every,
            frames: 0,
            keyframe_asked: [false; 3],
            active: [true; 3],
            // Far apart, so a consumer numbering one stream from another's
            // numbers would show.
            seq: [1_000, 30_000, 65_000],
            extensions: None,
            labelled: true,
        }
    }

    /// Reads the extension ids `sender`'s leg negotiated (after the answer).
    pub(super) fn negotiated(&mut self, pc: &mut RTCPeerConnection, sender: RTCRtpSenderId) {
        let mid = pc
            .rtp_transceiver(RTCRtpTransceiverId::from(sender))
            .and_then(|t| t.mid().clone())
            .expect("the answer gave the transceiver a mid");
        let mut sender = pc.rtp_sender(sender).expect("the publisher's sender");
        let mut id_of = |uri: &str| {
            sender
                .get_parameters()
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
                .unwrap_or_else(|| panic!("{uri} was not negotiated"))
        };
        let (mid_id, rid_id) = (id_of(SDES_MID_URI), id_of(SDES_RTP_STREAM_ID_URI));
        self.extensions = Some(Extensions {
            mid_id,
            rid_id,
            mid: Bytes::from(mid),
        });
    }

    /// From now on packets carry no mid and rid, as a browser's do once
    /// our receiver reports acknowledged each layer's SSRC.
    pub(super) fn stop_labelling(&mut self) {
        self.labelled = false;
    }

    /// A PLI for `ssrc`: that layer's next frame is a keyframe.
    pub(super) fn keyframe_asked(&mut self, ssrc: u32) {
        if let Some(i) = LAYERS.iter().position(|l| l.ssrc == ssrc) {
            self.keyframe_asked[i] = true;
        }
    }

    /// Starts or stops sending layer `rid` (what dynacast asks).
    pub(super) fn set_active(&mut self, rid: &str, active: bool) {
        if let Some(i) = LAYERS.iter().position(|l| l.rid == rid) {
            self.active[i] = active;
        }
    }

    /// The next frame of every active layer, as RTP packets.
    pub(super) fn frame(&mut self) -> Vec<rtp::Packet> {
        let periodic = self.frames.is_multiple_of(self.keyframe_every);
        let mut packets = Vec::new();
        for (i, layer) in LAYERS.iter().enumerate() {
            if !self.active[i] {
                continue;
            }
            let keyframe = periodic || std::mem::take(&mut self.keyframe_asked[i]);
            // Each layer's timestamps from its own random-looking start.
            let timestamp = (i as u32)
                .wrapping_mul(0x6000_0000)
                .wrapping_add(self.frames * TS_PER_FRAME);
            let bytes = (layer.bitrate * FRAME_INTERVAL.as_millis() as u64 / 8_000) as usize;
            let count = bytes.div_ceil(MAX_PAYLOAD);
            for part in 0..count {
                let mut header = rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: self.seq[i],
                    timestamp,
                    ssrc: layer.ssrc,
                    marker: part + 1 == count,
                    ..Default::default()
                };
                self.seq[i] = self.seq[i].wrapping_add(1);
                if let Some(ext) = self.extensions.as_ref().filter(|_| self.labelled) {
                    header
                        .set_extension(ext.mid_id, ext.mid.clone())
                        .expect("mid extension");
                    header
                        .set_extension(ext.rid_id, Bytes::from_static(layer.rid.as_bytes()))
                        .expect("rid extension");
                }
                let payload = vp8_payload(
                    i,
                    self.frames as u16,
                    part == 0,
                    keyframe.then_some((layer.width, layer.height)),
                    bytes / count,
                );
                packets.push(rtp::Packet { header, payload });
            }
        }
        self.frames += 1;
        packets
    }
}

/// One packet of a VP8 frame of `len` bytes on layer `layer`: the payload
/// descriptor (RFC 7741; X and I set, a 15-bit picture id, S on the
/// frame's first packet), then on the first packet the frame tag (RFC 6386
/// §9.1; its P bit clear for a keyframe, which also gets the start code and
/// the picture size), then filler; its last byte names the layer.
fn vp8_payload(
    layer: usize,
    picture_id: u16,
    first: bool,
    keyframe: Option<(u16, u16)>,
    len: usize,
) -> Bytes {
    let picture_id = picture_id & 0x7fff;
    let start = if first { 0x10 } else { 0 };
    let mut payload = vec![
        0x80 | start,
        0x80,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
    ];
    if first {
        match keyframe {
            Some((width, height)) => {
                payload.extend_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
                payload.extend_from_slice(&width.to_le_bytes());
                payload.extend_from_slice(&height.to_le_bytes());
            }
            None => payload.extend_from_slice(&[0x11, 0x00, 0x00]),
        }
    }
    payload.resize(len.max(payload.len() + 1) - 1, 0xab);
    payload.push(layer as u8);
    Bytes::from(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp8;

    #[test]
    fn each_layer_sends_its_nominal_bitrate_and_keyframes_of_its_size() {
        let mut encoder = Encoder::new(10);
        let mut bytes = [0usize; 3];
        let mut keyframes = [0; 3];
        // One second of frames.
        for _ in 0..25 {
            for p in encoder.frame() {
                let layer = layer_of(&p.payload).expect("a layer");
                assert_eq!(p.header.ssrc, LAYERS[layer].ssrc);
                bytes[layer] += p.payload.len();
                if let Some(size) = vp8::keyframe_dimensions(&p.payload) {
                    let spec = &LAYERS[layer];
                    assert_eq!(size, (spec.width, spec.height));
                    keyframes[layer] += 1;
                } else {
                    assert!(!vp8::is_keyframe_start(&p.payload));
                }
            }
        }
        for (layer, spec) in LAYERS.iter().enumerate() {
            let bps = bytes[layer] as u64 * 8;
            assert!(
                bps.abs_diff(spec.bitrate) <= spec.bitrate / 50,
                "{}: {bps}",
                spec.rid
            );
        }
        assert_eq!(keyframes, [3, 3, 3], "frames 0, 10 and 20");
        // Asked for one: the next frame of that layer only.
        encoder.keyframe_asked(LAYERS[1].ssrc);
        let frame = encoder.frame();
        let keyframes: Vec<usize> = frame
            .iter()
            .filter(|p| vp8::is_keyframe_start(&p.payload))
            .filter_map(|p| layer_of(&p.payload))
            .collect();
        assert_eq!(keyframes, vec![1]);
    }
}
