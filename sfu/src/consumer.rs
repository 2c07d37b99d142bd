//! A consumer: one producer forwarded to one subscriber transport, with
//! what it rewrites on every packet (SSRC, payload type, sequence numbers,
//! timestamps, header extensions) so the subscriber sees one unbroken
//! stream of its own leg's numbering.

use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverId};

use crate::header_ext::{ExtensionMap, ExtensionRewriter};
use crate::rewriter::SequenceRewriter;
use crate::session::SubscriptionSettings;
use crate::transport::TransportId;
use crate::vp8::PictureIdRewriter;

/// One producer forwarded to one subscriber.
pub(crate) struct Consumer {
    pub(crate) subscriber_sid: String,
    pub(crate) transport: TransportId,
    pub(crate) sender_id: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    /// The subscriber's leg as negotiated; known once its answer is applied.
    pub(crate) leg: Option<Leg>,
    /// What the subscriber asked for this track (`update_subscription`).
    pub(crate) settings: SubscriptionSettings,
    /// Its share of the subscriber's estimate (module `allocation`), in
    /// bits per second; `None` while the subscriber has given none. Zero:
    /// paused for want of bandwidth.
    pub(crate) share: Option<u64>,
    /// Outgoing sequence numbers and timestamps: continuous across pauses
    /// (mute, holds, disabled) and source switches.
    pub(crate) sequence: SequenceRewriter,
    /// Simulcast: the index of the layer it should get (module `layers`);
    /// `None` until chosen.
    pub(crate) layer: Option<usize>,
    /// VP8 picture ids continuous across layer switches.
    pub(crate) picture_ids: PictureIdRewriter,
}

/// What the subscriber's leg negotiated for a consumer.
pub(crate) struct Leg {
    pub(crate) payload_type: u8,
    pub(crate) extensions: ExtensionRewriter,
}

impl Leg {
    /// The leg `sender_id` negotiated for `codec`, with the publisher's
    /// extensions (`publisher`) mapped onto it; `None` until its answer is in
    /// or if it has no payload type for the codec.
    pub(crate) fn negotiated(
        pc: &mut RTCPeerConnection,
        sender_id: RTCRtpSenderId,
        codec: &RTCRtpCodec,
        publisher: &ExtensionMap,
    ) -> Option<Leg> {
        let mid = pc
            .rtp_transceiver(RTCRtpTransceiverId::from(sender_id))
            .and_then(|t| t.mid().clone())
            .unwrap_or_default();
        let mut sender = pc.rtp_sender(sender_id)?;
        let parameters = &sender.get_parameters().rtp_parameters;
        let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
        };
        let payload_type = parameters
            .codecs
            .iter()
            .filter(same_mime)
            .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
            .or_else(|| parameters.codecs.iter().find(same_mime))
            .map(|c| c.payload_type)?;
        let subscriber = ExtensionMap::from_pairs(
            parameters
                .header_extensions
                .iter()
                .filter_map(|e| Some((u8::try_from(e.id).ok()?, e.uri.as_str()))),
        );
        Some(Leg {
            payload_type,
            extensions: ExtensionRewriter::new(publisher, &subscriber, &mid),
        })
    }
}
