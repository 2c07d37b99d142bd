//! Joins calls to money: watches participants through signaling's
//! `CallObserver`, starts a billed session on the meter when the payer and
//! the payee both have media, relays the meter's news to their clients, and
//! cuts the call when the meter says the wallet ran dry.
//!
//! Billing fails closed. The participant whose token carries billing terms
//! (the terms' holder) joins with its media held: the SFU forwards nothing
//! from or to it until the meter has written the hold for the first block of
//! call time, and a session that cannot start ends the holder's part in the
//! call (the whole call when it is one to one) with `insufficient_balance`,
//! `billing_invalid` or `billing_stopped`. When a billed session ends while
//! its holder stays (the other side left), the holder's media is held again
//! until a new session starts.
//!
//! While the payer or the payee of a billed call is reconnecting, its
//! session is paused (the billed clock stops from when media stopped) and
//! the holder's media is held: nothing flows while nothing is charged. When
//! the participant is back (and the other side is not reconnecting too)
//! the session resumes, then the holder's media flows again. A participant
//! that does not come back within the grace ends the session with
//! `connection_lost`, charged up to the moment its media stopped.
//!
//! One task owns all call state; observer calls and meter events reach it
//! over channels, so nothing here takes a lock.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use callgate_metering::{
    BillingTerms, CallType, EndReason, Meter, MeterError, MeterEvent, SessionHandle, SessionStart,
    UsageKind, UsageRecord,
};
use callgate_sfu::{LeaveReason, Sfu, SfuError, TrackKind};
use callgate_signaling::calls::{
    CallObserver, CallParticipant, MediaGate, MediaUsage, Participants, Refusal,
};
use callgate_signaling::protocol::ServerMessage;
use callgate_signaling::token::{BillingClaims, unix_now_ms};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

/// What signaling tells the biller.
enum CallEvent {
    Joined(CallParticipant),
    MediaConnected(CallParticipant),
    Left(CallParticipant, MediaUsage),
    /// Its connection is lost; its media stopped at this unix ms.
    Reconnecting(CallParticipant, i64),
    Resumed(CallParticipant),
}

/// What the biller asks of the media plane: the SFU (a fake in tests).
pub trait MediaControl: Send + Sync + 'static {
    /// Holds (`true`) or releases a participant's media.
    fn hold_media(
        &self,
        room: &str,
        sid: &str,
        held: bool,
    ) -> impl Future<Output = Result<(), SfuError>> + Send;
    /// Ends one participant's session.
    fn end_session(&self, room: &str, sid: &str, reason: LeaveReason);
    /// Ends every session in the room.
    fn close_room(
        &self,
        room: &str,
        reason: LeaveReason,
    ) -> impl Future<Output = Result<(), SfuError>> + Send;
    /// Ends the session of `identity`.
    fn remove_participant(
        &self,
        room: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> impl Future<Output = Result<(), SfuError>> + Send;
    /// Whether any of `identities` publishes a video track in `room`.
    fn publishes_video(
        &self,
        room: &str,
        identities: [&str; 2],
    ) -> impl Future<Output = bool> + Send;
}

