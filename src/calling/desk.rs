//! The call desk: one task that owns every call of this node. It drives
//! each [`Call`] with the clock, rings devices, answers presence, writes the
//! call log and queues the call webhooks (docs/calls.md).
//!
//! Everything reaches it as a [`DeskInput`] on one channel (HTTP requests,
//! devices, room joins and leaves, the other nodes' desks), so call state
//! needs no lock. A change is written to the database before anyone is
//! told of it: a ring is never sent for a call the log does not have.
//!
//! In a cluster each call is driven by the desk of the node its room lives
//! on; rings, call states, call inputs and presence reach devices on other
//! nodes through the [`Bus`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use callgate_calls::{Call, CallError, CallEvent, CallState, EndReason, RejectReason, RingState};
use callgate_cluster::PresenceShare;
use callgate_metering::{
    BillingTerms, CallHold, CallMember, CallRecord, CallType, CallWebhook, Meter, MeterError,
    webhook_events,
};
use callgate_sfu::LeaveReason;
use callgate_signaling::devices::{DeviceId, Devices};
use callgate_signaling::protocol::{
    CallRejectReason, CallRing, CallStateNotice, CalleeRing, PresenceStatus, ServerMessage,
};
use callgate_signaling::ringing::CallRequest;
use callgate_signaling::token::{BillingClaims, Claims, Grants, KeyRing, unix_now};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::bus::{Bus, BusMessage, DeviceAddr, Envelope, status_of};
use super::metrics::CallMetrics;
use super::view::call_json;

/// How long after the ring timeout a call's tokens stay valid (to join)
/// and its hold stays placed if nothing releases it.
pub const AFTER_RING: Duration = Duration::from_secs(600);
/// The ring timeout when a request names none.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);

/// `POST /v1/calls`, checked for shape.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Its id, from [`new_call_id`] (in a cluster, its room is placed
    /// before the desk is asked).
    pub id: String,
    pub caller: String,
    pub caller_name: Option<String>,
    pub callees: Vec<String>,
    pub call_type: CallType,
    pub billing: Option<BillingClaims>,
    pub ring_timeout: Duration,
    pub call_waiting: bool,
}

/// A call started: its log row as it stands and one token per member.
#[derive(Debug)]
pub struct Created {
    pub call: CallRecord,
    pub tokens: HashMap<String, String>,
}

/// Why `POST /v1/calls` started nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("billing terms refused: {0}")]
    BillingInvalid(String),
    /// Logged as a call with outcome `insufficient_balance`.
    #[error("{message}")]
    InsufficientBalance { message: String, call: CallRecord },
    /// Every callee is in a call; logged with outcome `busy`.
    #[error("every callee is in another call")]
    Busy { call: CallRecord },
    #[error("the call log is unavailable: {0}")]
    Ledger(MeterError),
    #[error("no API key to sign the call's tokens with")]
    NoKey,
}

/// What the desk is told or asked.
pub enum DeskInput {
    Create(Box<NewCall>, oneshot::Sender<Result<Created, CreateError>>),
    Presence(Vec<String>, oneshot::Sender<Vec<(String, PresenceStatus)>>),
    Request {
        identity: String,
        device: DeviceId,
        request: CallRequest,
    },
    DeviceConnected(String, DeviceId),
    DeviceDisconnected(String, DeviceId),
    Joined {
        room: String,
        identity: String,
    },
    Left {
        room: String,
        identity: String,
        ended_by: Option<LeaveReason>,
    },
    /// From another node's desk (or this one's, back from Redis).
    Bus(Box<Envelope>),
    /// A node of the cluster is gone: its presence shares go.
    NodeLost(String),
    /// The rooms of the calls driven here (their placements must stay
    /// while they ring, before anyone has opened the room).
    Rooms(oneshot::Sender<Vec<String>>),
}

/// A call on this node, with what its driver needs besides the state.
struct Live {
    call: Call,
    caller_name: String,
    tokens: HashMap<String, String>,
    ring_timeout: Duration,
    /// Unix ms of `call.created_at()`.
    created_ms: i64,
}

/// What one step of a call produced, to write and then deliver.
#[derive(Default)]
struct Step {
    rings: Vec<String>,
    changed: bool,
    by: Option<String>,
}

