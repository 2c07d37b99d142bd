//! A consumer: one producer forwarded to one subscriber transport.

use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::session::SubscriptionSettings;
use crate::transport::TransportId;

/// One producer forwarded to one subscriber.
pub(crate) struct Consumer {
    pub(crate) subscriber_sid: String,
    pub(crate) transport: TransportId,
    pub(crate) sender_id: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    /// Payload type the subscriber's leg negotiated for the producer's codec;
    /// known once its answer is applied.
    pub(crate) payload_type: Option<u8>,
    /// What the subscriber asked for this track (`update_subscription`).
    pub(crate) settings: SubscriptionSettings,
}

/// The payload type `sender_id`'s negotiated leg uses for `codec`, if any.
pub(crate) fn negotiated_payload_type(
    pc: &mut RTCPeerConnection,
    sender_id: RTCRtpSenderId,
    codec: &RTCRtpCodec,
) -> Option<u8> {
    let mut sender = pc.rtp_sender(sender_id)?;
    let codecs = &sender.get_parameters().rtp_parameters.codecs;
    let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
    };
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
        .or_else(|| codecs.iter().find(same_mime))
        .map(|c| c.payload_type)
}