impl MediaControl for Sfu {
    fn hold_media(
        &self,
        room: &str,
        sid: &str,
        held: bool,
    ) -> impl Future<Output = Result<(), SfuError>> + Send {
        Sfu::hold_media(self, room, sid, held)
    }
    fn end_session(&self, room: &str, sid: &str, reason: LeaveReason) {
        Sfu::end_session(self, room, sid, reason)
    }
    fn close_room(
        &self,
        room: &str,
        reason: LeaveReason,
    ) -> impl Future<Output = Result<(), SfuError>> + Send {
        Sfu::close_room(self, room, reason)
    }
    fn remove_participant(
        &self,
        room: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> impl Future<Output = Result<(), SfuError>> + Send {
        Sfu::remove_participant(self, room, identity, reason)
    }
    async fn publishes_video(&self, room: &str, identities: [&str; 2]) -> bool {
        self.list_participants(room).await.is_ok_and(|people| {
            people.iter().any(|p| {
                identities.contains(&p.identity.as_str())
                    && p.tracks.iter().any(|t| t.kind == TrackKind::Video)
            })
        })
    }
}

/// The `CallObserver` signaling holds: checks terms at once, queues the rest.
pub struct BillingObserver {
    events: mpsc::UnboundedSender<CallEvent>,
    plans: Arc<HashMap<String, BillingTerms>>,
}

/// Billing terms a token asks for, resolved against the configured plans and
/// checked against every limit the meter enforces (`SessionStart::validate`).
pub struct ResolvedTerms {
    pub payer: String,
    /// `None`: whoever else connects in the room is paid.
    pub payee: Option<String>,
    pub terms: BillingTerms,
    /// What the token says; `None`: what the payer and payee publish decides
    /// when billing starts (video if either has a video track).
    pub call_type: Option<CallType>,
}

/// Resolves and checks the billing terms of a token for `room`: what the
/// server checks at join and `callgate token` before it signs.
pub fn resolve_terms(
    room: &str,
    claims: &BillingClaims,
    plans: &HashMap<String, BillingTerms>,
) -> Result<ResolvedTerms, Refusal> {
    let refuse = |message: &str| Refusal {
        message: message.to_owned(),
    };
    let payer = claims
        .payer
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| refuse("billing terms need a payer"))?;
    let payee = claims.payee.clone().filter(|p| !p.is_empty());
    let mut terms = match &claims.plan {
        Some(name) => plans
            .get(name)
            .cloned()
            .ok_or_else(|| refuse(&format!("no rate plan named `{name}`")))?,
        None => BillingTerms::default(),
    };
    match (claims.rate, &claims.plan) {
        (Some(rate), _) => terms.rate_per_minute = rate,
        (None, None) => return Err(refuse("billing terms need a rate or a plan")),
        (None, Some(_)) => {}
    }
    if let Some(increments) = &claims.increments {
        terms
            .set_increments(increments)
            .map_err(|e| refuse(&e.to_string()))?;
    }
    if let Some(commission) = &claims.commission {
        terms
            .set_commission(commission)
            .map_err(|e| refuse(&e.to_string()))?;
    }
    let call_type = match claims.call_type.as_deref() {
        None => None,
        Some("audio") => Some(CallType::Audio),
        Some("video") => Some(CallType::Video),
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            return Err(refuse(&format!(
                "call_type `{shown}` is not audio or video"
            )));
        }
    };
    let start = SessionStart {
        room: room.to_owned(),
        payer,
        payee,
        terms,
        // The type does not change what is valid.
        call_type: call_type.unwrap_or(CallType::Audio),
        call_id: claims.call.clone(),
    };
    start.validate().map_err(|e| refuse(&e.to_string()))?;
    Ok(ResolvedTerms {
        payer: start.payer,
        payee: start.payee,
        terms: start.terms,
        call_type,
    })
}

impl CallObserver for BillingObserver {
    fn check(
        &self,
        room: &str,
        _identity: &str,
        billing: Option<&BillingClaims>,
    ) -> Result<MediaGate, Refusal> {
        match billing {
            Some(claims) => resolve_terms(room, claims, &self.plans).map(|_| MediaGate::Held),
            None => Ok(MediaGate::Open),
        }
    }
    fn joined(&self, p: &CallParticipant) {
        let _ = self.events.send(CallEvent::Joined(p.clone()));
    }
    fn media_connected(&self, p: &CallParticipant) {
        let _ = self.events.send(CallEvent::MediaConnected(p.clone()));
    }
    fn left(&self, p: &CallParticipant, usage: MediaUsage) {
        let _ = self.events.send(CallEvent::Left(p.clone(), usage));
    }
    fn reconnecting(&self, p: &CallParticipant, since_ms: i64) {
        let _ = self
            .events
            .send(CallEvent::Reconnecting(p.clone(), since_ms));
    }
    fn resumed(&self, p: &CallParticipant) {
        let _ = self.events.send(CallEvent::Resumed(p.clone()));
    }
}

/// Terms signed into a participant's token, waiting for both sides' media.
/// Its holder's media is held while it waits.
#[derive(Clone)]
struct Offer {
    /// The session (participant sid) whose token carried the terms.
    holder_sid: String,
    payer: String,
    payee: Option<String>,
    terms: BillingTerms,
    /// `None`: decided from the published tracks when the session starts.
    call_type: Option<CallType>,
    /// The call these terms bill, if a `POST /v1/calls` minted them.
    call_id: Option<String>,
}

struct Billed {
    session: SessionHandle,
    /// What started it, to wait again if the call goes on without a session.
    offer: Offer,
    payer_sid: String,
    /// The session of the payee named in the terms, or of whoever answered.
    payee_sid: String,
    /// The payer's and the payee's sessions that are reconnecting: while
    /// any is, the session is paused and the holder's media held.
    lost: HashSet<String>,
}

