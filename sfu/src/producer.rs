//! A producer: one track a publisher sends, forwarded to its consumers.

use std::time::Instant;

use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::consumer::Consumer;
use crate::continuity::Continuity;
use crate::early_packets::EarlyPackets;
use crate::header_ext::ExtensionMap;
use crate::keyframe::VideoCodec;
use crate::layers::{Layer, rank};
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
    /// Its simulcast layers, lowest quality first; empty while it sends a
    /// single stream.
    pub(crate) layers: Vec<Layer>,
    /// A single-stream producer's stream (its SSRC and newest packet);
    /// layers keep their own.
    pub(crate) stream_continuity: Option<(u32, Continuity)>,
    /// Packets that came ahead of the keyframe a consumer waits for.
    pub(crate) early_packets: EarlyPackets,
    /// Which layers its publisher was last told someone receives
    /// (`subscribed_layers`), and since when fewer would do.
    pub(crate) dynacast: Dynacast,
}

/// The layers a simulcast publisher is asked to send (dynacast).
#[derive(Debug, Default)]
pub(crate) struct Dynacast {
    /// `active` of each layer as last sent; empty: never sent.
    pub(crate) sent: Vec<bool>,
    /// A smaller set has been enough since then; the publisher is told
    /// only once that lasts (a subscriber's view flickering does not make
    /// the encoder stop and start layers).
    pub(crate) fewer_since: Option<Instant>,
}

impl Producer {
    /// Index of the layer whose stream has `ssrc`.
    pub(crate) fn layer_of(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// A new layer `rid` on `ssrc`, kept in quality order.
    pub(crate) fn add_layer(&mut self, rid: String, ssrc: u32) {
        if self.layer_of(ssrc).is_some() || self.layers.iter().any(|l| l.rid == rid) {
            return;
        }
        self.layers.push(Layer::new(rid, ssrc));
        self.layers.sort_by_key(|l| rank(&l.rid));
        // Consumers hold layer indices: they choose again.
        for consumer in &mut self.consumers {
            consumer.layer = None;
        }
    }
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
