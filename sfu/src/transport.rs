//! A transport: one participant's `rtc` peer connection (publisher or
//! subscriber) with what the shard keeps beside it: ICE credentials, the
//! client's routes, liveness, and the DTLS flight replay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::shared::TransportProtocol;

use crate::bwe::TransportEstimate;
use crate::dtls_flight::FlightReplay;
use crate::engine::Hooks;
use crate::ice_creds::IceCreds;
use crate::route::Routes;
use crate::session::{EstimateSource, TransportRole};
use crate::timers::Scheduled;

pub(crate) type TransportId = u64;

/// Most ICE-TCP connections one transport may hold (a client opens one per
/// candidate pair it checks; more is someone replaying a ufrag).
pub(crate) const MAX_TCP_PER_TRANSPORT: usize = 4;

/// One `rtc` peer connection of one participant.
pub(crate) struct Transport {
    pub(crate) role: TransportRole,
    pub(crate) room: String,
    pub(crate) participant_sid: String,
    pub(crate) pc: RTCPeerConnection,
    /// Our ICE credentials, to check the client's requests before the agent
    /// does, and the ones presented after a restart.
    pub(crate) ice: IceCreds,
    /// The client's proven routes and the one media goes out on.
    pub(crate) routes: Routes,
    /// When anything (STUN, DTLS, SRTP, SRTCP) last arrived from the client.
    pub(crate) last_heard: Option<Instant>,
    /// Until its DTLS completes: when its ICE first connected, or the
    /// client last sent a DTLS datagram if later. DTLS must complete within
    /// the deadline of this; a client still retransmitting its flights
    /// (doubling its timer under loss) is given the time.
    pub(crate) dtls_waiting_since: Option<Instant>,
    /// Its participant is reconnecting: traffic arriving may end that.
    pub(crate) owner_reconnecting: bool,
    pub(crate) next_timeout: Option<Instant>,
    /// Its entry in the shard's timer heap.
    pub(crate) scheduled: Scheduled,
    /// Publisher transports: the client's track id → our producer's sid.
    pub(crate) producers: HashMap<String, String>,
    /// Publisher transports: the SSRC of each stream the client sends →
    /// our producer's sid (how inbound RTP is routed).
    pub(crate) producer_by_ssrc: HashMap<u32, String>,
    /// Subscriber transports: the SSRC of each consumer we send on it →
    /// the producer it consumes (how the subscriber's PLI/FIR/NACK find it).
    pub(crate) consumed_by_ssrc: HashMap<u32, String>,
    pub(crate) connected: bool,
    /// In `Shard::dirty`, so a fan-out marks each subscriber once in O(1).
    pub(crate) queued: bool,
    /// Datagrams that arrived before the remote description (see `handle_datagram`).
    pub(crate) early: Vec<(TransportProtocol, SocketAddr, BytesMut)>,
    /// Its participant's media is held (`Participant::media_held`): kept
    /// here too, so the forwarding loop reads it from the transport it holds.
    pub(crate) media_held: bool,
    /// Subscriber transports: the transport-wide sequence number of the
    /// next packet sent, shared by all its streams.
    pub(crate) transport_seq: u16,
    /// When it was created: abs-send-time counts from here.
    pub(crate) epoch: Instant,
    /// Subscriber transports: what its downlink can take, bits per second:
    /// our send-side estimate, or what the browser said (REMB).
    pub(crate) estimate: Option<u64>,
    /// Where `estimate` came from.
    pub(crate) estimate_source: Option<EstimateSource>,
    /// Subscriber transports: the send-side estimate on the subscriber's
    /// transport-wide feedback (module `bwe`), made when the first packet
    /// numbered transport-wide goes out.
    pub(crate) send_side: Option<Box<TransportEstimate>>,
    /// When transport-wide feedback last reported packets we sent.
    pub(crate) feedback_heard_at: Option<Instant>,
    /// The send-side estimate last applied, and when.
    pub(crate) send_side_applied: Option<(u64, Instant)>,
    /// When that estimate last fell by more than 10%.
    pub(crate) estimate_fell_at: Option<Instant>,
    /// Our last DTLS flight, sent again when the client repeats its own.
    pub(crate) flights: FlightReplay,
    /// What its interceptors of ours share with the shard: a publisher's
    /// forgotten simulcast layers, a subscriber's refused resends.
    pub(crate) hooks: Hooks,
}

/// Datagrams kept per transport while its remote description is on its way.
pub(crate) const MAX_EARLY_DATAGRAMS: usize = 8;
