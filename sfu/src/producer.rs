//! A producer: one track a publisher sends, forwarded to its consumers.

use std::time::Instant;

use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::consumer::Consumer;
use crate::header_ext::ExtensionMap;
use crate::keyframe::VideoCodec;
use crate::session::{TrackInfo, TrackKind};
use crate::transport::TransportId;

/// A track received from a publisher, forwarded to its consumers.
pub(crate) struct Producer {
    pub(crate) sid: String,
    pub(crate) owner_sid: String,
    pub(crate) transport: TransportId,
    pub(crate) receiver_id: RTCRtpReceiverId,
    pub(crate) kind: TrackKind,
    pub(crate) mid: Option<String>,
    pub(crate) codec: RTCRtpCodec,
    /// Its video codec, for telling keyframes apart; `None` for audio.
    pub(crate) video_codec: Option<VideoCodec>,
    /// The header extensions the publisher's leg negotiated.
    pub(crate) extensions: ExtensionMap,
    pub(crate) media_ssrc: u32,
    pub(crate) muted: bool,
    pub(crate) consumers: Vec<Consumer>,
    /// The last REMB we sent its publisher: (bits per second, when).
    pub(crate) remb_sent: Option<(u64, Instant)>,
    pub(crate) last_keyframe_request: Option<Instant>,
}

impl Producer {
    pub(crate) fn info(&self) -> TrackInfo {
        TrackInfo {
            sid: self.sid.clone(),
            kind: self.kind,
            muted: self.muted,
            mid: self.mid.clone(),
            codec: self.codec.mime_type.clone(),
        }
    }
}
