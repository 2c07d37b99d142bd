//! One call: its caller, its callees' ring states, and where it stands.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use callgate_metering::CallType;
use serde::{Deserialize, Serialize};

/// The most callees one call rings: a group call's fan-out is bounded so
/// one request cannot ring (and push-notify) an unbounded list.
pub const MAX_CALLEES: usize = 16;
/// The most bytes of an identity (as in access tokens).
const MAX_IDENTITY: usize = 256;
/// The ring timeouts a call may ask for.
const RING_TIMEOUT_MIN: Duration = Duration::from_secs(5);
const RING_TIMEOUT_MAX: Duration = Duration::from_secs(180);
/// How long an answered call may take to have two members in its room
/// together: an answer whose device never joins ends the call as failed
/// rather than leaving it (and its hold) open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a callee turned a call down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The callee declined.
    Decline,
    /// The callee is in another call.
    Busy,
}

/// Where one callee's ring stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum RingState {
    Ringing,
    Accepted,
    Rejected(RejectReason),
    /// Nobody answered within the ring timeout.
    Missed,
    /// The caller cancelled, or the call ended, while it rang.
    Cancelled,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Fewer than two of its members were left in an answered call.
    HungUp,
    /// The caller cancelled before anybody answered.
    Cancelled,
    /// Every callee declined.
    Declined,
    /// Every callee was busy (or declined, at least one as busy).
    Busy,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The payer could not pay for the call.
    InsufficientBalance,
    /// The server restarted or the room failed while the call was on.
    Failed,
}

impl RingState {
    /// Its name in the call log and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RingState::Ringing => "ringing",
            RingState::Accepted => "accepted",
            RingState::Rejected(RejectReason::Decline) => "rejected",
            RingState::Rejected(RejectReason::Busy) => "busy",
            RingState::Missed => "missed",
            RingState::Cancelled => "cancelled",
        }
    }
}

impl EndReason {
    /// Its name in the call log and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::HungUp => "hung_up",
            EndReason::Cancelled => "cancelled",
            EndReason::Declined => "declined",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no_answer",
            EndReason::InsufficientBalance => "insufficient_balance",
            EndReason::Failed => "failed",
        }
    }
}

/// How a call ended, as its log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was answered (however it ended after).
    Completed,
    Missed,
    Rejected,
    Cancelled,
    Busy,
    Failed,
    InsufficientBalance,
}

impl Outcome {
    /// Its name in the call log and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Missed => "missed",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::Busy => "busy",
            Outcome::Failed => "failed",
            Outcome::InsufficientBalance => "insufficient_balance",
        }
    }
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Ringing,
    /// Answered: at least one callee accepted.
    Accepted,
    Ended(Outcome),
}

impl CallState {
    /// The name `call_state` messages carry: `ringing`, `accepted`,
    /// `rejected`, `cancelled`, `missed` or `ended`.
    pub fn wire_name(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Accepted => "accepted",
            CallState::Ended(Outcome::Rejected | Outcome::Busy) => "rejected",
            CallState::Ended(Outcome::Cancelled) => "cancelled",
            CallState::Ended(Outcome::Missed) => "missed",
            CallState::Ended(_) => "ended",
        }
    }
}

/// An input the call refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("a call rings 1 to {MAX_CALLEES} callees")]
    CalleeCount,
    #[error("an identity is 1-256 bytes with no control characters")]
    BadIdentity,
    #[error("the caller cannot be one of its callees")]
    CallerIsCallee,
    #[error("a callee is named twice")]
    DuplicateCallee,
    #[error("the ring timeout must be 5 s to 180 s")]
    RingTimeout,
    #[error("not a member of this call")]
    NotInvited,
    #[error("only the caller may cancel")]
    NotCaller,
    #[error("the call has ended")]
    CallEnded,
    #[error("this callee already answered")]
    AlreadyAnswered,
    #[error("this callee's ring has ended")]
    NotRinging,
    #[error("the call was answered: hang up instead")]
    AlreadyAccepted,
}

