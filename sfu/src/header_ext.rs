//! RTP header extensions, rewritten per leg.
//!
//! Extension ids are negotiated per m-line (`a=extmap:ID URI`), so the id a
//! publisher uses for, say, the audio level means nothing to a subscriber:
//! every extension we forward must be moved to the id the subscriber's leg
//! negotiated for the same URI, or dropped if it negotiated none. Some
//! extensions describe the publisher's hop and must not be forwarded at all:
//! its transport-wide sequence number and abs-send-time are about the
//! publisher's link (the subscriber's congestion control needs ours), and
//! rid / repaired-rid name the publisher's simulcast streams, which a
//! subscriber never sees. The subscriber's mid is ours to write: it tells
//! the subscriber which of its m-lines a packet belongs to.
//!
//! [`ExtensionRewriter`] does this for one (publisher leg, subscriber leg)
//! pair; [`audio_level`] reads the publisher's audio level for speaker
//! detection.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension, Header};

// The URIs are rtc's (RFC 6464, 3GPP TS 26.114, RFC 9143, RFC 8852, the
// transport-wide-cc and abs-send-time drafts).
pub use rtc::sdp::extmap::{
    ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, SDES_MID_URI as MID_URI,
    SDES_REPAIR_RTP_STREAM_ID_URI as REPAIRED_RTP_STREAM_ID_URI,
    SDES_RTP_STREAM_ID_URI as RTP_STREAM_ID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI,
};

/// The header extensions the SFU knows; any other is dropped on forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    AudioLevel,
    VideoOrientation,
    Mid,
    RtpStreamId,
    RepairedRtpStreamId,
    TransportCc,
    AbsSendTime,
}

impl ExtensionKind {
    const ALL: [ExtensionKind; 7] = [
        ExtensionKind::AudioLevel,
        ExtensionKind::VideoOrientation,
        ExtensionKind::Mid,
        ExtensionKind::RtpStreamId,
        ExtensionKind::RepairedRtpStreamId,
        ExtensionKind::TransportCc,
        ExtensionKind::AbsSendTime,
    ];

    pub fn uri(self) -> &'static str {
        match self {
            ExtensionKind::AudioLevel => AUDIO_LEVEL_URI,
            ExtensionKind::VideoOrientation => VIDEO_ORIENTATION_URI,
            ExtensionKind::Mid => MID_URI,
            ExtensionKind::RtpStreamId => RTP_STREAM_ID_URI,
            ExtensionKind::RepairedRtpStreamId => REPAIRED_RTP_STREAM_ID_URI,
            ExtensionKind::TransportCc => TRANSPORT_CC_URI,
            ExtensionKind::AbsSendTime => ABS_SEND_TIME_URI,
        }
    }

    pub fn from_uri(uri: &str) -> Option<ExtensionKind> {
        ExtensionKind::ALL.into_iter().find(|k| k.uri() == uri)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One leg's negotiated extension ids, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionMap {
    ids: [Option<u8>; ExtensionKind::ALL.len()],
}

impl ExtensionMap {
    pub fn new() -> ExtensionMap {
        ExtensionMap::default()
    }

    /// A map from `a=extmap` pairs (id, URI). Unknown URIs and id 0 (not a
    /// valid id in either form) are skipped.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u8, &'a str)>) -> ExtensionMap {
        let mut map = ExtensionMap::new();
        for (id, uri) in pairs {
            map.insert(id, uri);
        }
        map
    }

    /// Records that `uri` was negotiated as `id`; false (and nothing
    /// recorded) for an unknown URI or id 0.
    pub fn insert(&mut self, id: u8, uri: &str) -> bool {
        match ExtensionKind::from_uri(uri) {
            Some(kind) if id != 0 => {
                self.ids[kind.index()] = Some(id);
                true
            }
            _ => false,
        }
    }

    pub fn id(&self, kind: ExtensionKind) -> Option<u8> {
        self.ids[kind.index()]
    }

    #[cfg(test)]
    pub fn kind_of(&self, id: u8) -> Option<ExtensionKind> {
        ExtensionKind::ALL
            .into_iter()
            .find(|k| self.ids[k.index()] == Some(id))
    }
}

