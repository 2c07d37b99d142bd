//! The state one media worker owns: its rooms, their participants'
//! transports, and the tables that route datagrams and RTP packets. No I/O
//! happens here: the worker loop feeds datagrams (UDP, or ICE-TCP frames),
//! commands and time in, and takes datagrams out (`poll_transmit`), the way
//! quinn-proto splits protocol state from sockets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, info, warn};

use crate::config::SfuConfig;
use crate::dtls_flight::{FlightReplay, Inbound, Outbound, is_dtls};
use crate::endpoint::{Demuxed, Endpoint};
use crate::engine::{Hooks, new_peer_connection};
use crate::forgotten_layers::ForgottenLayers;
use crate::header_ext::SendStamps;
use crate::ice_creds::{Checked, IceCreds};
use crate::ids;
use crate::metrics::WorkerMetrics;
use crate::outbox::Outbox;
use crate::quality::QUALITY_WINDOW;
use crate::room::{Participant, Room};
use crate::route::{Arrival, Routes};
use crate::session::{
    LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo, SfuError, TransportRole,
};
use crate::stun;
use crate::timers::{Scheduled, Timer, Timers};
use crate::transport::{MAX_EARLY_DATAGRAMS, MAX_TCP_PER_TRANSPORT, Transport};

mod bandwidth;
mod connection_quality;
mod forwarding;
mod keyframes;
mod liveness;
mod negotiation;
mod permissions;
mod rooms;
mod speakers;
mod stats;

pub(crate) use crate::transport::TransportId;

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

pub(crate) struct Shard {
    config: SfuConfig,
    /// Index of the worker owning this shard, the prefix of its ufrags.
    worker: usize,
    endpoint: Endpoint,
    rooms: HashMap<String, Room>,
    transports: HashMap<TransportId, Transport>,
    next_transport_id: TransportId,
    transmits: VecDeque<Transmit>,
    /// ICE-TCP connections whose transport closed, for the worker to close.
    closed_tcp: Vec<SocketAddr>,
    /// Transports that may have output since they were last drained.
    dirty: Vec<TransportId>,
    inbound_rtp: Vec<(String, rtp::Packet)>,
    /// Where forwarded packets' abs-send-time and transport-wide sequence
    /// number values are cut from.
    send_stamps: SendStamps,
    /// Transports of reconnecting participants that heard traffic.
    heard_again: Vec<TransportId>,
    next_liveness_check: Option<Instant>,
    /// When participants' connection quality is next judged.
    next_quality_window: Option<Instant>,
    timers: Timers,
    /// The worker loop's load as it last measured it (module `load`).
    load: f64,
    metrics: WorkerMetrics,
    /// Events for participants, polled out by the worker.
    outbox: Outbox,
    /// Every random choice of ours (sids, ICE credentials, SSRCs): seeded
    /// from the OS in the server, from a fixed seed in tests. (rtc's own
    /// randomness, DTLS and SRTP, is its own.)
    rng: StdRng,
    /// A transport whose handling panics (tests of `guarded`).
    #[cfg(test)]
    pub(crate) fail_transport: Option<TransportId>,
}

impl Shard {
    /// Turns send-side estimation of new subscriber transports on or off
    /// (config `send_side_estimation`), for tests and benches of both
    /// estimates.
    pub(crate) fn set_send_side_estimation(&mut self, on: bool) {
        self.config.send_side_estimation = on;
    }

    pub(crate) fn new(
        config: SfuConfig,
        worker: usize,
        local_addr: SocketAddr,
        tcp_addr: SocketAddr,
        metrics: WorkerMetrics,
        rng: StdRng,
    ) -> Self {
        Shard {
            config,
            worker,
            endpoint: Endpoint::new(local_addr, tcp_addr),
            rooms: HashMap::new(),
            transports: HashMap::new(),
            next_transport_id: 1,
            transmits: VecDeque::new(),
            closed_tcp: Vec::new(),
            dirty: Vec::new(),
            inbound_rtp: Vec::new(),
            send_stamps: SendStamps::new(),
            heard_again: Vec::new(),
            next_liveness_check: None,
            next_quality_window: None,
            timers: Timers::default(),
            load: 0.0,
            metrics,
            outbox: Outbox::default(),
            rng,
            #[cfg(test)]
            fail_transport: None,
        }
    }