pub struct Desk {
    meter: Meter,
    metrics: CallMetrics,
    devices: Devices,
    keys: KeyRing,
    /// The API key the call's tokens are signed with.
    key_name: Option<String>,
    plans: Arc<HashMap<String, BillingTerms>>,
    calls: HashMap<String, Live>,
    by_room: HashMap<String, String>,
    /// identity → its sessions in rooms.
    in_rooms: HashMap<String, usize>,
    /// device → the identities it watches.
    watching: HashMap<DeviceId, Vec<String>>,
    /// identity → the devices watching it, and the status they were last told.
    watchers: HashMap<String, (HashSet<DeviceId>, PresenceStatus)>,
    /// The other nodes' desks, in a cluster.
    bus: Option<Bus>,
    /// This node's id on the bus ("" without one).
    me: String,
}

fn unix_ms_now() -> i64 {
    callgate_signaling::token::unix_now_ms()
}

/// The unix ms of `at`, an instant at or before now.
fn unix_ms_of(at: std::time::Instant) -> i64 {
    let ago = std::time::Instant::now().saturating_duration_since(at);
    unix_ms_now() - ago.as_millis() as i64
}

/// A fresh call id.
pub fn new_call_id() -> String {
    format!("CA_{:032x}", rand::random::<u128>())
}

/// The room call `id` takes place in.
pub fn room_of_call(id: &str) -> String {
    format!("call-{id}")
}