/// Rewrites the header extensions of packets going from one publisher leg
/// to one subscriber leg.
///
/// Kept, under the subscriber's ids: audio level, video orientation.
/// Written: the subscriber's mid; abs-send-time and a transport-wide
/// sequence number of our own, when the subscriber's leg negotiated them.
/// Dropped: rid, repaired rid, the publisher's transport-wide sequence
/// number and abs-send-time, anything we do not know, and any extension
/// the subscriber's leg did not negotiate.
#[derive(Debug, Clone)]
pub struct ExtensionRewriter {
    /// (publisher id, subscriber id) of each extension copied through.
    copied: Vec<(u8, u8)>,
    mid: Option<(u8, Bytes)>,
    abs_send_time: Option<u8>,
    transport_cc: Option<u8>,
}

impl ExtensionRewriter {
    /// `mid` is the subscriber's mid for the m-line these packets go out
    /// on. An empty mid, or one longer than the 255 bytes an extension can
    /// hold, is not written.
    pub fn new(
        publisher: &ExtensionMap,
        subscriber: &ExtensionMap,
        mid: &str,
    ) -> ExtensionRewriter {
        let copied = [ExtensionKind::AudioLevel, ExtensionKind::VideoOrientation]
            .into_iter()
            .filter_map(|kind| Some((publisher.id(kind)?, subscriber.id(kind)?)))
            .collect();
        let mid = subscriber
            .id(ExtensionKind::Mid)
            .filter(|_| (1..=255).contains(&mid.len()))
            .map(|id| (id, Bytes::copy_from_slice(mid.as_bytes())));
        ExtensionRewriter {
            copied,
            mid,
            abs_send_time: subscriber.id(ExtensionKind::AbsSendTime),
            transport_cc: subscriber.id(ExtensionKind::TransportCc),
        }
    }

    /// Replaces the extensions of `header` (as received from the publisher)
    /// with the subscriber's. `now - epoch` is the send time abs-send-time
    /// carries (any epoch fixed per transport will do: receivers use only
    /// differences). `transport_seq` is the subscriber transport's counter,
    /// shared by all its streams; it is used and advanced (wrapping) only if
    /// the leg negotiated transport-wide sequence numbers.
    #[cfg(test)]
    pub fn rewrite(
        &self,
        header: &mut Header,
        now: Instant,
        epoch: Instant,
        transport_seq: &mut u16,
    ) {
        *header = self.rewritten(header, now, epoch, transport_seq, &mut SendStamps::new());
    }

    /// A copy of `header` (as received from the publisher) for this leg:
    /// its fixed fields as they are, its extensions the subscriber's (as
    /// [`rewrite`](Self::rewrite) makes them). Unlike cloning the header
    /// and rewriting the copy, the publisher's extensions are never copied,
    /// and the send stamps come from `stamps`: one allocation per packet,
    /// the extension list (measured on the forwarding bench).
    pub fn rewritten(
        &self,
        header: &Header,
        now: Instant,
        epoch: Instant,
        transport_seq: &mut u16,
        stamps: &mut SendStamps,
    ) -> Header {
        let mut out = Header {
            version: header.version,
            padding: header.padding,
            extension: false,
            marker: header.marker,
            payload_type: header.payload_type,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            csrc: header.csrc.clone(),
            extension_profile: 0,
            extensions: Vec::new(),
            extensions_padding: 0,
        };
        let mut extensions = Vec::with_capacity(self.copied.len() + 3);
        if has_rfc8285_extensions(header) {
            for &(from, to) in &self.copied {
                // An empty value is malformed for both kinds, and would
                // force the two-byte form on the whole packet.
                if let Some(ext) = header
                    .extensions
                    .iter()
                    .find(|e| e.id == from && !e.payload.is_empty())
                {
                    extensions.push(Extension {
                        id: to,
                        payload: ext.payload.clone(),
                    });
                }
            }
        }
        if let Some((id, mid)) = &self.mid {
            extensions.push(Extension {
                id: *id,
                payload: mid.clone(),
            });
        }
        if let Some(id) = self.abs_send_time {
            let value = abs_send_time(now.saturating_duration_since(epoch));
            extensions.push(Extension {
                id,
                payload: stamps.value(&value.to_be_bytes()[1..]),
            });
        }
        if let Some(id) = self.transport_cc {
            extensions.push(Extension {
                id,
                payload: stamps.value(&transport_seq.to_be_bytes()),
            });
            *transport_seq = transport_seq.wrapping_add(1);
        }
        set_extensions(&mut out, extensions);
        out
    }
}