impl CallError {
    /// The code an API or signaling error carries (docs/calls.md).
    pub fn code(&self) -> &'static str {
        match self {
            CallError::CalleeCount => "callee_count",
            CallError::BadIdentity => "bad_identity",
            CallError::CallerIsCallee => "caller_is_callee",
            CallError::DuplicateCallee => "duplicate_callee",
            CallError::RingTimeout => "bad_ring_timeout",
            CallError::NotInvited => "not_invited",
            CallError::NotCaller => "not_caller",
            CallError::CallEnded => "call_ended",
            CallError::AlreadyAnswered => "already_answered",
            CallError::NotRinging => "not_ringing",
            CallError::AlreadyAccepted => "already_accepted",
        }
    }
}

/// What happened, for the layer that drives the call to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Ring this callee: a `call_ring` to its connections, a `call.ring`
    /// webhook for one in the background.
    Ring { callee: String },
    /// A callee's ring ended (its devices stop ringing; a second device
    /// of one that accepted learns it was answered elsewhere).
    RingEnded { callee: String, state: RingState },
    /// The call's state changed: every member's devices are told.
    /// `by`: the member whose action changed it, if one did.
    State {
        state: CallState,
        by: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Callee {
    identity: String,
    ring: RingState,
    /// In the call's room now.
    in_room: bool,
}

/// One call (id `CA_…`), owning a room and its members' ring states.
#[derive(Debug, Clone)]
pub struct Call {
    id: String,
    room: String,
    caller: String,
    caller_in_room: bool,
    /// Two members were in the room together at some time.
    connected: bool,
    callees: Vec<Callee>,
    call_type: CallType,
    state: CallState,
    created_at: Instant,
    ring_deadline: Instant,
    answered_at: Option<Instant>,
    ended_at: Option<Instant>,
    ended_by: Option<String>,
    end_reason: Option<EndReason>,
    events: VecDeque<CallEvent>,
}

fn valid_identity(identity: &str) -> bool {
    (1..=MAX_IDENTITY).contains(&identity.len()) && !identity.chars().any(char::is_control)
}

impl Call {
    /// A call from `caller` ringing `callees` from `now` for `ring_timeout`.
    pub fn new(
        id: String,
        room: String,
        caller: String,
        callees: Vec<String>,
        call_type: CallType,
        ring_timeout: Duration,
        now: Instant,
    ) -> Result<Call, CallError> {
        if callees.is_empty() || callees.len() > MAX_CALLEES {
            return Err(CallError::CalleeCount);
        }
        if !valid_identity(&caller) || !callees.iter().all(|c| valid_identity(c)) {
            return Err(CallError::BadIdentity);
        }
        if callees.contains(&caller) {
            return Err(CallError::CallerIsCallee);
        }
        for (i, callee) in callees.iter().enumerate() {
            if callees[..i].contains(callee) {
                return Err(CallError::DuplicateCallee);
            }
        }
        if !(RING_TIMEOUT_MIN..=RING_TIMEOUT_MAX).contains(&ring_timeout) {
            return Err(CallError::RingTimeout);
        }
        let mut events: VecDeque<CallEvent> = callees
            .iter()
            .map(|callee| CallEvent::Ring {
                callee: callee.clone(),
            })
            .collect();
        events.push_back(CallEvent::State {
            state: CallState::Ringing,
            by: Some(caller.clone()),
        });
        Ok(Call {
            id,
            room,
            caller,
            caller_in_room: false,
            connected: false,
            callees: callees
                .into_iter()
                .map(|identity| Callee {
                    identity,
                    ring: RingState::Ringing,
                    in_room: false,
                })
                .collect(),
            call_type,
            state: CallState::Ringing,
            created_at: now,
            ring_deadline: now + ring_timeout,
            answered_at: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            events,
        })
    }

    fn callee_mut(&mut self, identity: &str) -> Result<&mut Callee, CallError> {
        self.callees
            .iter_mut()
            .find(|c| c.identity == identity)
            .ok_or(CallError::NotInvited)
    }

    /// A callee of an open call whose ring has not ended: one that may
    /// answer or turn the call down.
    fn ringing_callee_mut(&mut self, identity: &str) -> Result<&mut Callee, CallError> {
        self.check_open()?;
        let callee = self.callee_mut(identity)?;
        match callee.ring {
            RingState::Ringing => Ok(callee),
            RingState::Accepted => Err(CallError::AlreadyAnswered),
            _ => Err(CallError::NotRinging),
        }
    }

    fn check_open(&self) -> Result<(), CallError> {
        match self.state {
            CallState::Ended(_) => Err(CallError::CallEnded),
            _ => Ok(()),
        }
    }

    /// `identity` accepts (`call_accept`).
    pub fn accept(&mut self, now: Instant, identity: &str) -> Result<(), CallError> {
        let callee = self.ringing_callee_mut(identity)?;
        callee.ring = RingState::Accepted;
        self.answered(now, identity);
        Ok(())
    }

    fn answered(&mut self, now: Instant, identity: &str) {
        self.events.push_back(CallEvent::RingEnded {
            callee: identity.to_owned(),
            state: RingState::Accepted,
        });
        if self.state == CallState::Ringing {
            self.state = CallState::Accepted;
            self.answered_at = Some(now);
        }
        self.events.push_back(CallEvent::State {
            state: CallState::Accepted,
            by: Some(identity.to_owned()),
        });
    }

    /// `identity` turns the call down (`call_reject`).
    pub fn reject(
        &mut self,
        now: Instant,
        identity: &str,
        reason: RejectReason,
    ) -> Result<(), CallError> {
        let callee = self.ringing_callee_mut(identity)?;
        let state = RingState::Rejected(reason);
        callee.ring = state;
        self.events.push_back(CallEvent::RingEnded {
            callee: identity.to_owned(),
            state,
        });
        let still_ringing = self.callees.iter().any(|c| c.ring == RingState::Ringing);
        if self.state == CallState::Ringing && !still_ringing {
            let busy = self
                .callees
                .iter()
                .any(|c| c.ring == RingState::Rejected(RejectReason::Busy));
            let reason = if busy {
                EndReason::Busy
            } else {
                EndReason::Declined
            };
            self.end_now(now, reason, Some(identity.to_owned()));
        }
        Ok(())
    }

    /// The caller cancels before anybody answered (`call_cancel`).
    pub fn cancel(&mut self, now: Instant, identity: &str) -> Result<(), CallError> {
        self.check_open()?;
        if identity != self.caller {
            return Err(if self.callees.iter().any(|c| c.identity == identity) {
                CallError::NotCaller
            } else {
                CallError::NotInvited
            });
        }
        if self.state == CallState::Accepted {
            return Err(CallError::AlreadyAccepted);
        }
        self.end_now(now, EndReason::Cancelled, Some(identity.to_owned()));
        Ok(())
    }

    /// `identity` joined the call's room. A ringing callee that joins has
    /// answered; one whose ring ended (declined, missed) may still join a
    /// call that is on.
    pub fn joined(&mut self, now: Instant, identity: &str) -> Result<(), CallError> {
        self.check_open()?;
        if identity == self.caller {
            self.caller_in_room = true;
        } else {
            let callee = self.callee_mut(identity)?;
            callee.in_room = true;
            if callee.ring != RingState::Accepted {
                callee.ring = RingState::Accepted;
                self.answered(now, identity);
            }
        }
        if self.in_room() >= 2 {
            self.connected = true;
        }
        Ok(())
    }

    fn in_room(&self) -> usize {
        usize::from(self.caller_in_room) + self.callees.iter().filter(|c| c.in_room).count()
    }

    /// `identity` left the call's room. An answered call ends once fewer
    /// than two of its members are in the room; a caller who leaves a
    /// ringing call cancels it.
    pub fn left(&mut self, now: Instant, identity: &str) -> Result<(), CallError> {
        self.check_open()?;
        if identity == self.caller {
            self.caller_in_room = false;
            if self.state == CallState::Ringing {
                self.end_now(now, EndReason::Cancelled, Some(identity.to_owned()));
                return Ok(());
            }
        } else {
            self.callee_mut(identity)?.in_room = false;
        }
        if self.state == CallState::Accepted && self.in_room() < 2 {
            self.end_now(now, EndReason::HungUp, Some(identity.to_owned()));
        }
        Ok(())
    }

    /// Ends the call for a reason of the server's (billing, a restart, a
    /// room that closed), whatever its state.
    pub fn end(
        &mut self,
        now: Instant,
        reason: EndReason,
        by: Option<String>,
    ) -> Result<(), CallError> {
        self.check_open()?;
        self.end_now(now, reason, by);
        Ok(())
    }

    fn end_now(&mut self, now: Instant, reason: EndReason, by: Option<String>) {
        let ring_end = if reason == EndReason::NoAnswer {
            RingState::Missed
        } else {
            RingState::Cancelled
        };
        for callee in &mut self.callees {
            if callee.ring == RingState::Ringing {
                callee.ring = ring_end;
                self.events.push_back(CallEvent::RingEnded {
                    callee: callee.identity.clone(),
                    state: ring_end,
                });
            }
        }
        // An answer whose members never met in the room failed.
        let never_connected = reason == EndReason::Failed && !self.connected;
        let outcome = if self.answered_at.is_some() && !never_connected {
            Outcome::Completed
        } else {
            match reason {
                EndReason::HungUp => Outcome::Completed,
                EndReason::Cancelled => Outcome::Cancelled,
                EndReason::Declined => Outcome::Rejected,
                EndReason::Busy => Outcome::Busy,
                EndReason::NoAnswer => Outcome::Missed,
                EndReason::InsufficientBalance => Outcome::InsufficientBalance,
                EndReason::Failed => Outcome::Failed,
            }
        };
        self.state = CallState::Ended(outcome);
        self.ended_at = Some(now);
        self.ended_by = by.clone();
        self.end_reason = Some(reason);
        self.events.push_back(CallEvent::State {
            state: self.state,
            by,
        });
    }

    /// When `handle_timeout` is due next: the ring deadline while a
    /// callee rings, and the connect deadline of an answered call whose
    /// members have not yet met in the room.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ring = self
            .callees
            .iter()
            .any(|c| c.ring == RingState::Ringing)
            .then_some(self.ring_deadline);
        let connect = match (self.state, self.answered_at) {
            (CallState::Accepted, Some(at)) if !self.connected => Some(at + CONNECT_TIMEOUT),
            _ => None,
        };
        match (ring, connect) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time has come to `now`: rings past the deadline end as missed, and
    /// a call nobody answered with them.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (CallState::Accepted, Some(at)) = (self.state, self.answered_at)
            && !self.connected
            && now >= at + CONNECT_TIMEOUT
        {
            self.end_now(now, EndReason::Failed, None);
            return;
        }
        if now < self.ring_deadline || matches!(self.state, CallState::Ended(_)) {
            return;
        }
        if self.state == CallState::Ringing {
            self.end_now(now, EndReason::NoAnswer, None);
            return;
        }
        for callee in &mut self.callees {
            if callee.ring == RingState::Ringing {
                callee.ring = RingState::Missed;
                self.events.push_back(CallEvent::RingEnded {
                    callee: callee.identity.clone(),
                    state: RingState::Missed,
                });
            }
        }
    }

    /// The next thing that happened, oldest first.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// Each callee with its ring state, in the order they were named.
    pub fn callees(&self) -> impl Iterator<Item = (&str, RingState)> {
        self.callees.iter().map(|c| (c.identity.as_str(), c.ring))
    }

    /// Whether `identity` is in the call now: the caller until the call
    /// ends, a callee once it answered.
    pub fn engages(&self, identity: &str) -> bool {
        if matches!(self.state, CallState::Ended(_)) {
            return false;
        }
        identity == self.caller
            || self
                .callees
                .iter()
                .any(|c| c.identity == identity && c.ring == RingState::Accepted)
    }

    /// The ring state of callee `identity` (None for anyone else).
    pub fn ring_of(&self, identity: &str) -> Option<RingState> {
        self.callees
            .iter()
            .find(|c| c.identity == identity)
            .map(|c| c.ring)
    }

    /// The ring deadline.
    pub fn ring_deadline(&self) -> Instant {
        self.ring_deadline
    }

    /// Whether `identity` is the caller or a callee.
    pub fn is_member(&self, identity: &str) -> bool {
        identity == self.caller || self.callees.iter().any(|c| c.identity == identity)
    }

    pub fn call_type(&self) -> CallType {
        self.call_type
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    pub fn created_at(&self) -> Instant {
        self.created_at
    }

    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at
    }

    pub fn ended_at(&self) -> Option<Instant> {
        self.ended_at
    }

    /// The member whose action ended it, if one did.
    pub fn ended_by(&self) -> Option<&str> {
        self.ended_by.as_deref()
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        self.end_reason
    }

    /// How long it was answered for: from the answer to its end.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.ended_at?.saturating_duration_since(self.answered_at?))
    }
}

#[cfg(test)]
mod tests;