    /// The worker loop's load (module `load`): above `max_worker_load`, no
    /// new participant is admitted.
    pub(crate) fn set_load(&mut self, load: f64) {
        self.load = load;
        self.metrics.load.set(load);
    }

    fn overloaded(&self) -> bool {
        self.config.max_worker_load < 1.0 && self.load > self.config.max_worker_load
    }

    /// The next event for a participant: (its sid, the event).
    pub(crate) fn poll_event(&mut self) -> Option<(String, ParticipantEvent)> {
        self.outbox.poll()
    }

    #[cfg(test)]
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    #[cfg(test)]
    pub(crate) fn transport_ids(&self) -> Vec<TransportId> {
        self.transports.keys().copied().collect()
    }

    pub(crate) fn count_send_failure(&self) {
        self.metrics.drop_send_failed.inc();
    }

    /// A panic caught outside the shard (the worker's command handling).
    pub(crate) fn count_panic(&self) {
        self.metrics.transport_panics.inc();
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
        self.endpoint
            .transport_of_ufrag(ufrag)
            .and_then(|id| self.transports.get(&id))
            .is_some_and(|t| t.routes.count(TransportProtocol::TCP) < MAX_TCP_PER_TRANSPORT)
    }

    /// An ICE-TCP connection ended: its address routes nowhere any more.
    pub(crate) fn forget_tcp(&mut self, peer: SocketAddr) {
        let route = (TransportProtocol::TCP, peer);
        if let Some(id) = self.endpoint.forget_route(route)
            && let Some(t) = self.transports.get_mut(&id)
        {
            t.routes.forget(route);
        }
    }