/// The values of the send stamps (abs-send-time, transport-wide sequence
/// numbers), a few bytes each, cut from one shared buffer: one allocation
/// per few thousand bytes of stamps instead of one per value. A buffer is
/// freed once every packet holding a stamp from it is (rtc keeps sent
/// packets a while for retransmission).
#[derive(Debug, Default)]
pub struct SendStamps {
    buffer: BytesMut,
}

/// Bytes allocated at a time for stamps.
const STAMPS_CHUNK: usize = 4096;

impl SendStamps {
    pub fn new() -> SendStamps {
        SendStamps::default()
    }

    fn value(&mut self, bytes: &[u8]) -> Bytes {
        if self.buffer.capacity() < bytes.len() {
            self.buffer = BytesMut::with_capacity(STAMPS_CHUNK);
        }
        self.buffer.extend_from_slice(bytes);
        self.buffer.split().freeze()
    }
}

/// abs-send-time's 24-bit value for a send time `since_epoch`: seconds in
/// 6.18 fixed point (6 integer bits, 18 fraction bits), so it wraps every
/// 64 s; rounded to the nearest 1/2^18 s as libwebrtc does. 1 s is
/// 0x040000, 1.5 s is 0x060000.
pub fn abs_send_time(since_epoch: Duration) -> u32 {
    let micros = since_epoch.as_micros() % 64_000_000;
    let value = ((micros << 18) + 500_000) / 1_000_000;
    (value & 0xFF_FFFF) as u32
}

/// The audio level (RFC 6464) a publisher put on a packet, read with the
/// ids of the publisher's leg: `level` in -dBov (0 loudest, 127 silence),
/// `voice` the sender's voice-activity flag. Returned as rtc's type, which
/// the active-speaker detector takes.
pub fn audio_level(header: &Header, publisher: &ExtensionMap) -> Option<AudioLevelExtension> {
    if !has_rfc8285_extensions(header) {
        return None;
    }
    let id = publisher.id(ExtensionKind::AudioLevel)?;
    let ext = header.extensions.iter().find(|e| e.id == id)?;
    let &byte = ext.payload.first()?;
    Some(AudioLevelExtension {
        level: byte & 0x7F,
        voice: byte & 0x80 != 0,
    })
}

/// Whether the extensions in `header` carry RFC 8285 ids. Under any other
/// profile (the RFC 3550 generic block) `rtc` stores the whole block as one
/// extension with id 0, which means nothing to us.
fn has_rfc8285_extensions(header: &Header) -> bool {
    header.extension
        && (header.extension_profile == EXTENSION_PROFILE_ONE_BYTE
            || header.extension_profile == EXTENSION_PROFILE_TWO_BYTE)
}