impl Desk {
    pub fn new(
        meter: Meter,
        metrics: CallMetrics,
        devices: Devices,
        keys: KeyRing,
        key_name: Option<String>,
        plans: Arc<HashMap<String, BillingTerms>>,
        bus: Option<Bus>,
    ) -> Desk {
        let me = bus.as_ref().map_or("", |b| b.node_id()).to_owned();
        Desk {
            meter,
            metrics,
            devices,
            keys,
            key_name,
            plans,
            calls: HashMap::new(),
            by_room: HashMap::new(),
            in_rooms: HashMap::new(),
            watching: HashMap::new(),
            watchers: HashMap::new(),
            bus,
            me,
        }
    }

    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<DeskInput>) {
        // Shares a previous run of this node left (it crashed, and no node
        // has removed them yet) say nothing true any more.
        if let Some(bus) = &self.bus {
            bus.forget_node(&self.me).await;
        }
        loop {
            let deadline = self
                .calls
                .values()
                .filter_map(|l| l.call.poll_timeout())
                .min()
                .map(Instant::from_std);
            let input = match deadline {
                Some(at) => tokio::select! {
                    input = inputs.recv() => input,
                    () = tokio::time::sleep_until(at) => {
                        self.timeouts().await;
                        continue;
                    }
                },
                None => inputs.recv().await,
            };
            let Some(input) = input else {
                return;
            };
            self.handle(input).await;
        }
    }

    async fn handle(&mut self, input: DeskInput) {
        match input {
            DeskInput::Create(request, reply) => {
                let created = self.create(*request).await;
                let _ = reply.send(created);
            }
            DeskInput::Presence(identities, reply) => {
                let mut statuses = Vec::with_capacity(identities.len());
                for identity in identities {
                    let status = self.status(&identity).await;
                    statuses.push((identity, status));
                }
                let _ = reply.send(statuses);
            }
            DeskInput::Request {
                identity,
                device,
                request,
            } => {
                let from = self.here(device);
                self.request(&identity, from, request).await;
            }
            DeskInput::DeviceConnected(identity, device) => {
                let at = self.here(device);
                self.ring_again(&identity, &at).await;
                if let Some(bus) = &self.bus {
                    bus.publish(BusMessage::DeviceConnected {
                        identity: identity.clone(),
                        at,
                    })
                    .await;
                }
                self.touch(&[identity]).await;
            }
            DeskInput::DeviceDisconnected(identity, device) => {
                self.unwatch(device);
                self.touch(&[identity]).await;
            }
            DeskInput::Bus(envelope) => self.heard(*envelope).await,
            DeskInput::Rooms(reply) => {
                let _ = reply.send(self.by_room.keys().cloned().collect());
            }
            DeskInput::NodeLost(node) => {
                if let Some(bus) = &self.bus {
                    bus.forget_node(&node).await;
                }
            }
            DeskInput::Joined { room, identity } => {
                *self.in_rooms.entry(identity.clone()).or_default() += 1;
                // A stranger to the call in its room is refused by the
                // call and changes nothing.
                if let Some(id) = self.by_room.get(&room).cloned() {
                    let _ = self
                        .step(&id, |call, now| call.joined(now, &identity))
                        .await;
                }
                self.touch(&[identity]).await;
            }
            DeskInput::Left {
                room,
                identity,
                ended_by,
            } => {
                if let Some(n) = self.in_rooms.get_mut(&identity) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.in_rooms.remove(&identity);
                    }
                }
                if let Some(id) = self.by_room.get(&room).cloned() {
                    let server_end = match ended_by {
                        Some(LeaveReason::InsufficientBalance) => {
                            Some(EndReason::InsufficientBalance)
                        }
                        Some(LeaveReason::BillingInvalid | LeaveReason::BillingStopped) => {
                            Some(EndReason::Failed)
                        }
                        _ => None,
                    };
                    let _ = self
                        .step(&id, |call, now| match server_end {
                            Some(reason) => call.end(now, reason, None),
                            None => call.left(now, &identity),
                        })
                        .await;
                }
                self.touch(&[identity]).await;
            }
        }
    }

    /// A device of this node, as the bus names it.
    fn here(&self, device: DeviceId) -> DeviceAddr {
        DeviceAddr {
            node: self.me.clone(),
            device,
        }
    }

    /// A message from a desk (this node's own included).
    async fn heard(&mut self, envelope: Envelope) {
        let from_me = envelope.from == self.me;
        match envelope.message {
            // This node delivered its own messages when it sent them.
            BusMessage::ToIdentity { identity, message } if !from_me => {
                self.devices.send_to_identity(&identity, &message);
            }
            BusMessage::ToDevice { to, message } if to.node == self.me && !from_me => {
                self.devices.send_to_device(to.device, message);
            }
            BusMessage::Presence { identity }
                if !from_me && self.watchers.contains_key(&identity) =>
            {
                let now = self.status(&identity).await;
                self.show(&identity, now);
            }
            BusMessage::DeviceConnected { identity, at } if !from_me => {
                self.ring_again(&identity, &at).await;
            }
            BusMessage::Request {
                node,
                identity,
                from,
                request,
            } if node == self.me => {
                // Only a call driven here is answered; one that moved on
                // (ended) is refused as it would be to a local device.
                if let Some(call_id) = call_id_of(&request)
                    && !self.calls.contains_key(call_id)
                {
                    return self.refuse_unknown(call_id.to_owned(), &from).await;
                }
                self.request(&identity, from, request).await;
            }
            _ => {}
        }
    }

    /// This node's share of `identity`'s presence.
    fn share(&self, identity: &str) -> PresenceShare {
        PresenceShare {
            devices: u32::try_from(self.devices.count(identity)).unwrap_or(u32::MAX),
            rooms: self
                .in_rooms
                .get(identity)
                .map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX)),
            engaged: self.calls.values().any(|l| l.call.engages(identity)),
        }
    }

    /// `identity`'s presence now: every node's share of it in a cluster
    /// (this node's alone if Redis does not answer), this node's otherwise.
    async fn status(&self, identity: &str) -> PresenceStatus {
        if let Some(bus) = &self.bus
            && let Some(shares) = bus.presence_shares(identity).await
        {
            return status_of(&shares);
        }
        status_of(&[self.share(identity)])
    }

    /// How many devices `identity` has open (on every node, in a cluster).
    async fn device_count(&self, identity: &str) -> usize {
        if let Some(bus) = &self.bus
            && let Some(shares) = bus.presence_shares(identity).await
        {
            return shares.iter().map(|s| s.devices as usize).sum();
        }
        self.devices.count(identity)
    }

    /// Each of `identities` may have changed here: in a cluster this node's
    /// share is written and every node's watchers told; here, the watchers
    /// of those whose status changed are.
    async fn touch(&mut self, identities: &[String]) {
        for identity in identities {
            if let Some(bus) = &self.bus {
                bus.share_presence(identity, self.share(identity)).await;
            }
            if self.watchers.contains_key(identity) {
                let now = self.status(identity).await;
                self.show(identity, now);
            }
        }
    }

    /// Tells `identity`'s watchers here its status `now`, unless they were
    /// told it last.
    fn show(&mut self, identity: &str, now: PresenceStatus) {
        let Some((devices, shown)) = self.watchers.get_mut(identity) else {
            return;
        };
        if *shown == now {
            return;
        }
        *shown = now;
        let message = ServerMessage::Presence {
            identity: identity.to_owned(),
            status: now,
        };
        for device in devices.iter() {
            self.devices.send_to_device(*device, message.clone());
        }
    }

    fn unwatch(&mut self, device: DeviceId) {
        for identity in self.watching.remove(&device).unwrap_or_default() {
            if let Some((devices, _)) = self.watchers.get_mut(&identity) {
                devices.remove(&device);
                if devices.is_empty() {
                    self.watchers.remove(&identity);
                }
            }
        }
    }

    async fn watch(&mut self, device: DeviceId, identities: Vec<String>) {
        self.unwatch(device);
        let mut unique = Vec::new();
        for identity in identities {
            if !unique.contains(&identity) {
                unique.push(identity);
            }
        }
        for identity in &unique {
            let status = self.status(identity).await;
            self.watchers
                .entry(identity.clone())
                .or_insert_with(|| (HashSet::new(), status))
                .0
                .insert(device);
            self.devices.send_to_device(
                device,
                ServerMessage::Presence {
                    identity: identity.clone(),
                    status,
                },
            );
        }
        self.watching.insert(device, unique);
    }

    /// A device of `identity` connected: every call driven here still
    /// ringing it rings there too (a phone woken by a push connects, then
    /// rings).
    async fn ring_again(&self, identity: &str, at: &DeviceAddr) {
        for live in self.calls.values() {
            if live.call.ring_of(identity) == Some(RingState::Ringing) {
                self.to_device(at, ServerMessage::CallRing(ring_of(live, identity)))
                    .await;
            }
        }
    }

    /// Sends `message` to one device, here or through the bus.
    async fn to_device(&self, to: &DeviceAddr, message: ServerMessage) {
        if to.node == self.me {
            self.devices.send_to_device(to.device, message);
        } else if let Some(bus) = &self.bus {
            bus.publish(BusMessage::ToDevice {
                to: to.clone(),
                message,
            })
            .await;
        }
    }

    /// Sends `message` to every device of `identity`, here and (through the
    /// bus) on every other node.
    async fn to_identity(&self, identity: &str, message: &ServerMessage) {
        self.devices.send_to_identity(identity, message);
        if let Some(bus) = &self.bus {
            bus.publish(BusMessage::ToIdentity {
                identity: identity.to_owned(),
                message: message.clone(),
            })
            .await;
        }
    }

    async fn request(&mut self, identity: &str, from: DeviceAddr, request: CallRequest) {
        if let CallRequest::WatchPresence { identities } = request {
            // Watches are kept where the watching device is.
            if from.node == self.me {
                self.watch(from.device, identities).await;
            }
            return;
        }
        let Some(call_id) = call_id_of(&request).map(str::to_owned) else {
            return;
        };
        if !self.calls.contains_key(&call_id) {
            // A call driven by another node's desk is handed to it.
            if let Some(bus) = &self.bus
                && let Some(node) = bus.node_of_call(&call_id).await
                && node != self.me
            {
                bus.publish(BusMessage::Request {
                    node,
                    identity: identity.to_owned(),
                    from,
                    request,
                })
                .await;
                return;
            }
            return self.refuse_unknown(call_id, &from).await;
        }
        let refused = self
            .step(&call_id, |call, now| match &request {
                CallRequest::Accept { .. } => call.accept(now, identity),
                CallRequest::Reject { reason, .. } => {
                    let reason = match reason {
                        CallRejectReason::Decline => RejectReason::Decline,
                        CallRejectReason::Busy => RejectReason::Busy,
                    };
                    call.reject(now, identity, reason)
                }
                CallRequest::Cancel { .. } => call.cancel(now, identity),
                CallRequest::WatchPresence { .. } => Ok(()),
            })
            .await;
        if let Err(e) = refused {
            self.to_device(
                &from,
                ServerMessage::call_error(e.code(), e.to_string(), call_id),
            )
            .await;
        }
    }

    /// Answers a call input for a call not driven here: ended calls leave
    /// the desk, and the log tells them from strangers.
    async fn refuse_unknown(&self, call_id: String, from: &DeviceAddr) {
        let (code, message) = match self.meter.call(&call_id).await {
            Ok(Some(_)) => (
                CallError::CallEnded.code(),
                CallError::CallEnded.to_string(),
            ),
            _ => ("call_not_found", "no such call".to_owned()),
        };
        self.to_device(from, ServerMessage::call_error(code, message, call_id))
            .await;
    }

    /// Ends the rings and calls whose deadlines passed.
    async fn timeouts(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, l)| l.call.poll_timeout().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let _ = self
                .step(&id, |call, now| {
                    call.handle_timeout(now);
                    Ok(())
                })
                .await;
        }
    }

    /// Applies `input` to call `id`, then writes and tells what changed.
    async fn step(
        &mut self,
        id: &str,
        input: impl FnOnce(&mut Call, std::time::Instant) -> Result<(), CallError>,
    ) -> Result<(), CallError> {
        let Some(live) = self.calls.get_mut(id) else {
            return Ok(());
        };
        let before = live.call.state();
        input(&mut live.call, std::time::Instant::now())?;
        let step = drain(&mut live.call);
        self.commit(id, before, step).await;
        Ok(())
    }

    /// Writes a change of call `id` with its webhooks, then delivers it.
    async fn commit(&mut self, id: &str, before: CallState, step: Step) {
        let Some(live) = self.calls.get(id) else {
            return;
        };
        let record = record_of(live);
        let mut webhooks = self.ring_webhooks(live, &step.rings).await;
        let now = live.call.state();
        if before == CallState::Ringing && live.call.answered_at().is_some() {
            webhooks.push(hook(webhook_events::CALL_ANSWERED, &record));
        }
        if matches!(now, CallState::Ended(_)) {
            webhooks.push(hook(webhook_events::CALL_ENDED, &record));
        }
        if let Err(e) = self.meter.log_call(&record, &webhooks).await {
            warn!(call = %id, error = %e, "call log not written");
        }
        self.deliver(live, &step).await;
        let members = members(&live.call);
        if let CallState::Ended(outcome) = now {
            info!(call = %id, outcome = outcome.as_str(), "call ended");
            self.metrics
                .ended
                .with_label_values(&[outcome.as_str()])
                .inc();
            let room = live.call.room().to_owned();
            self.calls.remove(id);
            self.by_room.remove(&room);
            self.metrics.active.set(self.calls.len() as i64);
        }
        self.touch(&members).await;
    }

    /// `call.ring` webhooks for the callees in `rings` with no device open.
    async fn ring_webhooks(&self, live: &Live, rings: &[String]) -> Vec<CallWebhook> {
        let mut webhooks = Vec::new();
        for callee in rings {
            if live.call.ring_of(callee) != Some(RingState::Ringing)
                || self.device_count(callee).await > 0
            {
                continue;
            }
            let ring = ring_of(live, callee);
            webhooks.push(CallWebhook {
                event_type: webhook_events::CALL_RING,
                data: json!({
                        "call_id": ring.call_id,
                        "callee": callee,
                        "caller": ring.caller,
                        "caller_name": ring.caller_name,
                        "call_type": ring.call_type,
                        "room": ring.room,
                    "ring_ends_at_ms": ring.ring_ends_at_ms,
                }),
            });
        }
        webhooks
    }

    /// Rings the callees of `step` and tells every member's devices the
    /// call's state.
    async fn deliver(&self, live: &Live, step: &Step) {
        for callee in &step.rings {
            if live.call.ring_of(callee) == Some(RingState::Ringing) {
                self.to_identity(callee, &ServerMessage::CallRing(ring_of(live, callee)))
                    .await;
                let reached = self.device_count(callee).await;
                let via = if reached > 0 { "signaling" } else { "webhook" };
                self.metrics.rings.with_label_values(&[via]).inc();
            }
        }
        if step.changed {
            let notice = ServerMessage::CallState(notice_of(&live.call, step.by.clone()));
            for member in members(&live.call) {
                self.to_identity(&member, &notice).await;
            }
        }
    }

    async fn create(&mut self, request: NewCall) -> Result<Created, CreateError> {
        let key_name = self.key_name.clone().ok_or(CreateError::NoKey)?;
        let id = request.id.clone();
        let room = room_of_call(&id);
        let now = std::time::Instant::now();
        let mut call = Call::new(
            id.clone(),
            room.clone(),
            request.caller.clone(),
            request.callees.clone(),
            request.call_type,
            request.ring_timeout,
            now,
        )?;
        // Terms as the caller's token will carry them, checked as at join.
        let billing = request.billing.clone().map(|mut claims| {
            claims.call = Some(id.clone());
            claims.call_type = Some(request.call_type.as_str().to_owned());
            claims
        });
        let hold = match &billing {
            Some(claims) => {
                let resolved = crate::billing::resolve_terms(&room, claims, &self.plans)
                    .map_err(|r| CreateError::BillingInvalid(r.message))?;
                let first = u64::from(resolved.terms.initial_increment);
                Some(CallHold {
                    payer: resolved.payer,
                    coins: resolved.terms.cost(first),
                    expires_ms: unix_ms_now()
                        + (request.ring_timeout + AFTER_RING).as_millis() as i64,
                })
            }
            None => None,
        };
        if !request.call_waiting {
            for callee in &request.callees {
                if self.status(callee).await == PresenceStatus::Busy {
                    call.reject(now, callee, RejectReason::Busy)?;
                }
            }
        }
        let tokens = self
            .mint_tokens(&key_name, &request, &room, billing)
            .map_err(|_| CreateError::NoKey)?;
        let mut live = Live {
            call,
            caller_name: request.caller_name.unwrap_or(request.caller),
            tokens,
            ring_timeout: request.ring_timeout,
            created_ms: unix_ms_now(),
        };
        let step = drain(&mut live.call);
        let record = record_of(&live);
        if let CallState::Ended(_) = live.call.state() {
            // Every callee was busy: logged, nothing rings, nothing held.
            let ended = [hook(webhook_events::CALL_ENDED, &record)];
            self.meter
                .open_call(&record, None, &ended)
                .await
                .map_err(CreateError::Ledger)?;
            self.deliver(&live, &step).await;
            self.metrics.ended.with_label_values(&["busy"]).inc();
            return Err(CreateError::Busy { call: record });
        }
        let mut webhooks = vec![hook(webhook_events::CALL_STARTED, &record)];
        webhooks.extend(self.ring_webhooks(&live, &step.rings).await);
        match self
            .meter
            .open_call(&record, hold.as_ref(), &webhooks)
            .await
        {
            Ok(()) => {}
            Err(MeterError::InsufficientBalance(message)) => {
                // Nothing rang: the call is logged as refused.
                live.call.end(
                    std::time::Instant::now(),
                    EndReason::InsufficientBalance,
                    None,
                )?;
                drain(&mut live.call);
                let record = record_of(&live);
                let ended = [hook(webhook_events::CALL_ENDED, &record)];
                self.meter
                    .open_call(&record, None, &ended)
                    .await
                    .map_err(CreateError::Ledger)?;
                self.metrics
                    .ended
                    .with_label_values(&["insufficient_balance"])
                    .inc();
                return Err(CreateError::InsufficientBalance {
                    message,
                    call: record,
                });
            }
            Err(e) => return Err(CreateError::Ledger(e)),
        }
        info!(call = %id, caller = %live.call.caller(), "call ringing");
        self.deliver(&live, &step).await;
        let created = Created {
            call: record,
            tokens: live.tokens.clone(),
        };
        let members = members(&live.call);
        self.by_room.insert(room, id.clone());
        self.calls.insert(id, live);
        self.metrics.started.inc();
        self.metrics.active.set(self.calls.len() as i64);
        self.touch(&members).await;
        Ok(created)
    }

    fn mint_tokens(
        &self,
        key_name: &str,
        request: &NewCall,
        room: &str,
        billing: Option<BillingClaims>,
    ) -> Result<HashMap<String, String>, callgate_signaling::token::TokenError> {
        let iat = unix_now();
        let exp = iat + (request.ring_timeout + AFTER_RING).as_secs();
        let claims =
            |identity: &str, name: Option<String>, billing: Option<BillingClaims>| Claims {
                iss: key_name.to_owned(),
                sub: identity.to_owned(),
                name,
                iat,
                nbf: None,
                exp,
                grants: Grants {
                    room: Some(room.to_owned()),
                    room_join: true,
                    can_publish: true,
                    can_subscribe: true,
                    admin: false,
                    can_publish_data: true,
                    role: None,
                    room_admin: false,
                },
                billing,
            };
        let mut tokens = HashMap::new();
        tokens.insert(
            request.caller.clone(),
            self.keys.sign(&claims(
                &request.caller,
                request.caller_name.clone(),
                billing,
            ))?,
        );
        for callee in &request.callees {
            tokens.insert(callee.clone(), self.keys.sign(&claims(callee, None, None))?);
        }
        Ok(tokens)
    }
}

