//! The state one media worker owns: its rooms, their participants'
//! transports, and the tables that route datagrams and RTP packets. No I/O
//! happens here: the worker loop feeds datagrams (UDP, or ICE-TCP frames),
//! commands and time in, and takes datagrams out (`poll_transmit`), the way
//! quinn-proto splits protocol state from sockets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, info, warn};

use crate::config::SfuConfig;
use crate::dtls_flight::{FlightReplay, Inbound, Outbound, is_dtls};
use crate::engine::new_peer_connection;
use crate::ice_creds::{Checked, Credentials, IceCreds};
use crate::ids;
use crate::metrics::WorkerMetrics;
use crate::outbox::Outbox;
use crate::route::{Arrival, Route, Routes};
use crate::sdp_check;
use crate::session::{
    JoinRequest, LeaveReason, ParticipantEvent, ParticipantInfo, ReconnectReason, Resumed,
    RoomInfo, SfuError, TrackInfo, TrackKind, TransportRole,
};
use crate::stun::{self, ice_username};

pub(crate) type TransportId = u64;

/// A participant admitted to a room: what its client is told in `joined`.
/// Its events come out of `Shard::poll_event` under `participant.sid`.
pub(crate) struct Admission {
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
}

/// A datagram for the worker loop to send: on the UDP socket, or framed on
/// the ICE-TCP connection from `to`.
pub(crate) struct Transmit {
    pub protocol: TransportProtocol,
    pub to: SocketAddr,
    pub payload: BytesMut,
}

/// How often participants' liveness is judged (silence, grace, DTLS deadline).
const LIVENESS_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Most ICE-TCP connections one transport may hold (a client opens one per
/// candidate pair it checks; more is someone replaying a ufrag).
const MAX_TCP_PER_TRANSPORT: usize = 4;

/// One `rtc` peer connection of one participant.
struct Transport {
    role: TransportRole,
    room: String,
    participant_sid: String,
    pc: RTCPeerConnection,
    /// Our ICE credentials, to check the client's requests before the agent
    /// does, and the ones presented after a restart.
    ice: IceCreds,
    /// The client's proven routes and the one media goes out on.
    routes: Routes,
    /// When anything (STUN, DTLS, SRTP, SRTCP) last arrived from the client.
    last_heard: Option<Instant>,
    /// Until its DTLS completes: when its ICE first connected, or the
    /// client last sent a DTLS datagram if later. DTLS must complete within
    /// the deadline of this; a client still retransmitting its flights
    /// (doubling its timer under loss) is given the time.
    dtls_waiting_since: Option<Instant>,
    /// Its participant is reconnecting: traffic arriving may end that.
    owner_reconnecting: bool,
    next_timeout: Option<Instant>,
    /// Publisher transports: the client's track id → our producer's sid.
    producers: HashMap<String, String>,
    connected: bool,
    /// In `Shard::dirty`, so a fan-out marks each subscriber once in O(1).
    queued: bool,
    /// Datagrams that arrived before the remote description (see `handle_datagram`).
    early: Vec<(TransportProtocol, SocketAddr, BytesMut)>,
    /// Its participant's media is held (`Participant::media_held`): kept
    /// here too, so the forwarding loop reads it from the transport it holds.
    media_held: bool,
    /// Our last DTLS flight, sent again when the client repeats its own.
    flights: FlightReplay,
}

/// Datagrams kept per transport while its remote description is on its way.
const MAX_EARLY_DATAGRAMS: usize = 8;

/// A track received from a publisher, forwarded to its consumers.
struct Producer {
    sid: String,
    owner_sid: String,
    transport: TransportId,
    receiver_id: RTCRtpReceiverId,
    kind: TrackKind,
    mid: Option<String>,
    codec: RTCRtpCodec,
    media_ssrc: u32,
    muted: bool,
    consumers: Vec<Consumer>,
    last_keyframe_request: Option<Instant>,
}

/// One producer forwarded to one subscriber.
struct Consumer {
    subscriber_sid: String,
    transport: TransportId,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    /// Payload type the subscriber's leg negotiated for the producer's codec;
    /// known once its answer is applied.
    payload_type: Option<u8>,
}

struct Participant {
    sid: String,
    identity: String,
    name: String,
    can_publish: bool,
    can_subscribe: bool,
    publisher: Option<TransportId>,
    subscriber: Option<TransportId>,
    /// A subscribe offer is out and its answer not yet in.
    offer_pending: bool,
    /// Subscriptions changed while an offer was pending.
    needs_offer: bool,
    /// Producer sid → the consumer's sender on this participant's subscriber transport.
    subscriptions: HashMap<String, RTCRtpSenderId>,
    /// One of its transports has connected.
    media_connected: bool,
    /// Nothing is forwarded from or to it until the control plane releases
    /// it (a paid call waiting for its first hold in the ledger).
    media_held: bool,
    /// Its signaling connection is gone and not yet resumed.
    detached: bool,
    reconnecting: Option<Reconnecting>,
}

/// A participant whose connection is lost, waiting to resume.
#[derive(Debug, Clone, Copy)]
struct Reconnecting {
    /// When it was declared: the grace runs from here.
    declared: Instant,
    /// When its traffic (or its signaling) stopped: traffic after this
    /// means it is back.
    stopped_at: Instant,
}

struct Room {
    name: String,
    sid: String,
    participants: HashMap<String, Participant>,
    producers: HashMap<String, Producer>,
    empty_since: Option<Instant>,
}

pub(crate) struct Shard {
    config: SfuConfig,
    /// Index of the worker owning this shard, the prefix of its ufrags.
    worker: usize,
    /// The address in our UDP ICE candidates; `TransportContext.local_addr` must equal it.
    local_addr: SocketAddr,
    /// The address in our passive TCP ICE candidates; likewise for TCP frames.
    tcp_addr: SocketAddr,
    rooms: HashMap<String, Room>,
    transports: HashMap<TransportId, Transport>,
    by_addr: HashMap<Route, TransportId>,
    by_ufrag: HashMap<String, TransportId>,
    next_transport_id: TransportId,
    transmits: VecDeque<Transmit>,
    /// ICE-TCP connections whose transport closed, for the worker to close.
    closed_tcp: Vec<SocketAddr>,
    /// Transports that may have output since they were last drained.
    dirty: Vec<TransportId>,
    inbound_rtp: Vec<(String, rtp::Packet)>,
    /// Transports of reconnecting participants that heard traffic.
    heard_again: Vec<TransportId>,
    next_liveness_check: Option<Instant>,
    metrics: WorkerMetrics,
    /// Events for participants, polled out by the worker.
    outbox: Outbox,
}

fn kind_of(kind: RtpCodecKind) -> TrackKind {
    match kind {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    }
}

fn rtc_kind(kind: TrackKind) -> RtpCodecKind {
    match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    }
}