/// Installs `extensions` on `header` in the form they fit: one-byte
/// (0xBEDE) when every id is 1–14 and every payload 1–16 bytes, two-byte
/// (0x1000) otherwise. Anything neither form can carry (id 0, payload over
/// 255 bytes) is dropped.
///
/// `rtc`'s `Header` keeps its own count of padding bytes after the
/// extensions (`extensions_padding`); `marshal` fails if that count
/// disagrees with the extensions it holds, and `set_extension` (as used by
/// `rtc`'s interceptors) updates it assuming it is right. So it is set here
/// to exactly what pads the block to a 32-bit boundary.
fn set_extensions(header: &mut Header, mut extensions: Vec<Extension>) {
    extensions.retain(|e| e.id != 0 && e.payload.len() <= 255);
    let one_byte = extensions
        .iter()
        .all(|e| e.id <= 14 && (1..=16).contains(&e.payload.len()));
    header.extension = !extensions.is_empty();
    header.extension_profile = match (header.extension, one_byte) {
        (false, _) => 0,
        (true, true) => EXTENSION_PROFILE_ONE_BYTE,
        (true, false) => EXTENSION_PROFILE_TWO_BYTE,
    };
    header.extensions = extensions;
    let len = if header.extension {
        header.get_extension_payload_len()
    } else {
        0
    };
    header.extensions_padding = (4 - len % 4) % 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::Packet;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    /// The publisher's leg: Chrome's usual ids.
    fn publisher() -> ExtensionMap {
        ExtensionMap::from_pairs([
            (1, AUDIO_LEVEL_URI),
            (2, ABS_SEND_TIME_URI),
            (3, TRANSPORT_CC_URI),
            (4, MID_URI),
            (10, RTP_STREAM_ID_URI),
            (11, REPAIRED_RTP_STREAM_ID_URI),
            (13, VIDEO_ORIENTATION_URI),
        ])
    }

    /// A subscriber leg with different ids for everything.
    fn subscriber() -> ExtensionMap {
        ExtensionMap::from_pairs([
            (5, AUDIO_LEVEL_URI),
            (6, ABS_SEND_TIME_URI),
            (7, TRANSPORT_CC_URI),
            (8, MID_URI),
            (14, VIDEO_ORIENTATION_URI),
        ])
    }

    fn ext(id: u8, payload: &[u8]) -> Extension {
        Extension {
            id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// A header as the publisher sent it, with every extension it uses and
    /// one we do not know (id 9).
    fn from_publisher() -> Header {
        let mut header = Header {
            version: 2,
            payload_type: 111,
            sequence_number: 1,
            timestamp: 2,
            ssrc: 3,
            ..Default::default()
        };
        set_extensions(
            &mut header,
            vec![
                ext(1, &[0x80 | 30]),
                ext(2, &[0x12, 0x34, 0x56]),
                ext(3, &[0x00, 0x09]),
                ext(4, b"pub-mid"),
                ext(9, &[0xFF, 0xFF]),
                ext(10, b"h"),
                ext(11, b"h"),
                ext(13, &[0x01]),
            ],
        );
        header
    }

    fn find(header: &Header, id: u8) -> Option<&[u8]> {
        header
            .extensions
            .iter()
            .find(|e| e.id == id)
            .map(|e| &e.payload[..])
    }

    fn ids(header: &Header) -> Vec<u8> {
        let mut ids: Vec<u8> = header.extensions.iter().map(|e| e.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn maps_are_built_from_uris() {
        let map = publisher();
        assert_eq!(map.id(ExtensionKind::AudioLevel), Some(1));
        assert_eq!(map.id(ExtensionKind::VideoOrientation), Some(13));
        assert_eq!(map.kind_of(10), Some(ExtensionKind::RtpStreamId));
        assert_eq!(map.kind_of(9), None);
        let mut map = ExtensionMap::new();
        assert!(!map.insert(3, "urn:example:unknown"));
        assert!(!map.insert(0, MID_URI));
        assert!(map.insert(200, MID_URI));
        assert_eq!(map.id(ExtensionKind::Mid), Some(200));
        for kind in ExtensionKind::ALL {
            assert_eq!(ExtensionKind::from_uri(kind.uri()), Some(kind));
        }
    }

    #[test]
    fn every_rule_applies_with_ids_remapped() {
        let t0 = Instant::now();
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "3");
        let mut header = from_publisher();
        let mut tw = 100;
        rewriter.rewrite(&mut header, t0 + Duration::from_millis(1500), t0, &mut tw);

        assert_eq!(ids(&header), vec![5, 6, 7, 8, 14]);
        // Audio level and video orientation, moved to the subscriber's ids.
        assert_eq!(find(&header, 5), Some(&[0x80 | 30][..]));
        assert_eq!(find(&header, 14), Some(&[0x01][..]));
        // Our mid, not the publisher's.
        assert_eq!(find(&header, 8), Some(&b"3"[..]));
        // Our abs-send-time and transport-wide sequence number.
        assert_eq!(find(&header, 6), Some(&[0x06, 0x00, 0x00][..]));
        assert_eq!(find(&header, 7), Some(&[0x00, 100][..]));
        assert_eq!(tw, 101);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
        assert!(header.extension);
    }

    #[test]
    fn extensions_the_subscriber_did_not_negotiate_are_dropped() {
        let t0 = Instant::now();
        let only_mid = ExtensionMap::from_pairs([(1, MID_URI)]);
        let rewriter = ExtensionRewriter::new(&publisher(), &only_mid, "video0");
        let mut header = from_publisher();
        let mut tw = 7;
        rewriter.rewrite(&mut header, t0, t0, &mut tw);
        assert_eq!(header.extensions, vec![ext(1, b"video0")]);
        // No transport-wide number used.
        assert_eq!(tw, 7);

        // Nothing negotiated at all: no extension block.
        let rewriter = ExtensionRewriter::new(&publisher(), &ExtensionMap::new(), "0");
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut tw);
        assert!(!header.extension);
        assert!(header.extensions.is_empty());
        assert_eq!(header.extension_profile, 0);
        let packet = Packet {
            header,
            payload: Bytes::from_static(&[1, 2, 3]),
        };
        assert_eq!(packet.marshal().unwrap().len(), 12 + 3);
    }

    #[test]
    fn extensions_the_publisher_did_not_send_are_not_invented() {
        let t0 = Instant::now();
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "1");
        let mut header = Header {
            version: 2,
            ..Default::default()
        };
        let mut tw = 0;
        rewriter.rewrite(&mut header, t0, t0, &mut tw);
        assert_eq!(ids(&header), vec![6, 7, 8]);
        // The publisher negotiated no audio level: none is copied even if
        // an id that happens to match the subscriber's arrives.
        let publisher = ExtensionMap::from_pairs([(5, TRANSPORT_CC_URI)]);
        let rewriter = ExtensionRewriter::new(&publisher, &subscriber(), "1");
        let mut header = Header::default();
        set_extensions(&mut header, vec![ext(5, &[0x00, 0x01])]);
        rewriter.rewrite(&mut header, t0, t0, &mut tw);
        assert_eq!(ids(&header), vec![6, 7, 8]);
    }

    #[test]
    fn a_generic_rfc3550_extension_block_is_dropped() {
        let t0 = Instant::now();
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "1");
        let mut header = Header {
            version: 2,
            extension: true,
            extension_profile: 0x1234,
            extensions: vec![ext(0, &[0x10, 0, 0, 0])],
            ..Default::default()
        };
        let mut tw = 0;
        rewriter.rewrite(&mut header, t0, t0, &mut tw);
        assert_eq!(ids(&header), vec![6, 7, 8]);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
        assert_eq!(audio_level(&Header::default(), &publisher()), None);
    }

    #[test]
    fn the_transport_wide_sequence_increments_and_wraps() {
        let t0 = Instant::now();
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "0");
        let mut tw = 65534;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut header = from_publisher();
            rewriter.rewrite(&mut header, t0, t0, &mut tw);
            let b = find(&header, 7).unwrap();
            seen.push(u16::from_be_bytes([b[0], b[1]]));
        }
        assert_eq!(seen, vec![65534, 65535, 0]);
        assert_eq!(tw, 1);
    }

    #[test]
    fn abs_send_time_is_6_18_fixed_point_seconds() {
        assert_eq!(abs_send_time(Duration::ZERO), 0);
        assert_eq!(abs_send_time(Duration::from_millis(250)), 0x01_0000);
        assert_eq!(abs_send_time(Duration::from_secs(1)), 0x04_0000);
        assert_eq!(abs_send_time(Duration::from_millis(1500)), 0x06_0000);
        // One unit is 1/262144 s, about 3.8 µs; rounded to nearest.
        assert_eq!(abs_send_time(Duration::from_micros(4)), 1);
        assert_eq!(abs_send_time(Duration::from_micros(1)), 0);
        // Wraps every 64 s.
        assert_eq!(abs_send_time(Duration::from_secs(64)), 0);
        assert_eq!(abs_send_time(Duration::from_millis(65_500)), 0x06_0000);
        assert_eq!(abs_send_time(Duration::from_micros(63_999_996)), 0xFF_FFFF);
        // Within half a unit of 64 s it rounds up to the wrap.
        assert_eq!(abs_send_time(Duration::from_micros(63_999_999)), 0);
        assert_eq!(abs_send_time(Duration::MAX), abs_send_time(Duration::MAX));
        // An epoch in the future counts as zero.
        let t0 = Instant::now();
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "0");
        let mut header = Header::default();
        rewriter.rewrite(&mut header, t0, t0 + Duration::from_secs(1), &mut 0);
        assert_eq!(find(&header, 6), Some(&[0, 0, 0][..]));
    }

    #[test]
    fn two_byte_form_when_an_id_or_payload_does_not_fit_one_byte() {
        let t0 = Instant::now();
        let high_ids = ExtensionMap::from_pairs([(15, AUDIO_LEVEL_URI), (3, MID_URI)]);
        let rewriter = ExtensionRewriter::new(&publisher(), &high_ids, "0");
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut 0);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_eq!(find(&header, 15), Some(&[0x80 | 30][..]));

        let long_mid = "a-mid-of-17-bytes";
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), long_mid);
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut 0);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_eq!(find(&header, 8), Some(long_mid.as_bytes()));

        // Sixteen bytes still fit the one-byte form.
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "sixteen-bytes-id");
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut 0);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);

        // Empty and oversized mids are not written.
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "");
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut 0);
        assert_eq!(find(&header, 8), None);
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), &"m".repeat(256));
        let mut header = from_publisher();
        rewriter.rewrite(&mut header, t0, t0, &mut 0);
        assert_eq!(find(&header, 8), None);
    }

    #[test]
    fn rewritten_headers_survive_the_wire_and_later_set_extension() {
        let t0 = Instant::now();
        for mid in ["0", "a-mid-of-17-bytes"] {
            let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), mid);
            let mut header = from_publisher();
            rewriter.rewrite(&mut header, t0, t0, &mut 5);
            let packet = Packet {
                header,
                payload: Bytes::from_static(&[9; 10]),
            };
            let wire = packet.marshal().unwrap();
            let back = Packet::unmarshal(&mut wire.clone().freeze()).unwrap();
            assert_eq!(back, packet);

            // What rtc's TWCC interceptor does to an outgoing packet.
            let mut tagged = packet.clone();
            tagged
                .header
                .set_extension(12, Bytes::from_static(&[0, 1]))
                .unwrap();
            let wire = tagged.marshal().unwrap();
            let back = Packet::unmarshal(&mut wire.freeze()).unwrap();
            assert_eq!(back.header.extensions, tagged.header.extensions);
        }
    }

    #[test]
    fn send_stamps_cut_from_shared_buffers_keep_their_values_across_buffers() {
        let mut stamps = SendStamps::new();
        let values: Vec<Bytes> = (0..5000u32)
            .map(|i| stamps.value(&i.to_be_bytes()[1..]))
            .collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(&value[..], &(i as u32).to_be_bytes()[1..], "stamp {i}");
        }
    }

    #[test]
    fn a_publisher_header_with_extra_padding_in_its_block_is_normalised() {
        // One-byte block of 2 words: audio level (2 bytes) then 6 zero bytes
        // of padding, which RFC 8285 allows. rtc counts all 6 as padding.
        let wire = [
            0x90, 0x6F, 0x00, 0x01, 0, 0, 0, 2, 0, 0, 0, 3, 0xBE, 0xDE, 0x00, 0x02, 0x10, 0x9E, 0,
            0, 0, 0, 0, 0, 0xAA,
        ];
        let mut packet = Packet::unmarshal(&mut Bytes::copy_from_slice(&wire)).unwrap();
        assert_eq!(packet.payload[..], [0xAA]);
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "0");
        rewriter.rewrite(&mut packet.header, Instant::now(), Instant::now(), &mut 0);
        let out = packet.marshal().unwrap();
        let back = Packet::unmarshal(&mut out.freeze()).unwrap();
        assert_eq!(back.header.extensions, packet.header.extensions);
        assert_eq!(find(&back.header, 5), Some(&[0x9E][..]));
    }

    #[test]
    fn reads_the_publishers_audio_level() {
        let header = from_publisher();
        assert_eq!(
            audio_level(&header, &publisher()),
            Some(AudioLevelExtension {
                level: 30,
                voice: true
            })
        );
        let mut quiet = Header::default();
        set_extensions(&mut quiet, vec![ext(1, &[127])]);
        assert_eq!(
            audio_level(&quiet, &publisher()),
            Some(AudioLevelExtension {
                level: 127,
                voice: false
            })
        );
        // Not negotiated on the publisher's leg, absent, or empty.
        assert_eq!(audio_level(&header, &ExtensionMap::new()), None);
        assert_eq!(audio_level(&Header::default(), &publisher()), None);
        let mut empty = Header::default();
        set_extensions(&mut empty, vec![ext(1, &[])]);
        assert_eq!(empty.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_eq!(audio_level(&empty, &publisher()), None);
        // Nor is an empty one forwarded.
        let rewriter = ExtensionRewriter::new(&publisher(), &subscriber(), "0");
        rewriter.rewrite(&mut empty, Instant::now(), Instant::now(), &mut 0);
        assert_eq!(ids(&empty), vec![6, 7, 8]);
        assert_eq!(empty.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
    }
}
