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
//! One task owns all call state; observer calls and meter events reach it
//! over channels, so nothing here takes a lock.

use std::collections::HashMap;
use std::sync::Arc;

use callgate_metering::{
    BillingTerms, CallType, EndReason, Meter, MeterError, MeterEvent, SessionHandle, SessionStart,
    UsageKind, UsageRecord,
};
use callgate_sfu::{LeaveReason, Sfu};
use callgate_signaling::calls::{
    CallObserver, CallParticipant, MediaGate, MediaUsage, Participants, Refusal,
};
use callgate_signaling::protocol::ServerMessage;
use callgate_signaling::token::{BillingClaims, unix_now_ms};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

/// What signaling tells the biller.
enum CallEvent {
    Joined(CallParticipant),
    MediaConnected(CallParticipant),
    Left(CallParticipant, MediaUsage),
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
    pub call_type: CallType,
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
        None | Some("audio") => CallType::Audio,
        Some("video") => CallType::Video,
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
        call_type,
    };
    start.validate().map_err(|e| refuse(&e.to_string()))?;
    Ok(ResolvedTerms {
        payer: start.payer,
        payee: start.payee,
        terms: start.terms,
        call_type: start.call_type,
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
    call_type: CallType,
}

struct Billed {
    session: SessionHandle,
    /// What started it, to wait again if the call goes on without a session.
    offer: Offer,
    payer_sid: String,
    /// The session of the payee named in the terms, or of whoever answered.
    payee_sid: String,
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

struct Biller {
    meter: Meter,
    sfu: Arc<Sfu>,
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

impl Biller {
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

    /// Starts every offer whose payer and payee both have media, and lets
    /// its holder's media flow once the meter holds the first block.
    async fn start_ready(&mut self, room_name: &str) {
        loop {
            let Some(room) = self.rooms.get_mut(room_name) else {
                return;
            };
            let ready = room.offers.iter().enumerate().find_map(|(i, offer)| {
                let payer_sid = room.connected.get(&offer.payer)?.clone();
                let (payee, payee_sid) = match &offer.payee {
                    Some(payee) => (payee.clone(), room.connected.get(payee)?.clone()),
                    None => room
                        .connected
                        .iter()
                        .find(|(identity, _)| **identity != offer.payer)
                        .map(|(i, s)| (i.clone(), s.clone()))?,
                };
                Some((i, payer_sid, payee, payee_sid))
            });
            let Some((index, payer_sid, payee, payee_sid)) = ready else {
                return;
            };
            let offer = room.offers.remove(index);
            let start = SessionStart {
                room: room_name.to_owned(),
                payer: offer.payer.clone(),
                payee: offer.payee.clone().or(Some(payee.clone())),
                terms: offer.terms,
                call_type: offer.call_type,
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
        room.offers.retain(|o| o.holder_sid != p.sid);
        let (ended, kept): (Vec<Billed>, Vec<Billed>) = room
            .billed
            .drain(..)
            .partition(|b| b.payer_sid == p.sid || b.payee_sid == p.sid);
        room.billed = kept;
        for b in ended {
            let reason = if b.payer_sid == p.sid {
                EndReason::PayerLeft
            } else {
                EndReason::PayeeLeft
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
