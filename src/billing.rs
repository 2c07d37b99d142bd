//! Joins calls to money: watches participants through signaling's
//! `CallObserver`, starts a billed session on the meter when the payer and
//! the payee both have media, relays the meter's news to their clients, and
//! cuts the call when the meter says the wallet ran dry.
//!
//! One task owns all call state; observer calls and meter events reach it
//! over channels, so nothing here takes a lock.

use std::collections::HashMap;
use std::sync::Arc;

use callgate_metering::{
    BillingTerms, CallType, EndReason, Meter, MeterEvent, SessionHandle, SessionStart, UsageKind,
    UsageRecord,
};
use callgate_sfu::{LeaveReason, Sfu};
use callgate_signaling::calls::{CallObserver, CallParticipant, MediaUsage, Participants, Refusal};
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

/// Billing terms a token asks for, resolved against the configured plans.
fn resolve(
    claims: &BillingClaims,
    plans: &HashMap<String, BillingTerms>,
) -> Result<(String, Option<String>, BillingTerms, CallType), Refusal> {
    let refuse = |message: &str| Refusal {
        message: message.to_owned(),
    };
    let payer = claims
        .payer
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| refuse("billing terms need a payer"))?;
    let payee = claims.payee.clone().filter(|p| !p.is_empty());
    if payee.as_deref() == Some(payer.as_str()) {
        return Err(refuse("payer and payee are the same identity"));
    }
    let mut terms = match &claims.plan {
        Some(name) => plans
            .get(name)
            .cloned()
            .ok_or_else(|| refuse(&format!("no rate plan named `{name}`")))?,
        None => BillingTerms::default(),
    };
    match (claims.rate, &claims.plan) {
        (Some(rate), _) if rate <= 0 => {
            return Err(refuse("rate must be a positive number of coins per minute"));
        }
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
            return Err(refuse(&format!(
                "call_type `{other}` is not audio or video"
            )));
        }
    };
    Ok((payer, payee, terms, call_type))
}

impl CallObserver for BillingObserver {
    fn check(
        &self,
        _room: &str,
        _identity: &str,
        billing: Option<&BillingClaims>,
    ) -> Result<(), Refusal> {
        match billing {
            Some(claims) => resolve(claims, &self.plans).map(|_| ()),
            None => Ok(()),
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
struct Offer {
    /// The session (participant sid) whose token carried the terms.
    from_sid: String,
    payer: String,
    payee: Option<String>,
    terms: BillingTerms,
    call_type: CallType,
}

struct Billed {
    session: SessionHandle,
    payer: String,
    payer_sid: String,
    /// The session of the payee named in the terms, or of whoever answered.
    payee_sid: String,
    one_to_one: bool,
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
                    Some(CallEvent::Joined(p)) => self.joined(p),
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

    fn joined(&mut self, p: CallParticipant) {
        let Some(claims) = &p.billing else {
            return;
        };
        // Checked at join already; a plan removed since is skipped.
        let Ok((payer, payee, terms, call_type)) = resolve(claims, &self.plans) else {
            return;
        };
        self.rooms
            .entry(p.room.clone())
            .or_default()
            .offers
            .push(Offer {
                from_sid: p.sid.clone(),
                payer,
                payee,
                terms,
                call_type,
            });
    }

    async fn media_connected(&mut self, p: CallParticipant) {
        let room = self.rooms.entry(p.room.clone()).or_default();
        room.connected.insert(p.identity.clone(), p.sid.clone());
        self.start_ready(&p.room).await;
    }

    /// Starts every offer whose payer and payee both have media.
    async fn start_ready(&mut self, room_name: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let mut i = 0;
        while i < room.offers.len() {
            let offer = &room.offers[i];
            let Some(payer_sid) = room.connected.get(&offer.payer).cloned() else {
                i += 1;
                continue;
            };
            let answered = match &offer.payee {
                Some(payee) => room
                    .connected
                    .get(payee)
                    .map(|sid| (payee.clone(), sid.clone())),
                None => room
                    .connected
                    .iter()
                    .find(|(identity, _)| **identity != offer.payer)
                    .map(|(i, s)| (i.clone(), s.clone())),
            };
            let Some((payee, payee_sid)) = answered else {
                i += 1;
                continue;
            };
            let offer = room.offers.remove(i);
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
                    // The meter announces the first `SecondsLeft` itself.
                    let billed = Billed {
                        session,
                        payer: offer.payer.clone(),
                        payer_sid,
                        payee_sid,
                        one_to_one: offer.payee.is_some(),
                    };
                    room.billed.push(billed);
                }
                Err(e) => {
                    warn!(room = %room_name, payer = %offer.payer, error = %e, "could not start a billed session")
                }
            }
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
        room.offers.retain(|o| o.from_sid != p.sid);
        let (ended, kept): (Vec<Billed>, Vec<Billed>) = room
            .billed
            .drain(..)
            .partition(|b| b.payer_sid == p.sid || b.payee_sid == p.sid);
        room.billed = kept;
        let empty = room.connected.is_empty() && room.offers.is_empty() && room.billed.is_empty();
        if empty {
            self.rooms.remove(&p.room);
        }
        for b in ended {
            let reason = if b.payer_sid == p.sid {
                EndReason::PayerLeft
            } else {
                EndReason::PayeeLeft
            };
            self.end(b, reason).await;
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
        let (payer, one_to_one) = (billed.payer.clone(), billed.one_to_one);
        let leave = match reason {
            EndReason::InsufficientBalance => LeaveReason::InsufficientBalance,
            // The ledger can no longer pay for the call (another node closed
            // the session, or the database is gone): it cannot go on unpaid.
            _ => LeaveReason::BillingStopped,
        };
        info!(room = %room_name, payer = %payer, session, reason = leave.as_str(), "cutting the call");
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