impl Billed {
    fn one_to_one(&self) -> bool {
        self.offer.payee.is_some()
    }
}

#[derive(Default)]
struct Room {
    /// identity → sid of participants whose media is connected.
    connected: HashMap<String, String>,
    offers: Vec<Offer>,
    billed: Vec<Billed>,
    /// Sessions (sids) reconnecting: no billed session starts with them.
    reconnecting: HashSet<String>,
}

/// Tells the payer and the payee of a billed call.
fn notify(participants: &Participants, billed: &Billed, message: ServerMessage) {
    participants.send(&billed.payer_sid, message.clone());
    participants.send(&billed.payee_sid, message);
}

/// Why a paid session that could not start ends its holder's call.
fn refusal_reason(e: &MeterError) -> LeaveReason {
    match e {
        MeterError::InsufficientBalance(_) => LeaveReason::InsufficientBalance,
        MeterError::InvalidTerms(_)
        | MeterError::InvalidIdentifier(_)
        | MeterError::UnknownPlan(_)
        | MeterError::InvalidAmount(_) => LeaveReason::BillingInvalid,
        _ => LeaveReason::BillingStopped,
    }
}

/// The `Instant` of a unix-ms moment at or before now, on the meter's clock.
fn instant_of(meter: &Meter, unix_ms: i64) -> Instant {
    let now = Instant::now();
    let ago = Duration::from_millis((meter.now_ms() - unix_ms).max(0) as u64);
    now.checked_sub(ago).unwrap_or(now)
}

struct Biller<M: MediaControl> {
    meter: Meter,
    sfu: Arc<M>,
    participants: Participants,
    plans: Arc<HashMap<String, BillingTerms>>,
    rooms: HashMap<String, Room>,
}

/// Starts the biller task; returns the observer to give signaling.
pub fn start(
    meter: Meter,
    sfu: Arc<Sfu>,
    participants: Participants,
    plans: HashMap<String, BillingTerms>,
) -> BillingObserver {
    start_with(meter, sfu, participants, plans)
}

/// `start` with any media plane.
pub fn start_with<M: MediaControl>(
    meter: Meter,
    sfu: Arc<M>,
    participants: Participants,
    plans: HashMap<String, BillingTerms>,
) -> BillingObserver {
    let (tx, rx) = mpsc::unbounded_channel();
    let plans = Arc::new(plans);
    let biller = Biller {
        meter: meter.clone(),
        sfu,
        participants,
        plans: plans.clone(),
        rooms: HashMap::new(),
    };
    tokio::spawn(biller.run(rx, meter.events()));
    BillingObserver { events: tx, plans }
}