impl Participant {
    fn info(&self, room: &Room) -> ParticipantInfo {
        let mut tracks: Vec<TrackInfo> = room
            .producers
            .values()
            .filter(|p| p.owner_sid == self.sid)
            .map(Producer::info)
            .collect();
        tracks.sort_by(|a, b| a.sid.cmp(&b.sid));
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            can_publish: self.can_publish,
            can_subscribe: self.can_subscribe,
            tracks,
        }
    }
}

impl Producer {
    fn info(&self) -> TrackInfo {
        TrackInfo {
            sid: self.sid.clone(),
            kind: self.kind,
            muted: self.muted,
            mid: self.mid.clone(),
            codec: self.codec.mime_type.clone(),
        }
    }
}

impl Room {
    fn info(&self, max_participants: usize) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            sid: self.sid.clone(),
            max_participants,
            num_participants: self.participants.len(),
            num_tracks: self.producers.len(),
        }
    }

    fn broadcast(&self, outbox: &mut Outbox, except: Option<&str>, event: &ParticipantEvent) {
        for p in self.participants.values() {
            if Some(p.sid.as_str()) != except {
                outbox.send(&p.sid, event.clone());
            }
        }
    }
}

impl Shard {
    pub(crate) fn new(
        config: SfuConfig,
        worker: usize,
        local_addr: SocketAddr,
        tcp_addr: SocketAddr,
        metrics: WorkerMetrics,
    ) -> Self {
        Shard {
            config,
            worker,
            local_addr,
            tcp_addr,
            rooms: HashMap::new(),
            transports: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            next_transport_id: 1,
            transmits: VecDeque::new(),
            closed_tcp: Vec::new(),
            dirty: Vec::new(),
            inbound_rtp: Vec::new(),
            heard_again: Vec::new(),
            next_liveness_check: None,
            metrics,
            outbox: Outbox::default(),
        }
    }

    /// The next event for a participant: (its sid, the event).
    pub(crate) fn poll_event(&mut self) -> Option<(String, ParticipantEvent)> {
        self.outbox.poll()
    }

    #[cfg(test)]
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    pub(crate) fn count_send_failure(&self) {
        self.metrics.drop_send_failed.inc();
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next ICE-TCP connection (by peer address) whose transport is gone.
    /// Poll after `poll_transmit` is drained, so its last output (the DTLS
    /// close) is queued on the connection first.
    pub(crate) fn poll_closed_tcp(&mut self) -> Option<SocketAddr> {
        self.closed_tcp.pop()
    }

    /// Whether a new ICE-TCP connection whose first STUN request names our
    /// `ufrag` may attach to its transport.
    pub(crate) fn accepts_tcp(&self, ufrag: &str) -> bool {
        self.by_ufrag
            .get(ufrag)
            .and_then(|id| self.transports.get(id))
            .is_some_and(|t| t.routes.count(TransportProtocol::TCP) < MAX_TCP_PER_TRANSPORT)
    }

    /// An ICE-TCP connection ended: its address routes nowhere any more.
    pub(crate) fn forget_tcp(&mut self, peer: SocketAddr) {
        let route = (TransportProtocol::TCP, peer);
        if let Some(id) = self.by_addr.remove(&route)
            && let Some(t) = self.transports.get_mut(&id)
        {
            t.routes.forget(route);
        }
    }

    /// Earliest instant at which `handle_timeout` has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let transports = self.transports.values().filter_map(|t| t.next_timeout);
        let rooms = self
            .rooms
            .values()
            .filter_map(|r| r.empty_since.map(|s| s + self.config.empty_room_timeout));
        transports
            .chain(rooms)
            .chain(self.next_liveness_check)
            .min()
    }

    // ---- datagrams -------------------------------------------------------