    /// Earliest instant at which `handle_timeout` has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next(),
            self.next_liveness_check,
            self.next_quality_window,
        ]
        .into_iter()
        .flatten()
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
        let Some(Demuxed {
            transport: mut id,
            mut known_route,
        }) = self.endpoint.demux(route, data)
        else {
            self.metrics.drop_unknown_source.inc();
            return;
        };
        // A NAT (or the kernel, for a client on this host) may give an
        // address and port one of our transports used to a new client, who
        // then checks its own transport from there. Its request goes to the
        // transport it names once ours has heard nothing there for a while
        // (a live call's address is never claimed from under it), and takes
        // the route over if it authenticates (below).
        if known_route
            && let Some(claimant) = self.endpoint.claimant(id, data)
            && self
                .transports
                .get(&id)
                .is_none_or(|owner| owner.routes.silent(route, now))
        {
            id = claimant;
            known_route = false;
        }
        let local_addr = self.endpoint.local_addr_for(protocol);
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
        if !known_route && arrival == Arrival::Media {
            // Only an authenticated check proves a route (a STUN message
            // other than a request may name a ufrag too).
            self.metrics.drop_stun_unauthenticated.inc();
            return;
        }
        if !known_route {
            transport.routes.learn(route, now);
            if let Some(previous) = self.endpoint.learn_route(route, id) {
                debug!(transport = id, from = previous, ?route, "route taken over");
                self.metrics.routes_taken_over.inc();
                if let Some(previous) = self.transports.get_mut(&previous) {
                    previous.routes.taken_over(route);
                }
            }
        }
        let Some(transport) = self.transports.get_mut(&id) else {
            return;
        };
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
        let datagram = tagged(now, protocol, local_addr, from, BytesMut::from(data));
        self.guarded(now, id, |shard| {
            shard.fail_if_told(id);
            let Some(transport) = shard.transports.get_mut(&id) else {
                return;
            };
            if transport.pc.handle_read(datagram).is_err() {
                shard.metrics.drop_malformed.inc();
            }
            shard.drive(now, id);
            if moved {
                shard.keyframes_after_a_move(now, id);
            }
        });
        self.resume_heard(now);
        self.flush(now);
    }

    /// Feeds a transport the datagrams that came before its remote description.
    fn replay_early(&mut self, now: Instant, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let early = std::mem::take(&mut t.early);
        for (protocol, from, message) in early {
            let local_addr = self.endpoint.local_addr_for(protocol);
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
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Transport(id) => self.transport_timeout(now, at, id),
                Timer::EmptyRoom(name) => self.close_if_still_empty(now, &name),
                Timer::Speakers(name) => self.update_speakers(now, at, &name),
            }
        }
        self.flush(now);

        if self.next_liveness_check.is_some_and(|at| at <= now) {
            self.check_liveness(now);
            self.allocate_bandwidth(now);
            self.flush(now);
        }
        if self.next_quality_window.is_some_and(|at| at <= now) {
            self.end_quality_windows(now);
        }
        self.next_quality_window = (!self.transports.is_empty()).then(|| {
            self.next_quality_window
                .filter(|at| *at > now)
                .unwrap_or(now + QUALITY_WINDOW)
        });
        self.next_liveness_check = (!self.transports.is_empty()).then(|| {
            self.next_liveness_check
                .filter(|at| *at > now)
                .unwrap_or(now + LIVENESS_TICK)
        });
    }

    /// Runs `work` on behalf of transport `id`. A panic inside it (rtc's or
    /// ours) ends that transport's participant with `internal_error` and is
    /// counted, instead of unwinding out of the worker and ending every call
    /// it holds.
    fn guarded(&mut self, now: Instant, id: TransportId, work: impl FnOnce(&mut Self)) {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| work(self)));
        if outcome.is_ok() {
            return;
        }
        self.metrics.transport_panics.inc();
        let owner = self
            .transports
            .get(&id)
            .map(|t| (t.room.clone(), t.participant_sid.clone()));
        warn!(
            transport = id,
            ?owner,
            "panic while handling a transport; its participant ends"
        );
        match owner {
            Some((room, sid)) if self.participant(&room, &sid).is_some() => {
                self.remove_participant(now, &room, &sid, LeaveReason::InternalError)
            }
            _ => self.close_transport(now, id),
        }
    }

    /// Tests make a transport's handling fail here (`fail_transport`).
    fn fail_if_told(&self, id: TransportId) {
        #[cfg(test)]
        if self.fail_transport == Some(id) {
            panic!("failure injected into transport {id}");
        }
        #[cfg(not(test))]
        let _ = id;
    }

    /// A transport's timer entry `at` came due.
    fn transport_timeout(&mut self, now: Instant, at: Instant, id: TransportId) {
        self.guarded(now, id, |shard| shard.run_transport_timer(now, at, id));
    }

    fn run_transport_timer(&mut self, now: Instant, at: Instant, id: TransportId) {
        if !self.transports.contains_key(&id) {
            return;
        }
        self.fail_if_told(id);
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        t.scheduled.fired(at);
        if t.next_timeout.is_none_or(|next| next > now) {
            // Its deadline has moved later since: the flush schedules that one.
            self.mark_dirty(id);
            return;
        }
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
        self.drive(now, id);
    }

    fn close_if_still_empty(&mut self, now: Instant, name: &str) {
        let defaults = self.room_defaults();
        let expired = self.rooms.get(name).is_some_and(|r| {
            r.participants.is_empty()
                && r.empty_since
                    .is_some_and(|s| s + r.empty_timeout(&defaults) <= now)
        });
        if expired {
            info!(room = %name, "closing empty room");
            self.rooms.remove(name);
            self.metrics.rooms.dec();
        }
    }

    // ---- liveness ----------------------------------------------------------

    fn participant(&self, room: &str, sid: &str) -> Option<&Participant> {
        self.rooms.get(room)?.participants.get(sid)
    }

    fn participant_mut(&mut self, room: &str, sid: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(sid)
    }

    // ---- the engine ------------------------------------------------------

    /// Handles everything transport `id` produced: events, inbound media,
    /// and its outbound datagrams.
    fn drive(&mut self, now: Instant, id: TransportId) {
        let mut events = Vec::new();
        let mut keyframe_ssrcs = Vec::new();
        let mut estimate = None;
        let mut feedback_heard = false;
        let mut inbound = std::mem::take(&mut self.inbound_rtp);
        {
            let Some(t) = self.transports.get_mut(&id) else {
                return;
            };
            while let Some(event) = t.pc.poll_event() {
                events.push(event);
            }
            let mut recovered = Vec::new();
            t.hooks.forgotten.take_packets(&mut recovered);
            // Routed by SSRC: no track id needed.
            inbound.extend(recovered.into_iter().map(|p| (String::new(), p)));
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
                            } else if let Some(remb) =
                                any.downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                            {
                                estimate = Some(remb.bitrate);
                            } else if let Some(feedback) = any.downcast_ref::<TransportLayerCc>() {
                                // Only a subscriber transport numbers what
                                // it sends; feedback elsewhere matches nothing.
                                if let Some(bwe) = &mut t.send_side {
                                    feedback_heard |= bwe.on_feedback(now, feedback);
                                }
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
        if feedback_heard {
            self.send_side_feedback_heard(now, id);
        }
        if let Some(bitrate) = estimate {
            self.estimate_heard(now, id, bitrate);
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
                if t.routes.is_taken((protocol, to)) {
                    // rtc still sends to its selected pair, now another client's.
                    self.metrics.drop_route_taken.inc();
                    continue;
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
            if let Some(at) = t.next_timeout
                && t.scheduled.needs(at)
            {
                self.timers.schedule(at, Timer::Transport(id));
            }
        }
    }

    fn handle_pc_event(&mut self, now: Instant, id: TransportId, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                if let Some(t) = self.transports.get(&id) {
                    t.hooks.forgotten.remember(init.ssrc);
                }
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

    fn new_transport(
        &mut self,
        now: Instant,
        room: &str,
        participant_sid: &str,
        role: TransportRole,
        media_held: bool,
    ) -> Result<TransportId, SfuError> {
        let (ufrag, pwd) = ids::ice_credentials(self.worker, &mut self.rng);
        let hooks = Hooks {
            forgotten: ForgottenLayers::default(),
            refused_resends: self.metrics.drop_resend_limit.clone(),
            superseded_nacks: self.metrics.superseded_nacks.clone(),
            send_side_estimation: self.config.send_side_estimation,
        };
        let pc = new_peer_connection(
            role,
            self.endpoint.udp_addr(),
            self.endpoint.tcp_addr(),
            (&ufrag, &pwd),
            &hooks,
            now,
        )?;
        let id = self.next_transport_id;
        self.next_transport_id += 1;
        self.endpoint.add_ufrag(ufrag.clone(), id);
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
                scheduled: Scheduled::default(),
                producers: HashMap::new(),
                producer_by_ssrc: HashMap::new(),
                consumed_by_ssrc: HashMap::new(),
                transport_seq: 0,
                estimate: None,
                estimate_source: None,
                send_side: None,
                feedback_heard_at: None,
                send_side_applied: None,
                estimate_fell_at: None,
                epoch: now,
                connected: false,
                queued: false,
                early: Vec::new(),
                media_held,
                flights: FlightReplay::default(),
                hooks,
            },
        );
        Ok(id)
    }

    // ---- commands ----------------------------------------------------------

    fn close_transport(&mut self, _now: Instant, id: TransportId) {
        let Some(mut t) = self.transports.remove(&id) else {
            return;
        };
        for ufrag in t.ice.ufrags() {
            self.endpoint.remove_ufrag(ufrag);
        }
        for route in t.routes.iter() {
            self.endpoint.forget_route_of(route, id);
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