impl<M: MediaControl> Biller<M> {
    async fn run(
        mut self,
        mut calls: mpsc::UnboundedReceiver<CallEvent>,
        mut meter_events: broadcast::Receiver<MeterEvent>,
    ) {
        loop {
            tokio::select! {
                call = calls.recv() => match call {
                    Some(CallEvent::Joined(p)) => self.joined(p).await,
                    Some(CallEvent::MediaConnected(p)) => self.media_connected(p).await,
                    Some(CallEvent::Left(p, usage)) => self.left(p, usage).await,
                    Some(CallEvent::Reconnecting(p, since_ms)) => {
                        self.reconnecting(p, since_ms).await
                    }
                    Some(CallEvent::Resumed(p)) => self.resumed(p).await,
                    None => return,
                },
                event = meter_events.recv() => match event {
                    Ok(event) => self.meter_event(event).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "biller fell behind the meter's events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    async fn joined(&mut self, p: CallParticipant) {
        let Some(claims) = &p.billing else {
            return;
        };
        match resolve_terms(&p.room, claims, &self.plans) {
            Ok(resolved) => self
                .rooms
                .entry(p.room.clone())
                .or_default()
                .offers
                .push(Offer {
                    holder_sid: p.sid.clone(),
                    payer: resolved.payer,
                    payee: resolved.payee,
                    terms: resolved.terms,
                    call_type: resolved.call_type,
                    call_id: claims.call.clone(),
                }),
            // Checked at join already; a plan removed since: the holder's
            // media stays held, so it leaves rather than calls unbilled.
            Err(refusal) => {
                self.participants.send(
                    &p.sid,
                    ServerMessage::error("billing_invalid", refusal.message),
                );
                self.sfu
                    .end_session(&p.room, &p.sid, LeaveReason::BillingInvalid);
            }
        }
    }

    async fn media_connected(&mut self, p: CallParticipant) {
        let room = self.rooms.entry(p.room.clone()).or_default();
        room.connected.insert(p.identity.clone(), p.sid.clone());
        self.start_ready(&p.room).await;
    }

    /// A call is `video` when the payer or the payee publishes a video
    /// track as billing starts; `audio` otherwise, and when the room cannot
    /// be read (the session is billed the same either way: the type is a
    /// record for the app and finance, not a price).
    async fn published_type(&self, room: &str, payer: &str, payee: &str) -> CallType {
        if self.sfu.publishes_video(room, [payer, payee]).await {
            CallType::Video
        } else {
            CallType::Audio
        }
    }

    /// Starts every offer whose payer and payee both have media, and lets
    /// its holder's media flow once the meter holds the first block.
    async fn start_ready(&mut self, room_name: &str) {
        loop {
            let Some(room) = self.rooms.get_mut(room_name) else {
                return;
            };
            // A side that is reconnecting has no media: not billed yet.
            let here = |sid: &String| !room.reconnecting.contains(sid);
            let ready = room.offers.iter().enumerate().find_map(|(i, offer)| {
                let payer_sid = room
                    .connected
                    .get(&offer.payer)
                    .filter(|s| here(s))?
                    .clone();
                let (payee, payee_sid) = match &offer.payee {
                    Some(payee) => (
                        payee.clone(),
                        room.connected.get(payee).filter(|s| here(s))?.clone(),
                    ),
                    None => room
                        .connected
                        .iter()
                        .find(|(identity, sid)| **identity != offer.payer && here(sid))
                        .map(|(i, s)| (i.clone(), s.clone()))?,
                };
                Some((i, payer_sid, payee, payee_sid))
            });
            let Some((index, payer_sid, payee, payee_sid)) = ready else {
                return;
            };
            let offer = room.offers.remove(index);
            let call_type = match offer.call_type {
                Some(declared) => declared,
                None => self.published_type(room_name, &offer.payer, &payee).await,
            };
            let start = SessionStart {
                room: room_name.to_owned(),
                payer: offer.payer.clone(),
                payee: offer.payee.clone().or(Some(payee.clone())),
                terms: offer.terms,
                call_type,
                call_id: offer.call_id.clone(),
            };
            match self.meter.start_session(start).await {
                Ok(session) => {
                    info!(room = %room_name, payer = %offer.payer, payee = %payee, session = %session.id(), "billed session started");
                    // The hold is in the ledger: media may flow. (The meter
                    // announces the first `SecondsLeft` itself.)
                    if let Err(e) = self
                        .sfu
                        .hold_media(room_name, &offer.holder_sid, false)
                        .await
                    {
                        warn!(room = %room_name, error = %e, "holder gone before its media was released");
                    }
                    let billed = Billed {
                        session,
                        offer,
                        payer_sid,
                        payee_sid,
                        lost: HashSet::new(),
                    };
                    if let Some(room) = self.rooms.get_mut(room_name) {
                        room.billed.push(billed);
                    } else {
                        self.end(billed, EndReason::PayerLeft).await;
                    }
                }
                Err(e) => self.refuse(room_name, offer, &e).await,
            }
        }
    }

    /// A paid session that cannot start: the holder's part in the call
    /// ends (the whole call when it is one to one), with the reason told.
    async fn refuse(&mut self, room_name: &str, offer: Offer, e: &MeterError) {
        let reason = refusal_reason(e);
        warn!(room = %room_name, payer = %offer.payer, error = %e, reason = reason.as_str(), "billed session refused; ending the call");
        self.participants.send(
            &offer.holder_sid,
            ServerMessage::error(reason.as_str(), e.to_string()),
        );
        if offer.payee.is_some() {
            if let Err(e) = self.sfu.close_room(room_name, reason).await {
                warn!(room = %room_name, error = %e, "refused call already gone");
            }
        } else {
            self.sfu.end_session(room_name, &offer.holder_sid, reason);
        }
    }

    async fn left(&mut self, p: CallParticipant, usage: MediaUsage) {
        if let Some(connected_at_ms) = usage.connected_at_ms {
            let record = UsageRecord {
                room: p.room.clone(),
                identity: p.identity.clone(),
                kind: if usage.video {
                    UsageKind::Video
                } else {
                    UsageKind::Audio
                },
                started_at_ms: connected_at_ms,
                ended_at_ms: unix_now_ms(),
            };
            if let Err(e) = self.meter.record_usage(record).await {
                warn!(room = %p.room, identity = %p.identity, error = %e, "usage not recorded");
            }
        }
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        if room.connected.get(&p.identity) == Some(&p.sid) {
            room.connected.remove(&p.identity);
        }
        room.reconnecting.remove(&p.sid);
        room.offers.retain(|o| o.holder_sid != p.sid);
        let (ended, kept): (Vec<Billed>, Vec<Billed>) = room
            .billed
            .drain(..)
            .partition(|b| b.payer_sid == p.sid || b.payee_sid == p.sid);
        room.billed = kept;
        for b in ended {
            let reason = match usage.lost_at_ms {
                // Not back within the grace: charged up to when its media
                // stopped (already the pause point when paused).
                Some(lost_at_ms) => {
                    b.session.pause(instant_of(&self.meter, lost_at_ms)).await;
                    EndReason::ConnectionLost
                }
                None if b.payer_sid == p.sid => EndReason::PayerLeft,
                None => EndReason::PayeeLeft,
            };
            if b.offer.holder_sid != p.sid {
                self.wait_again(&p.room, b.offer.clone()).await;
            }
            self.end(b, reason).await;
        }
        if let Some(room) = self.rooms.get(&p.room)
            && room.connected.is_empty()
            && room.offers.is_empty()
            && room.billed.is_empty()
        {
            self.rooms.remove(&p.room);
        }
    }

    /// The payer or the payee of billed sessions lost its connection: stop
    /// their billed clock from when its media stopped, and hold their
    /// holder's media first (nothing flows while nothing is charged).
    /// Elsewhere it only keeps a session from starting.
    async fn reconnecting(&mut self, p: CallParticipant, since_ms: i64) {
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.reconnecting.insert(p.sid.clone());
        let mut pause = Vec::new();
        for (i, b) in room.billed.iter_mut().enumerate() {
            if (b.payer_sid == p.sid || b.payee_sid == p.sid)
                && b.lost.insert(p.sid.clone())
                && b.lost.len() == 1
            {
                pause.push(i);
            }
        }
        let since = instant_of(&self.meter, since_ms);
        for i in pause {
            let Some(b) = self.rooms.get(&p.room).and_then(|r| r.billed.get(i)) else {
                continue;
            };
            if let Err(e) = self
                .sfu
                .hold_media(&p.room, &b.offer.holder_sid, true)
                .await
            {
                info!(room = %p.room, error = %e, "holder gone while reconnecting");
            }
            if b.session.pause(since).await {
                info!(room = %p.room, session = %b.session.id(), sid = %p.sid, since_ms, "billed session paused: reconnecting");
            }
        }
    }

    /// The participant is back: sessions with nobody else reconnecting
    /// resume, then their holder's media flows again; a waiting offer may
    /// start.
    async fn resumed(&mut self, p: CallParticipant) {
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.reconnecting.remove(&p.sid);
        let mut resume = Vec::new();
        for (i, b) in room.billed.iter_mut().enumerate() {
            if b.lost.remove(&p.sid) && b.lost.is_empty() {
                resume.push(i);
            }
        }
        for i in resume {
            let Some(b) = self.rooms.get(&p.room).and_then(|r| r.billed.get(i)) else {
                continue;
            };
            if !b.session.resume(Instant::now()).await {
                // Over already (the meter's news ends it here).
                continue;
            }
            info!(room = %p.room, session = %b.session.id(), sid = %p.sid, "billed session resumed");
            if let Err(e) = self
                .sfu
                .hold_media(&p.room, &b.offer.holder_sid, false)
                .await
            {
                info!(room = %p.room, error = %e, "holder gone before its media was released");
            }
        }
        self.start_ready(&p.room).await;
    }

    /// A billed session ends while its holder stays in the room: hold the
    /// holder's media again (before the session ends, so no moment goes
    /// unbilled) and wait for the other side as at the start.
    async fn wait_again(&mut self, room_name: &str, offer: Offer) {
        match self
            .sfu
            .hold_media(room_name, &offer.holder_sid, true)
            .await
        {
            Ok(()) => self
                .rooms
                .entry(room_name.to_owned())
                .or_default()
                .offers
                .push(offer),
            Err(e) => {
                info!(room = %room_name, error = %e, "holder gone; its terms go with it")
            }
        }
    }

    async fn end(&self, billed: Billed, reason: EndReason) {
        let id = billed.session.id().to_owned();
        match billed.session.end(reason).await {
            Ok(summary) => info!(session = %id, ?summary, "billed session ended"),
            Err(e) => warn!(session = %id, error = %e, "billed session did not end cleanly"),
        }
    }

    fn find(&self, session: &str) -> Option<(&String, &Billed)> {
        self.rooms.iter().find_map(|(name, room)| {
            room.billed
                .iter()
                .find(|b| b.session.id() == session)
                .map(|b| (name, b))
        })
    }

    async fn meter_event(&mut self, event: MeterEvent) {
        match event {
            MeterEvent::SecondsLeft {
                session,
                seconds_left,
                ..
            } => {
                if let Some((_, b)) = self.find(&session) {
                    notify(
                        &self.participants,
                        b,
                        ServerMessage::Balance { seconds_left },
                    );
                }
            }
            MeterEvent::Warning {
                session,
                seconds_left,
                ..
            } => {
                if let Some((_, b)) = self.find(&session) {
                    notify(
                        &self.participants,
                        b,
                        ServerMessage::BalanceWarning { seconds_left },
                    );
                }
            }
            MeterEvent::Cut {
                session, reason, ..
            } => self.cut(&session, reason).await,
            _ => {}
        }
    }

    /// The meter stopped a session on its own (mostly: the payer's wallet
    /// is dry): end it here too, then the payer's part in the call (the
    /// whole call when it is one to one).
    async fn cut(&mut self, session: &str, reason: EndReason) {
        let Some(room_name) = self.find(session).map(|(name, _)| name.clone()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let Some(index) = room.billed.iter().position(|b| b.session.id() == session) else {
            return;
        };
        let billed = room.billed.remove(index);
        let payer = billed.offer.payer.clone();
        let one_to_one = billed.one_to_one();
        let leave = match reason {
            EndReason::InsufficientBalance => LeaveReason::InsufficientBalance,
            // The ledger can no longer pay for the call (another node closed
            // the session, or the database is gone): it cannot go on unpaid.
            _ => LeaveReason::BillingStopped,
        };
        info!(room = %room_name, payer = %payer, session, reason = leave.as_str(), "cutting the call");
        // A holder who is not the payer stays: nothing flows until someone pays again.
        if !one_to_one && billed.offer.holder_sid != billed.payer_sid {
            self.wait_again(&room_name, billed.offer.clone()).await;
        }
        self.end(billed, reason).await;
        let result = if one_to_one {
            self.sfu.close_room(&room_name, leave).await
        } else {
            self.sfu.remove_participant(&room_name, &payer, leave).await
        };
        if let Err(e) = result {
            warn!(room = %room_name, error = %e, "cut found the call already gone");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The biller driven through its `CallObserver`, on a real SQLite
    //! ledger and tokio's paused clock, with a media plane that records
    //! what it is asked.

    use std::sync::Mutex;

    use callgate_metering::{Clock, MeterConfig, SessionSummary};
    use tokio::time::sleep;

    use super::*;

    /// 2023-11-14T22:13:20Z: the meter's time of day at the test's start.
    const T0: i64 = 1_700_000_000_000;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Asked {
        Hold { sid: String, held: bool },
        End { sid: String },
        Close,
        Remove { identity: String },
    }

    /// Answers every request at once and reports it on a channel.
    struct FakeMedia {
        asked: mpsc::UnboundedSender<Asked>,
        log: Mutex<Vec<Asked>>,
    }

    impl FakeMedia {
        fn tell(&self, a: Asked) {
            self.log.lock().unwrap().push(a.clone());
            let _ = self.asked.send(a);
        }
    }

    impl MediaControl for FakeMedia {
        fn hold_media(
            &self,
            _room: &str,
            sid: &str,
            held: bool,
        ) -> impl Future<Output = Result<(), SfuError>> + Send {
            self.tell(Asked::Hold {
                sid: sid.into(),
                held,
            });
            std::future::ready(Ok(()))
        }
        fn end_session(&self, _room: &str, sid: &str, _reason: LeaveReason) {
            self.tell(Asked::End { sid: sid.into() });
        }
        fn close_room(
            &self,
            _room: &str,
            _reason: LeaveReason,
        ) -> impl Future<Output = Result<(), SfuError>> + Send {
            self.tell(Asked::Close);
            std::future::ready(Ok(()))
        }
        fn remove_participant(
            &self,
            _room: &str,
            identity: &str,
            _reason: LeaveReason,
        ) -> impl Future<Output = Result<(), SfuError>> + Send {
            self.tell(Asked::Remove {
                identity: identity.into(),
            });
            std::future::ready(Ok(()))
        }
        async fn publishes_video(&self, _room: &str, _identities: [&str; 2]) -> bool {
            false
        }
    }

    struct Call {
        meter: Meter,
        media: Arc<FakeMedia>,
        asked: mpsc::UnboundedReceiver<Asked>,
        observer: BillingObserver,
        events: broadcast::Receiver<MeterEvent>,
        alice: CallParticipant,
        bob: CallParticipant,
    }

    fn hold(sid: &str, held: bool) -> Asked {
        Asked::Hold {
            sid: sid.into(),
            held,
        }
    }

    /// alice pays bob `rate` coins a minute per second (1/1) with 20%
    /// commission and has 1000 coins; both in the room, media not yet
    /// connected.
    async fn call(rate: i64) -> Call {
        let dir = std::env::temp_dir().join(format!(
            "callgate-billing-tests-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = MeterConfig::new(callgate_metering::sqlite_url(&dir.join("metering.db")));
        let meter = Meter::open(config, Clock::tokio_at(T0)).await.unwrap();
        meter.credit("alice", 1_000, "pay-1").await.unwrap();
        let (tx, asked) = mpsc::unbounded_channel();
        let media = Arc::new(FakeMedia {
            asked: tx,
            log: Mutex::new(Vec::new()),
        });
        let events = meter.events();
        let observer = start_with(
            meter.clone(),
            media.clone(),
            Participants::default(),
            HashMap::new(),
        );
        let alice = CallParticipant {
            room: "room-1".into(),
            identity: "alice".into(),
            sid: "PA_alice".into(),
            billing: Some(BillingClaims {
                payer: Some("alice".into()),
                payee: Some("bob".into()),
                rate: Some(rate),
                increments: Some("1/1".into()),
                commission: Some("20%".into()),
                ..BillingClaims::default()
            }),
        };
        let bob = CallParticipant {
            room: "room-1".into(),
            identity: "bob".into(),
            sid: "PA_bob".into(),
            billing: None,
        };
        observer.joined(&alice);
        observer.joined(&bob);
        Call {
            meter,
            media,
            asked,
            observer,
            events,
            alice,
            bob,
        }
    }

    impl Call {
        async fn next_asked(&mut self) -> Asked {
            self.asked.recv().await.expect("biller gone")
        }

        /// Both sides' media connect; returns once the session started
        /// (alice's media released).
        async fn connect_both(&mut self) {
            self.observer.media_connected(&self.alice);
            self.observer.media_connected(&self.bob);
            assert_eq!(self.next_asked().await, hold("PA_alice", false));
            assert_eq!(self.meter.open_sessions(), 1);
        }

        async fn ended(&mut self) -> SessionSummary {
            loop {
                if let MeterEvent::Ended { summary } = self.events.recv().await.unwrap() {
                    return summary;
                }
            }
        }

        fn left(&self, p: &CallParticipant, lost_at_ms: Option<i64>) {
            self.observer.left(
                p,
                MediaUsage {
                    connected_at_ms: None,
                    video: false,
                    lost_at_ms,
                    ended_by: None,
                },
            );
        }

        async fn assert_clean(&self) {
            let report = self.meter.audit().await.unwrap();
            assert!(report.is_clean(), "{report:#?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_payer_silent_eight_seconds_is_charged_call_time_minus_the_silence() {
        let mut c = call(60).await;
        c.connect_both().await;
        sleep(Duration::from_secs(13)).await;
        // Its media stopped at 10 s; signaling says so at 13 s.
        let since = c.meter.now_ms() - 3_000;
        c.observer.reconnecting(&c.alice, since);
        assert_eq!(c.next_asked().await, hold("PA_alice", true), "fail closed");
        sleep(Duration::from_secs(5)).await;
        c.observer.resumed(&c.alice);
        assert_eq!(c.next_asked().await, hold("PA_alice", false));
        sleep(Duration::from_secs(12)).await;
        c.left(&c.bob, None);
        let s = c.ended().await;
        // 30 s of call, silent from 10 s to 18 s: 22 s at 1 coin a second.
        assert_eq!(s.end_reason, EndReason::PayeeLeft);
        assert_eq!((s.duration_ms, s.billed_seconds, s.coins), (22_000, 22, 22));
        assert_eq!((s.payee_coins, s.platform_coins), (18, 4));
        assert_eq!(s.ended_ms - s.started_ms, 30_000);
        // The holder stays: its media is held again for the next session.
        assert_eq!(c.next_asked().await, hold("PA_alice", true));
        let w = c.meter.wallet("alice").await.unwrap();
        assert_eq!((w.balance, w.held), (978, 0));
        c.assert_clean().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_payer_not_back_within_the_grace_ends_connection_lost_at_the_silence() {
        let mut c = call(60).await;
        c.connect_both().await;
        sleep(Duration::from_secs(45)).await;
        let since = c.meter.now_ms() - 5_000;
        c.observer.reconnecting(&c.alice, since);
        assert_eq!(c.next_asked().await, hold("PA_alice", true));
        // The grace (20 s from the loss at 45 s) runs out.
        sleep(Duration::from_secs(20)).await;
        c.left(&c.alice, Some(since));
        let s = c.ended().await;
        assert_eq!(s.end_reason, EndReason::ConnectionLost);
        assert_eq!((s.duration_ms, s.billed_seconds, s.coins), (40_000, 40, 40));
        assert_eq!(s.ended_ms - s.started_ms, 40_000);
        assert_eq!(c.meter.open_sessions(), 0);
        assert_eq!(c.meter.wallet("alice").await.unwrap().balance, 960);
        // The payer (the holder) left: nothing more asked of the media plane.
        assert_eq!(
            *c.media.log.lock().unwrap(),
            [hold("PA_alice", false), hold("PA_alice", true)]
        );
        c.assert_clean().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_payee_lost_without_a_reconnecting_notice_is_charged_up_to_its_silence() {
        let mut c = call(60).await;
        c.connect_both().await;
        sleep(Duration::from_secs(30)).await;
        let lost_at = c.meter.now_ms() - 4_000;
        c.left(&c.bob, Some(lost_at));
        let s = c.ended().await;
        assert_eq!(s.end_reason, EndReason::ConnectionLost);
        assert_eq!((s.duration_ms, s.coins), (26_000, 26));
        // alice, the holder, stays and waits for a payee with media held.
        assert_eq!(c.next_asked().await, hold("PA_alice", true));
        c.assert_clean().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_resumes_only_when_neither_side_is_reconnecting() {
        let mut c = call(60).await;
        c.connect_both().await;
        sleep(Duration::from_secs(10)).await;
        // bob (the payee) goes first: alice's media is held all the same.
        c.observer.reconnecting(&c.bob, c.meter.now_ms());
        assert_eq!(c.next_asked().await, hold("PA_alice", true));
        sleep(Duration::from_secs(2)).await;
        c.observer.reconnecting(&c.alice, c.meter.now_ms());
        sleep(Duration::from_secs(2)).await;
        c.observer.resumed(&c.bob);
        sleep(Duration::from_secs(3)).await;
        // alice still reconnecting: still paused, still held.
        c.observer.resumed(&c.alice);
        assert_eq!(c.next_asked().await, hold("PA_alice", false));
        assert_eq!(
            *c.media.log.lock().unwrap(),
            [
                hold("PA_alice", false),
                hold("PA_alice", true),
                hold("PA_alice", false)
            ],
            "one pause, one release"
        );
        sleep(Duration::from_secs(5)).await;
        c.left(&c.alice, None);
        let s = c.ended().await;
        // 22 s of call, 10 s → 17 s paused.
        assert_eq!(s.end_reason, EndReason::PayerLeft);
        assert_eq!((s.duration_ms, s.coins), (15_000, 15));
        c.assert_clean().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_reconnecting_before_the_session_starts_delays_the_start() {
        let mut c = call(60).await;
        c.observer.media_connected(&c.alice);
        c.observer.reconnecting(&c.alice, c.meter.now_ms());
        c.observer.media_connected(&c.bob);
        sleep(Duration::from_secs(6)).await;
        assert_eq!(c.meter.open_sessions(), 0, "no session with alice away");
        assert!(c.media.log.lock().unwrap().is_empty());
        c.observer.resumed(&c.alice);
        assert_eq!(c.next_asked().await, hold("PA_alice", false));
        assert_eq!(c.meter.open_sessions(), 1);
        sleep(Duration::from_secs(7)).await;
        c.left(&c.bob, None);
        let s = c.ended().await;
        assert_eq!(
            (s.duration_ms, s.coins),
            (7_000, 7),
            "billed from the start"
        );
        c.assert_clean().await;
    }
}