/// The call a call input is for.
fn call_id_of(request: &CallRequest) -> Option<&str> {
    match request {
        CallRequest::Accept { call_id }
        | CallRequest::Reject { call_id, .. }
        | CallRequest::Cancel { call_id } => Some(call_id),
        CallRequest::WatchPresence { .. } => None,
    }
}

/// Takes every event out of `call`: who to ring, and whether its state
/// (or a ring) changed, by whom.
fn drain(call: &mut Call) -> Step {
    let mut step = Step::default();
    while let Some(event) = call.poll_event() {
        match event {
            CallEvent::Ring { callee } => step.rings.push(callee),
            CallEvent::RingEnded { callee, .. } => {
                step.changed = true;
                step.by = Some(callee);
            }
            CallEvent::State { by, .. } => {
                step.changed = true;
                step.by = by;
            }
        }
    }
    step
}

fn members(call: &Call) -> Vec<String> {
    std::iter::once(call.caller().to_owned())
        .chain(call.callees().map(|(c, _)| c.to_owned()))
        .collect()
}

fn hook(event_type: &'static str, record: &CallRecord) -> CallWebhook {
    CallWebhook {
        event_type,
        data: call_json(record),
    }
}

fn ring_of(live: &Live, callee: &str) -> CallRing {
    let call = &live.call;
    CallRing {
        call_id: call.id().to_owned(),
        room: call.room().to_owned(),
        caller: call.caller().to_owned(),
        caller_name: live.caller_name.clone(),
        call_type: call.call_type().as_str().to_owned(),
        token: live.tokens.get(callee).cloned().unwrap_or_default(),
        ring_timeout_s: live.ring_timeout.as_secs(),
        ring_ends_at_ms: unix_ms_of(call.created_at()) + live.ring_timeout.as_millis() as i64,
    }
}