    /// One datagram, or one RFC 4571 frame of an ICE-TCP connection
    /// (`protocol` TCP, `from` the connection's peer address).
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        protocol: TransportProtocol,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.metrics.bytes_in.inc_by(data.len() as u64);
        let route = (protocol, from);
        let known = self.by_addr.get(&route).copied();
        let Some(id) = known
            .or_else(|| ice_username(data).and_then(|ufrag| self.by_ufrag.get(&ufrag).copied()))
        else {
            self.metrics.drop_unknown_source.inc();
            return;
        };
        let local_addr = self.local_addr_for(protocol);
        let Some(transport) = self.transports.get_mut(&id) else {
            self.metrics.drop_unknown_source.inc();
            return;
        };
        // The ICE agent would drop a request with the wrong credentials
        // without a trace; check it here so the drop is counted, and so a
        // forged request never routes a new address to the transport.
        let mut resigned = None;
        let arrival = if stun::is_binding_request(data) {
            match transport.ice.check_request(data) {
                None => {
                    self.metrics.drop_stun_unauthenticated.inc();
                    return;
                }
                Some(Checked::AsIs) => {}
                Some(Checked::Resigned(again)) => resigned = Some(again),
            }
            if stun::nominates(data) {
                Arrival::Nomination
            } else {
                Arrival::Check
            }
        } else {
            Arrival::Media
        };
        if known.is_none() {
            transport.routes.learn(route, now);
            self.by_addr.insert(route, id);
        }
        let had_route = transport.routes.active().is_some();
        let moved = transport.routes.heard(route, now, arrival) && had_route;
        if moved {
            debug!(transport = id, ?route, "media route moved");
        }
        transport.last_heard = Some(now);
        if !transport.connected && is_dtls(data) && transport.dtls_waiting_since.is_some() {
            transport.dtls_waiting_since = Some(now);
        }
        if transport.owner_reconnecting {
            self.heard_again.push(id);
        }
        let data = resigned.as_deref().unwrap_or(data);
        let flight = transport.flights.inbound(data);
        if flight == Inbound::Stale {
            self.metrics.drop_dtls_stale.inc();
            return;
        }
        if flight == Inbound::Retransmission {
            // rtc-dtls does not answer a repeated client flight (module
            // `dtls_flight`); we do, with what it sent last time.
            for payload in transport.flights.resend(now) {
                self.metrics.dtls_flight_resends.inc();
                self.metrics.bytes_out.inc_by(payload.len() as u64);
                self.transmits.push_back(Transmit {
                    protocol,
                    to: from,
                    payload,
                });
            }
        }
        // A client starts its checks as soon as it has our offer, before
        // its answer reaches us; the ICE agent cannot judge them yet and
        // would drop them, costing a retransmission (200 ms of join time).
        // Keep the first few and replay them once the answer is applied.
        if !transport.connected
            && transport.early.len() < MAX_EARLY_DATAGRAMS
            && transport.pc.remote_description().is_none()
        {
            transport.early.push((protocol, from, BytesMut::from(data)));
            return;
        }
        if transport
            .pc
            .handle_read(tagged(
                now,
                protocol,
                local_addr,
                from,
                BytesMut::from(data),
            ))
            .is_err()
        {
            self.metrics.drop_malformed.inc();
        }
        self.drive(now, id);
        if moved {
            self.keyframes_after_a_move(now, id);
        }
        self.resume_heard(now);
        self.flush(now);
    }

    /// Media lost on the old path left decoders waiting for a keyframe:
    /// ask for one at once rather than at the receiver's next request
    /// (Chromium asks every ~3 s while stalled, and the one it sent before
    /// the move went to the dead path).
    fn keyframes_after_a_move(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get(&id) else {
            return;
        };
        let (room, sid, role) = (t.room.clone(), t.participant_sid.clone(), t.role);
        match role {
            TransportRole::Publisher => {
                let own: Vec<String> = t.producers.values().cloned().collect();
                for producer in own {
                    self.request_keyframe(now, &room, &producer);
                }
            }
            TransportRole::Subscriber => self.request_keyframes_for(now, &room, &sid),
        }
    }

    /// The address our candidate for `protocol` has: what rtc must see as
    /// the local address of a datagram: its ICE agent matches inbound
    /// datagrams to a local candidate by that address and drops the rest.
    fn local_addr_for(&self, protocol: TransportProtocol) -> SocketAddr {
        match protocol {
            TransportProtocol::TCP => self.tcp_addr,
            _ => self.local_addr,
        }
    }

    /// Feeds a transport the datagrams that came before its remote description.
    fn replay_early(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let early = std::mem::take(&mut t.early);
        for (protocol, from, message) in early {
            let local_addr = self.local_addr_for(protocol);
            let Some(t) = self.transports.get_mut(&id) else {
                return;
            };
            if t.pc
                .handle_read(tagged(now, protocol, local_addr, from, message))
                .is_err()
            {
                self.metrics.drop_malformed.inc();
            }
        }
    }

    // ---- time ------------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransportId> = self
            .transports
            .iter()
            .filter(|(_, t)| t.next_timeout.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(t) = self.transports.get_mut(&id) {
                t.next_timeout = None;
                if let Err(e) = t.pc.handle_timeout(now) {
                    debug!(transport = id, error = %e, "timeout handling failed");
                }
                if !t.connected
                    && let Some((protocol, to)) = t.routes.active()
                {
                    for payload in t.flights.resend_on_timer(now) {
                        self.metrics.dtls_flight_resends.inc();
                        self.metrics.bytes_out.inc_by(payload.len() as u64);
                        self.transmits.push_back(Transmit {
                            protocol,
                            to,
                            payload,
                        });
                    }
                }
            }
            self.drive(now, id);
        }
        self.flush(now);

        let expired: Vec<String> = self
            .rooms
            .values()
            .filter(|r| {
                r.participants.is_empty()
                    && r.empty_since
                        .is_some_and(|s| s + self.config.empty_room_timeout <= now)
            })
            .map(|r| r.name.clone())
            .collect();
        for name in expired {
            info!(room = %name, "closing empty room");
            self.rooms.remove(&name);
            self.metrics.rooms.dec();
        }

        if self.next_liveness_check.is_some_and(|at| at <= now) {
            self.check_liveness(now);
        }
        self.next_liveness_check = (!self.transports.is_empty()).then(|| {
            self.next_liveness_check
                .filter(|at| *at > now)
                .unwrap_or(now + LIVENESS_TICK)
        });
    }

    // ---- liveness ----------------------------------------------------------

    fn participant(&self, room: &str, sid: &str) -> Option<&Participant> {
        self.rooms.get(room)?.participants.get(sid)
    }

    fn participant_mut(&mut self, room: &str, sid: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(sid)
    }

    /// When anything last arrived on any of a participant's transports.
    fn last_heard(&self, p: &Participant) -> Option<Instant> {
        [p.publisher, p.subscriber]
            .into_iter()
            .flatten()
            .filter_map(|id| self.transports.get(&id)?.last_heard)
            .max()
    }

    /// Declares participants reconnecting after the silence window, ends
    /// those past the grace, and those whose DTLS did not complete in time.
    fn check_liveness(&mut self, now: Instant) {
        let (silence, grace, dtls) = (
            self.config.reconnect_after_silence,
            self.config.reconnect_grace,
            self.config.dtls_timeout,
        );
        let mut silent = Vec::new();
        let mut lost = Vec::new();
        let mut stalled = Vec::new();
        for room in self.rooms.values() {
            for p in room.participants.values() {
                let heard = self.last_heard(p);
                match p.reconnecting {
                    None if !p.detached && p.media_connected => {
                        if let Some(heard) = heard.filter(|h| *h + silence <= now) {
                            silent.push((room.name.clone(), p.sid.clone(), heard));
                        }
                    }
                    Some(r) if r.declared + grace <= now => {
                        lost.push((room.name.clone(), p.sid.clone()));
                    }
                    _ => {}
                }
                let stalled_transport = [p.publisher, p.subscriber]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.transports.get(&id))
                    .find(|t| {
                        !t.connected && t.dtls_waiting_since.is_some_and(|at| at + dtls <= now)
                    });
                if let Some(t) = stalled_transport {
                    warn!(room = %room.name, participant = %p.sid, role = ?t.role, handshake = %t.flights.describe(), "DTLS did not complete in time");
                    stalled.push((room.name.clone(), p.sid.clone()));
                }
            }
        }
        for (room, sid, heard) in silent {
            self.declare_reconnecting(
                now,
                &room,
                &sid,
                heard,
                Some(now.saturating_duration_since(heard)),
            );
        }
        for (room, sid) in lost {
            self.remove_participant(now, &room, &sid, LeaveReason::ConnectionLost);
        }
        for (room, sid) in stalled {
            self.remove_participant(now, &room, &sid, LeaveReason::DtlsTimeout);
        }
    }

    /// Marks a participant reconnecting and tells the others (and, when
    /// its media went silent while its signaling is up, the participant).
    fn declare_reconnecting(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        stopped_at: Instant,
        silent_for: Option<std::time::Duration>,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(p) = room.participants.get_mut(sid) else {
            return;
        };
        if p.reconnecting.is_some() {
            return;
        }
        p.reconnecting = Some(Reconnecting {
            declared: now,
            stopped_at,
        });
        // Detached, traffic cannot bring it back (its signaling must come
        // first): no per-packet check until `attach`.
        let watch = !p.detached;
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.owner_reconnecting = watch;
            }
        }
        info!(room = %room_name, participant = %sid, identity = %p.identity, "participant reconnecting");
        self.metrics.reconnecting.inc();
        if let Some(silent_for) = silent_for {
            self.outbox.send(
                &p.sid,
                ParticipantEvent::Reconnecting {
                    reason: ReconnectReason::MediaSilent,
                    silent_for,
                },
            );
        }
        let event = ParticipantEvent::ParticipantReconnecting {
            participant_sid: sid.to_owned(),
            identity: p.identity.clone(),
        };
        room.broadcast(&mut self.outbox, Some(sid), &event);
    }

    /// Resumes the reconnecting participants whose transports heard traffic.
    fn resume_heard(&mut self, now: Instant) {
        while let Some(id) = self.heard_again.pop() {
            let Some(t) = self.transports.get(&id) else {
                continue;
            };
            let (room, sid) = (t.room.clone(), t.participant_sid.clone());
            self.try_resume(now, &room, &sid);
        }
    }

    /// A reconnecting participant is back once its signaling is attached and
    /// traffic arrived after it stopped.
    fn try_resume(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self.participant(room_name, sid) else {
            return;
        };
        let Some(r) = p.reconnecting else {
            return;
        };
        // With media, back means traffic after it stopped; a participant
        // whose media never connected is back with its signaling.
        let heard_since = self.last_heard(p).is_some_and(|h| h > r.stopped_at);
        if p.detached || (p.media_connected && !heard_since) {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(p) = room.participants.get_mut(sid) else {
            return;
        };
        p.reconnecting = None;
        self.metrics.reconnecting.dec();
        self.metrics.resumes.inc();
        info!(room = %room_name, participant = %sid, identity = %p.identity, "participant resumed");
        self.outbox.send(&p.sid, ParticipantEvent::Resumed);
        let event = ParticipantEvent::ParticipantResumed {
            participant_sid: sid.to_owned(),
            identity: p.identity.clone(),
        };
        room.broadcast(&mut self.outbox, Some(sid), &event);
        self.watch_traffic(room_name, sid, false);
        // The others' decoders lost its video, and its own lost theirs.
        self.request_keyframes_both_ways(now, room_name, sid);
    }

    /// The participant's signaling connection is gone (without `leave`):
    /// keep it for the grace, reconnecting.
    pub(crate) fn detach(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self.participant_mut(room_name, sid) else {
            return;
        };
        p.detached = true;
        self.declare_reconnecting(now, room_name, sid, now, None);
        self.watch_traffic(room_name, sid, false);
        self.flush(now);
    }

    /// Whether traffic on the participant's transports is checked against
    /// its reconnecting state (`Transport::owner_reconnecting`).
    fn watch_traffic(&mut self, room_name: &str, sid: &str, on: bool) {
        let Some(p) = self.participant(room_name, sid) else {
            return;
        };
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.owner_reconnecting = on;
            }
        }
    }

    /// The participant's signaling is back (`resume`): the room as it is,
    /// and a subscribe offer restarting ICE on its subscriber transport.
    pub(crate) fn attach(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Result<Resumed, SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::ParticipantNotFound)?;
        room.participants
            .get_mut(sid)
            .ok_or(SfuError::ParticipantNotFound)?
            .detached = false;
        let participant = room
            .participants
            .get(sid)
            .ok_or(SfuError::ParticipantNotFound)?
            .info(room);
        let mut others: Vec<ParticipantInfo> = room
            .participants
            .values()
            .filter(|o| o.sid != sid)
            .map(|o| o.info(room))
            .collect();
        others.sort_by(|a, b| a.identity.cmp(&b.identity));
        let resumed = Resumed {
            room: room.info(self.config.max_participants),
            participant,
            others,
        };
        self.restart_subscriber(now, room_name, sid);
        self.try_resume(now, room_name, sid);
        // Not back yet: its next traffic will be.
        let waiting = self
            .participant(room_name, sid)
            .is_some_and(|p| p.reconnecting.is_some());
        self.watch_traffic(room_name, sid, waiting);
        self.flush(now);
        Ok(resumed)
    }

    /// A subscribe offer with new ICE credentials (`ice_restart`).
    pub(crate) fn ice_restart(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Result<(), SfuError> {
        self.participant_transport(room_name, sid, TransportRole::Subscriber)?;
        self.restart_subscriber(now, room_name, sid);
        self.flush(now);
        Ok(())
    }

    /// Presents new ICE credentials on the participant's subscriber
    /// transport and offers them. An offer still unanswered (its answer was
    /// lost with the connection) is rolled back first.
    fn restart_subscriber(&mut self, now: Instant, room_name: &str, sid: &str) {
        // Field by field: the participant and its transport are borrowed together.
        let Some(p) = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.get_mut(sid))
        else {
            return;
        };
        let Some(tid) = p.subscriber else {
            return;
        };
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        if p.offer_pending {
            let rolled_back = RTCSessionDescription::rollback(None)
                .and_then(|rollback| t.pc.set_local_description(now, rollback));
            if let Err(e) = rolled_back {
                warn!(transport = tid, error = %e, "could not roll an unanswered offer back");
            }
            p.offer_pending = false;
        }
        let (ufrag, pwd) = ids::ice_credentials(self.worker);
        self.by_ufrag.insert(ufrag.clone(), tid);
        if let Some(retired) = t.ice.rotate(Credentials { ufrag, pwd }) {
            self.by_ufrag.remove(&retired);
        }
        self.negotiate_subscriber(now, room_name, sid);
    }

    // ---- the engine ------------------------------------------------------

    /// Handles everything transport `id` produced: events, inbound media,
    /// and its outbound datagrams.
    fn drive(&mut self, now: Instant, id: TransportId) {
        let mut events = Vec::new();
        let mut keyframe_ssrcs = Vec::new();
        let mut inbound = std::mem::take(&mut self.inbound_rtp);
        {
            let Some(t) = self.transports.get_mut(&id) else {
                return;
            };
            while let Some(event) = t.pc.poll_event() {
                events.push(event);
            }
            while let Some(TaggedRTCMessage { message, .. }) = t.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(track_id, packet) => inbound.push((track_id, packet)),
                    RTCMessage::RtcpPacket(_, packets) => {
                        for p in packets {
                            let any = p.as_any();
                            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                keyframe_ssrcs.push(pli.media_ssrc);
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                keyframe_ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
                            } else if any.is::<TransportLayerNack>() {
                                self.metrics.nacks.inc();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for event in events {
            self.handle_pc_event(now, id, event);
        }
        for (track_id, packet) in inbound.drain(..) {
            self.forward(now, id, &track_id, packet);
        }
        self.inbound_rtp = inbound;
        for ssrc in keyframe_ssrcs {
            self.relay_keyframe_request(now, id, ssrc);
        }
        self.mark_dirty(id);
    }

    fn mark_dirty(&mut self, id: TransportId) {
        if let Some(t) = self.transports.get_mut(&id)
            && !t.queued
        {
            t.queued = true;
            self.dirty.push(id);
        }
    }

    /// Sends what the dirty transports have queued, and learns their next timeouts.
    fn flush(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            let Some(t) = self.transports.get_mut(&id) else {
                continue;
            };
            t.queued = false;
            while let Some(out) = t.pc.poll_write() {
                let mut payload = out.message;
                let (mut protocol, mut to) =
                    (out.transport.transport_protocol, out.transport.peer_addr);
                if is_stun(&payload) {
                    // Answers go where their request came from.
                    if t.ice.translating() {
                        match t.ice.outbound(&payload) {
                            None => continue,
                            Some(None) => {}
                            Some(Some(resigned)) => payload = BytesMut::from(&resigned[..]),
                        }
                    }
                } else if let Some((p, addr)) = t.routes.active() {
                    // Media, RTCP and DTLS go where the client is now (module `route`).
                    (protocol, to) = (p, addr);
                }
                self.metrics.bytes_out.inc_by(payload.len() as u64);
                if t.flights.outbound(now, &payload) == Outbound::Suppress {
                    self.metrics.drop_dtls_rtc_resend.inc();
                    continue;
                }
                self.transmits.push_back(Transmit {
                    protocol,
                    to,
                    payload,
                });
            }
            t.next_timeout = t.pc.poll_timeout();
            if !t.connected
                && let Some(at) = t.flights.next_timer()
            {
                t.next_timeout = Some(t.next_timeout.map_or(at, |n| n.min(at)));
            }
        }
    }

    fn forward(
        &mut self,
        now: Instant,
        from: TransportId,
        track_id: &str,
        mut packet: rtp::Packet,
    ) {
        self.metrics.packets_in.inc();
        let Some(t) = self.transports.get(&from) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        if t.media_held {
            self.metrics.drop_media_held.inc();
            return;
        }
        let Some(producer_sid) = t.producers.get(track_id) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        let Some(room) = self.rooms.get_mut(&t.room) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            self.metrics.drop_unroutable.inc();
            return;
        };
        if producer.muted {
            self.metrics.drop_muted.inc();
            return;
        }
        // Extension ids are negotiated per leg; the subscriber's interceptors
        // add the ones its leg needs (transport-wide sequence numbers).
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extension_profile = 0;
        for consumer in &mut producer.consumers {
            let Some(sub) = self.transports.get_mut(&consumer.transport) else {
                self.metrics.drop_unroutable.inc();
                continue;
            };
            if !sub.connected {
                self.metrics.drop_not_connected.inc();
                continue;
            }
            if sub.media_held {
                self.metrics.drop_media_held.inc();
                continue;
            }
            let payload_type = match consumer.payload_type {
                Some(pt) => pt,
                None => {
                    match negotiated_payload_type(&mut sub.pc, consumer.sender_id, &producer.codec)
                    {
                        Some(pt) => {
                            consumer.payload_type = Some(pt);
                            pt
                        }
                        None => {
                            self.metrics.drop_not_negotiated.inc();
                            continue;
                        }
                    }
                }
            };
            let mut out = packet.clone();
            out.header.ssrc = consumer.ssrc;
            out.header.payload_type = payload_type;
            // Our own SSRC and payload type were checked when the payload type
            // was resolved; `handle_write` skips re-deriving sender parameters
            // on every packet.
            match sub.pc.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), out),
            }) {
                Ok(()) => self.metrics.packets_out.inc(),
                Err(_) => self.metrics.drop_send_failed.inc(),
            }
            if !sub.queued {
                sub.queued = true;
                self.dirty.push(consumer.transport);
            }
        }
    }

    fn relay_keyframe_request(&mut self, now: Instant, subscriber: TransportId, ssrc: u32) {
        let Some(t) = self.transports.get(&subscriber) else {
            return;
        };
        let Some(room) = self.rooms.get(&t.room) else {
            return;
        };
        let producer = room.producers.values().find(|p| {
            p.consumers
                .iter()
                .any(|c| c.transport == subscriber && c.ssrc == ssrc)
        });
        if let Some(sid) = producer.map(|p| p.sid.clone()) {
            let room_name = t.room.clone();
            self.request_keyframe(now, &room_name, &sid);
        }
    }

    /// Asks the publisher of a video producer for a keyframe, at most once per
    /// `keyframe_request_interval`.
    fn request_keyframe(&mut self, now: Instant, room: &str, producer_sid: &str) {
        let Some(room) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            return;
        };
        if producer.kind != TrackKind::Video {
            return;
        }
        if producer
            .last_keyframe_request
            .is_some_and(|at| now < at + self.config.keyframe_request_interval)
        {
            return;
        }
        producer.last_keyframe_request = Some(now);
        let Some(t) = self.transports.get_mut(&producer.transport) else {
            return;
        };
        if let Some(mut receiver) = t.pc.rtp_receiver(producer.receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: producer.media_ssrc,
            };
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                self.metrics.plis.inc();
            }
        }
        let id = producer.transport;
        self.mark_dirty(id);
    }

    fn handle_pc_event(&mut self, now: Instant, id: TransportId, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.open_producer(now, id, init);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                self.close_producer(now, id, &track_id);
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected,
            ) => {
                // The DTLS handshake starts on the next timer tick; run it
                // now rather than up to a tick later (measured: 200 ms of
                // join time when the server is the DTLS client).
                if let Some(t) = self.transports.get_mut(&id) {
                    t.dtls_waiting_since.get_or_insert(now);
                    let _ = t.pc.handle_timeout(now);
                    self.drive(now, id);
                }
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(t) = self.transports.get_mut(&id) else {
                    return;
                };
                debug!(transport = id, role = ?t.role, %state, "transport state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        t.connected = true;
                        let (room, sid) = (t.room.clone(), t.participant_sid.clone());
                        if t.role == TransportRole::Subscriber {
                            self.request_keyframes_for(now, &room, &sid);
                        }
                        if let Some(p) = self
                            .rooms
                            .get_mut(&room)
                            .and_then(|r| r.participants.get_mut(&sid))
                            && !p.media_connected
                        {
                            p.media_connected = true;
                            self.outbox.send(&p.sid, ParticipantEvent::MediaConnected);
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        t.connected = false;
                        let (room, sid) = (t.room.clone(), t.participant_sid.clone());
                        self.remove_participant(now, &room, &sid, LeaveReason::Disconnected);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// One keyframe each way: of every track `sid` publishes (for its
    /// subscribers) and of every track it receives.
    fn request_keyframes_both_ways(&mut self, now: Instant, room_name: &str, sid: &str) {
        let own: Vec<String> = self
            .rooms
            .get(room_name)
            .map(|room| {
                room.producers
                    .values()
                    .filter(|p| p.owner_sid == sid)
                    .map(|p| p.sid.clone())
                    .collect()
            })
            .unwrap_or_default();
        for producer in own {
            self.request_keyframe(now, room_name, &producer);
        }
        self.request_keyframes_for(now, room_name, sid);
    }

    fn request_keyframes_for(&mut self, now: Instant, room: &str, subscriber_sid: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(p) = r.participants.get(subscriber_sid) else {
            return;
        };
        let producers: Vec<String> = p.subscriptions.keys().cloned().collect();
        for sid in producers {
            self.request_keyframe(now, room, &sid);
        }
    }

    fn open_producer(&mut self, now: Instant, id: TransportId, init: RTCTrackEventInit) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if t.role != TransportRole::Publisher || t.producers.contains_key(&init.track_id) {
            return;
        }
        let transceiver_id = RTCRtpTransceiverId::from(init.receiver_id);
        let mid =
            t.pc.rtp_transceiver(transceiver_id)
                .and_then(|tr| tr.mid().clone());
        let Some(receiver) = t.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let track = receiver.track();
        let kind = kind_of(track.kind());
        let Some(codec) = track.codec(init.ssrc).cloned() else {
            warn!(
                transport = id,
                ssrc = init.ssrc,
                "track opened with no codec"
            );
            return;
        };
        let sid = ids::track_sid();
        t.producers.insert(init.track_id.clone(), sid.clone());
        let (room_name, owner_sid) = (t.room.clone(), t.participant_sid.clone());
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let producer = Producer {
            sid: sid.clone(),
            owner_sid: owner_sid.clone(),
            transport: id,
            receiver_id: init.receiver_id,
            kind,
            mid,
            codec,
            media_ssrc: init.ssrc,
            muted: false,
            consumers: Vec::new(),
            last_keyframe_request: None,
        };
        info!(room = %room_name, participant = %owner_sid, track = %sid, ?kind, codec = %producer.codec.mime_type, "track published");
        let event = ParticipantEvent::TrackPublished {
            participant_sid: owner_sid.clone(),
            track: producer.info(),
        };
        room.producers.insert(sid.clone(), producer);
        room.broadcast(&mut self.outbox, None, &event);
        self.metrics.tracks.inc();

        let subscribers: Vec<String> = room
            .participants
            .values()
            .filter(|p| p.sid != owner_sid && p.can_subscribe)
            .map(|p| p.sid.clone())
            .collect();
        for sub in subscribers {
            self.subscribe(now, &room_name, &sub, &sid);
            self.negotiate_subscriber(now, &room_name, &sub);
        }
    }

    fn close_producer(&mut self, now: Instant, id: TransportId, track_id: &str) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(sid) = t.producers.remove(track_id) else {
            return;
        };
        let room = t.room.clone();
        self.remove_producer(now, &room, &sid);
    }

    fn remove_producer(&mut self, now: Instant, room_name: &str, producer_sid: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(producer) = room.producers.remove(producer_sid) else {
            return;
        };
        self.metrics.tracks.dec();
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::TrackUnpublished {
                participant_sid: producer.owner_sid.clone(),
                track_sid: producer.sid.clone(),
            },
        );
        let mut renegotiate = Vec::new();
        for consumer in producer.consumers {
            self.metrics.subscriptions.dec();
            if let Some(p) = room.participants.get_mut(&consumer.subscriber_sid) {
                p.subscriptions.remove(producer_sid);
            }
            if let Some(t) = self.transports.get_mut(&consumer.transport)
                && t.pc.remove_track(consumer.sender_id).is_ok()
            {
                renegotiate.push(consumer.subscriber_sid);
            }
        }
        for sub in renegotiate {
            self.negotiate_subscriber(now, room_name, &sub);
        }
    }

    /// Adds a consumer of `producer_sid` on `subscriber_sid`'s subscriber transport.
    fn subscribe(
        &mut self,
        now: Instant,
        room_name: &str,
        subscriber_sid: &str,
        producer_sid: &str,
    ) {
        let Some(transport_id) = self.ensure_subscriber_transport(now, room_name, subscriber_sid)
        else {
            return;
        };
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(producer) = room.producers.get_mut(producer_sid) else {
            return;
        };
        let Some(participant) = room.participants.get_mut(subscriber_sid) else {
            return;
        };
        if participant.subscriptions.contains_key(producer_sid) {
            return;
        }
        let Some(t) = self.transports.get_mut(&transport_id) else {
            return;
        };
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            producer.owner_sid.clone(),
            producer.sid.clone(),
            producer.sid.clone(),
            rtc_kind(producer.kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: producer.codec.clone(),
                ..Default::default()
            }],
        );
        match t.pc.add_track(track) {
            Ok(sender_id) => {
                participant
                    .subscriptions
                    .insert(producer_sid.to_owned(), sender_id);
                producer.consumers.push(Consumer {
                    subscriber_sid: subscriber_sid.to_owned(),
                    transport: transport_id,
                    sender_id,
                    ssrc,
                    payload_type: None,
                });
                self.metrics.subscriptions.inc();
            }
            Err(e) => {
                warn!(room = %room_name, subscriber = %subscriber_sid, error = %e, "could not add consumer")
            }
        }
    }

    fn ensure_subscriber_transport(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
    ) -> Option<TransportId> {
        let participant = self.rooms.get(room_name)?.participants.get(sid)?;
        if participant.subscriber.is_some() {
            return participant.subscriber;
        }
        let held = participant.media_held;
        let id = self
            .new_transport(now, room_name, sid, TransportRole::Subscriber, held)
            .ok()?;
        self.rooms
            .get_mut(room_name)?
            .participants
            .get_mut(sid)?
            .subscriber = Some(id);
        Some(id)
    }

    fn new_transport(
        &mut self,
        now: Instant,
        room: &str,
        participant_sid: &str,
        role: TransportRole,
        media_held: bool,
    ) -> Result<TransportId, SfuError> {
        let (ufrag, pwd) = ids::ice_credentials(self.worker);
        let pc = new_peer_connection(self.local_addr, self.tcp_addr, &ufrag, &pwd, now)?;
        let id = self.next_transport_id;
        self.next_transport_id += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.transports.insert(
            id,
            Transport {
                role,
                room: room.to_owned(),
                participant_sid: participant_sid.to_owned(),
                pc,
                ice: IceCreds::new(ufrag, pwd),
                routes: Routes::default(),
                last_heard: None,
                dtls_waiting_since: None,
                owner_reconnecting: false,
                next_timeout: None,
                producers: HashMap::new(),
                connected: false,
                queued: false,
                early: Vec::new(),
                media_held,
                flights: FlightReplay::default(),
            },
        );
        Ok(id)
    }

    /// Sends a new subscribe offer if subscriptions changed, one offer at a time.
    fn negotiate_subscriber(&mut self, now: Instant, room_name: &str, sid: &str) {
        let Some(p) = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.get_mut(sid))
        else {
            return;
        };
        let Some(tid) = p.subscriber else {
            return;
        };
        if p.offer_pending {
            p.needs_offer = true;
            return;
        }
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        let offer =
            t.pc.create_offer(None)
                .and_then(|offer| {
                    t.pc.set_local_description(now, offer)?;
                    Ok(())
                })
                .map(|()| t.pc.local_description().map(|d| d.sdp));
        match offer {
            Ok(Some(sdp)) => {
                p.offer_pending = true;
                p.needs_offer = false;
                let sdp = t.ice.present(&sdp);
                self.outbox
                    .send(&p.sid, ParticipantEvent::SubscribeOffer { sdp });
            }
            Ok(None) => {
                warn!(room = %room_name, participant = %sid, "offer has no local description")
            }
            Err(e) => {
                warn!(room = %room_name, participant = %sid, error = %e, "could not create subscribe offer")
            }
        }
        self.mark_dirty(tid);
    }

    // ---- commands ----------------------------------------------------------

    pub(crate) fn join(&mut self, now: Instant, req: JoinRequest) -> Result<Admission, SfuError> {
        let max = self.config.max_participants;
        // The same identity joining again replaces the old session, as in LiveKit.
        let duplicate = self.rooms.get(&req.room).and_then(|r| {
            r.participants
                .values()
                .find(|p| p.identity == req.identity)
                .map(|p| p.sid.clone())
        });
        if let Some(old) = duplicate {
            self.remove_participant(now, &req.room, &old, LeaveReason::DuplicateIdentity);
        }
        if self
            .rooms
            .get(&req.room)
            .is_some_and(|r| r.participants.len() >= max)
        {
            return Err(SfuError::RoomFull(req.room));
        }
        if !self.rooms.contains_key(&req.room) {
            info!(room = %req.room, "room opened");
            self.metrics.rooms.inc();
            self.rooms.insert(
                req.room.clone(),
                Room {
                    name: req.room.clone(),
                    sid: ids::room_sid(),
                    participants: HashMap::new(),
                    producers: HashMap::new(),
                    empty_since: None,
                },
            );
        }
        let sid = ids::participant_sid();
        let publisher = if req.can_publish {
            Some(self.new_transport(
                now,
                &req.room,
                &sid,
                TransportRole::Publisher,
                req.media_held,
            )?)
        } else {
            None
        };
        let participant = Participant {
            sid: sid.clone(),
            identity: req.identity.clone(),
            name: req.name.clone(),
            can_publish: req.can_publish,
            can_subscribe: req.can_subscribe,
            publisher,
            subscriber: None,
            offer_pending: false,
            needs_offer: false,
            subscriptions: HashMap::new(),
            media_connected: false,
            media_held: req.media_held,
            detached: false,
            reconnecting: None,
        };
        let room = self
            .rooms
            .get_mut(&req.room)
            .ok_or(SfuError::RoomNotFound)?;
        room.empty_since = None;
        let info = participant.info(room);
        let mut others: Vec<ParticipantInfo> =
            room.participants.values().map(|p| p.info(room)).collect();
        others.sort_by(|a, b| a.identity.cmp(&b.identity));
        room.broadcast(
            &mut self.outbox,
            None,
            &ParticipantEvent::ParticipantJoined {
                participant: info.clone(),
            },
        );
        room.participants.insert(sid.clone(), participant);
        self.metrics.participants.inc();
        info!(room = %req.room, participant = %sid, identity = %req.identity, "participant joined");

        let room_info = room.info(max);
        if req.can_subscribe {
            let producers: Vec<String> = room.producers.keys().cloned().collect();
            for producer in &producers {
                self.subscribe(now, &req.room, &sid, producer);
            }
            if !producers.is_empty() {
                self.negotiate_subscriber(now, &req.room, &sid);
            }
        }
        self.flush(now);
        Ok(Admission {
            room: room_info,
            participant: info,
            others,
        })
    }

    pub(crate) fn remove_participant(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        reason: LeaveReason,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(participant) = room.participants.remove(sid) else {
            return;
        };
        self.metrics.participants.dec();
        info!(room = %room_name, participant = %sid, identity = %participant.identity, reason = reason.as_str(), "participant left");
        self.outbox
            .send(&participant.sid, ParticipantEvent::Ended { reason });
        // Its consumers of others' tracks go with its subscriber transport.
        for producer in room.producers.values_mut() {
            let before = producer.consumers.len();
            producer.consumers.retain(|c| c.subscriber_sid != sid);
            for _ in producer.consumers.len()..before {
                self.metrics.subscriptions.dec();
            }
        }
        let own: Vec<String> = room
            .producers
            .values()
            .filter(|p| p.owner_sid == sid)
            .map(|p| p.sid.clone())
            .collect();
        if room.participants.is_empty() {
            room.empty_since = Some(now);
        }
        for producer in own {
            self.remove_producer(now, room_name, &producer);
        }
        if let Some(room) = self.rooms.get(room_name) {
            room.broadcast(
                &mut self.outbox,
                None,
                &ParticipantEvent::ParticipantLeft {
                    participant_sid: participant.sid.clone(),
                    identity: participant.identity.clone(),
                    reason,
                },
            );
        }
        for id in [participant.publisher, participant.subscriber]
            .into_iter()
            .flatten()
        {
            self.close_transport(now, id);
        }
        self.flush(now);
    }

    fn close_transport(&mut self, _now: Instant, id: TransportId) {
        let Some(mut t) = self.transports.remove(&id) else {
            return;
        };
        for ufrag in t.ice.ufrags() {
            self.by_ufrag.remove(ufrag);
        }
        for route in t.routes.iter() {
            self.by_addr.remove(&route);
        }
        // Closing sends DTLS close_notify so the client learns at once.
        let _ = t.pc.close();
        while let Some(out) = t.pc.poll_write() {
            self.transmits.push_back(Transmit {
                protocol: out.transport.transport_protocol,
                to: out.transport.peer_addr,
                payload: out.message,
            });
        }
        self.closed_tcp.extend(
            t.routes
                .iter()
                .filter(|(p, _)| *p == TransportProtocol::TCP)
                .map(|(_, addr)| addr),
        );
    }

    fn participant_transport(
        &mut self,
        room: &str,
        sid: &str,
        role: TransportRole,
    ) -> Result<TransportId, SfuError> {
        let p = self
            .rooms
            .get(room)
            .ok_or(SfuError::RoomNotFound)?
            .participants
            .get(sid)
            .ok_or(SfuError::ParticipantNotFound)?;
        match role {
            TransportRole::Publisher => p.publisher.ok_or(SfuError::PublishNotAllowed),
            TransportRole::Subscriber if !p.can_subscribe => Err(SfuError::SubscribeNotAllowed),
            TransportRole::Subscriber => p.subscriber.ok_or(SfuError::NoPendingOffer),
        }
    }

    pub(crate) fn publish_offer(
        &mut self,
        now: Instant,
        room: &str,
        sid: &str,
        sdp: String,
    ) -> Result<String, SfuError> {
        let id = self.participant_transport(room, sid, TransportRole::Publisher)?;
        let sdp = sdp_check::check_remote(&sdp)?;
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        t.ice.learn_remote(&sdp);
        let sdp = match answer_offer(&mut t.pc, now, sdp) {
            Ok(answer) => answer,
            Err(e) => {
                self.undo_offer(now, id);
                return Err(e);
            }
        };
        self.replay_early(now, id);
        self.drive(now, id);
        self.close_stopped_producers(now, id);
        self.flush(now);
        Ok(sdp)
    }

    /// Puts a publisher transport back where it was before an offer `rtc`
    /// refused half-way, so the client's next offer is taken: a first offer
    /// leaves a fresh peer connection with the same ICE credentials (nothing
    /// was negotiated yet), a later one is rolled back (RFC 9429 §5.7).
    fn undo_offer(&mut self, now: Instant, id: TransportId) {
        let (local_addr, tcp_addr) = (self.local_addr, self.tcp_addr);
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if t.pc.current_remote_description().is_some() {
            let rolled_back = RTCSessionDescription::rollback(None)
                .and_then(|rollback| t.pc.set_remote_description(now, rollback));
            if let Err(e) = rolled_back {
                warn!(transport = id, error = %e, "could not roll a refused offer back");
            }
            return;
        }
        let creds = t.ice.internal();
        match new_peer_connection(local_addr, tcp_addr, &creds.ufrag, &creds.pwd, now) {
            Ok(pc) => {
                let _ = std::mem::replace(&mut t.pc, pc).close();
                t.early.clear();
                t.next_timeout = None;
            }
            Err(e) => warn!(transport = id, error = %e, "could not renew a transport"),
        }
    }

    /// A renegotiation that stops a track (`removeTrack` makes its m-line
    /// `inactive`, a stopped transceiver gets port 0) unpublishes it.
    fn close_stopped_producers(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&t.room) else {
            return;
        };
        let mut stopped = Vec::new();
        for (track_id, producer_sid) in &t.producers {
            let Some(producer) = room.producers.get(producer_sid) else {
                continue;
            };
            let receiving = t
                .pc
                .rtp_transceiver(RTCRtpTransceiverId::from(producer.receiver_id))
                .is_some_and(|tr| {
                    matches!(
                        tr.current_direction(),
                        RTCRtpTransceiverDirection::Recvonly | RTCRtpTransceiverDirection::Sendrecv
                    )
                });
            if !receiving {
                stopped.push(track_id.clone());
            }
        }
        for track_id in stopped {
            self.close_producer(now, id, &track_id);
        }
    }

    pub(crate) fn subscribe_answer(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        sdp: String,
    ) -> Result<(), SfuError> {
        let id = self.participant_transport(room_name, sid, TransportRole::Subscriber)?;
        let p = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.get_mut(sid))
            .ok_or(SfuError::ParticipantNotFound)?;
        if !p.offer_pending {
            return Err(SfuError::NoPendingOffer);
        }
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        let sdp = sdp_check::check_remote(&sdp)?;
        t.ice.learn_remote(&sdp);
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        t.pc.set_remote_description(now, answer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        p.offer_pending = false;
        let again = p.needs_offer;
        // Payload types may have changed with the new answer.
        if let Some(room) = self.rooms.get_mut(room_name) {
            for producer in room.producers.values_mut() {
                for c in producer.consumers.iter_mut().filter(|c| c.transport == id) {
                    c.payload_type = None;
                }
            }
        }
        if again {
            self.negotiate_subscriber(now, room_name, sid);
        }
        self.replay_early(now, id);
        self.request_keyframes_for(now, room_name, sid);
        self.drive(now, id);
        self.flush(now);
        Ok(())
    }

    pub(crate) fn add_candidate(
        &mut self,
        now: Instant,
        room: &str,
        sid: &str,
        role: TransportRole,
        candidate: RTCIceCandidateInit,
    ) -> Result<(), SfuError> {
        let id = self.participant_transport(room, sid, role)?;
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        let t = self
            .transports
            .get_mut(&id)
            .ok_or(SfuError::ParticipantNotFound)?;
        t.pc.add_remote_candidate(candidate)
            .map_err(|e| SfuError::InvalidCandidate(e.to_string()))?;
        self.drive(now, id);
        self.flush(now);
        Ok(())
    }

    pub(crate) fn mute(
        &mut self,
        room_name: &str,
        sid: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<(), SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let producer = room
            .producers
            .get_mut(track_sid)
            .filter(|p| p.owner_sid == sid)
            .ok_or(SfuError::TrackNotFound)?;
        if producer.muted != muted {
            producer.muted = muted;
            room.broadcast(
                &mut self.outbox,
                None,
                &ParticipantEvent::TrackMuted {
                    participant_sid: sid.to_owned(),
                    track_sid: track_sid.to_owned(),
                    muted,
                },
            );
        }
        Ok(())
    }

    /// Holds (`held`) or releases the media of participant `sid`: while
    /// held, nothing it publishes is forwarded and nothing is forwarded to
    /// it. On release, its subscriptions and its subscribers ask for
    /// keyframes, so video starts at once rather than at the next one.
    pub(crate) fn hold_media(
        &mut self,
        now: Instant,
        room_name: &str,
        sid: &str,
        held: bool,
    ) -> Result<(), SfuError> {
        let room = self
            .rooms
            .get_mut(room_name)
            .ok_or(SfuError::RoomNotFound)?;
        let p = room
            .participants
            .get_mut(sid)
            .ok_or(SfuError::ParticipantNotFound)?;
        if p.media_held == held {
            return Ok(());
        }
        p.media_held = held;
        for id in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(t) = self.transports.get_mut(&id) {
                t.media_held = held;
            }
        }
        if !held {
            self.request_keyframes_both_ways(now, room_name, sid);
            self.flush(now);
        }
        info!(room = %room_name, participant = %sid, held, "media hold changed");
        Ok(())
    }

    pub(crate) fn list_rooms(&self) -> Vec<RoomInfo> {
        self.rooms
            .values()
            .map(|r| r.info(self.config.max_participants))
            .collect()
    }

    pub(crate) fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, SfuError> {
        let room = self.rooms.get(room).ok_or(SfuError::RoomNotFound)?;
        let mut list: Vec<ParticipantInfo> =
            room.participants.values().map(|p| p.info(room)).collect();
        list.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(list)
    }

    pub(crate) fn remove_identity(
        &mut self,
        now: Instant,
        room_name: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let sid = room
            .participants
            .values()
            .find(|p| p.identity == identity)
            .map(|p| p.sid.clone())
            .ok_or(SfuError::ParticipantNotFound)?;
        self.remove_participant(now, room_name, &sid, reason);
        Ok(())
    }

    pub(crate) fn close_room(
        &mut self,
        now: Instant,
        room_name: &str,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let sids: Vec<String> = room.participants.keys().cloned().collect();
        for sid in sids {
            self.remove_participant(now, room_name, &sid, reason);
        }
        if self.rooms.remove(room_name).is_some() {
            self.metrics.rooms.dec();
        }
        Ok(())
    }

    pub(crate) fn close_all(&mut self, now: Instant, reason: LeaveReason) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let _ = self.close_room(now, &name, reason);
        }
    }
}

/// Applies a client's offer and returns our answer.
fn answer_offer(pc: &mut RTCPeerConnection, now: Instant, sdp: String) -> Result<String, SfuError> {
    let invalid = |e: rtc::shared::error::Error| SfuError::InvalidSdp(e.to_string());
    let offer = RTCSessionDescription::offer(sdp).map_err(invalid)?;
    pc.set_remote_description(now, offer).map_err(invalid)?;
    let answer = pc.create_answer(None).map_err(invalid)?;
    pc.set_local_description(now, answer).map_err(invalid)?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| SfuError::Internal("answer has no local description".into()))
}

/// Whether an outbound datagram is STUN (RFC 7983: first byte 0–3).
fn is_stun(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| *b < 4)
}

/// A datagram as rtc takes it.
fn tagged(
    now: Instant,
    protocol: TransportProtocol,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    message: BytesMut,
) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr,
            peer_addr,
            ecn: None,
            transport_protocol: protocol,
        },
        message,
    }
}

/// The payload type `sender_id`'s negotiated leg uses for `codec`, if any.
fn negotiated_payload_type(
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