fn notice_of(call: &Call, by: Option<String>) -> CallStateNotice {
    CallStateNotice {
        call_id: call.id().to_owned(),
        state: call.state().wire_name().to_owned(),
        by,
        end_reason: call.end_reason().map(|r| r.as_str().to_owned()),
        callees: call
            .callees()
            .map(|(identity, ring)| CalleeRing {
                identity: identity.to_owned(),
                ring: ring.as_str().to_owned(),
            })
            .collect(),
    }
}

/// The call as its log keeps it now.
fn record_of(live: &Live) -> CallRecord {
    let call = &live.call;
    let at = |instant: Option<std::time::Instant>| {
        instant.map(|i| {
            live.created_ms + i.saturating_duration_since(call.created_at()).as_millis() as i64
        })
    };
    let (state, outcome) = match call.state() {
        CallState::Ringing => ("ringing", None),
        CallState::Accepted => ("accepted", None),
        CallState::Ended(outcome) => ("ended", Some(outcome.as_str().to_owned())),
    };
    CallRecord {
        id: call.id().to_owned(),
        room: call.room().to_owned(),
        caller: call.caller().to_owned(),
        callees: call
            .callees()
            .map(|(identity, ring)| CallMember {
                identity: identity.to_owned(),
                ring: Some(ring.as_str().to_owned()),
            })
            .collect(),
        call_type: call.call_type(),
        state: state.to_owned(),
        outcome,
        created_ms: live.created_ms,
        answered_ms: at(call.answered_at()),
        ended_ms: at(call.ended_at()),
        ended_by: call.ended_by().map(str::to_owned),
        end_reason: call.end_reason().map(|r| r.as_str().to_owned()),
        session_id: None,
        billed_seconds: None,
        coins: None,
    }
}
