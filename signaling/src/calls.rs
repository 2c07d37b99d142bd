//! What the control plane tells whoever watches calls (metering), and how
//! that watcher talks back to participants. Signaling knows nothing of money:
//! the binary plugs a `CallObserver` in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use callgate_sfu::LeaveReason;

use crate::protocol::ServerMessage;
use crate::token::BillingClaims;

/// One participant's session as a watcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallParticipant {
    pub room: String,
    pub identity: String,
    /// The session (participant sid): an identity that rejoins is a new one.
    pub sid: String,
    /// Billing terms from the participant's token, if any.
    pub billing: Option<BillingClaims>,
}

/// What a participant did while in the room, told when it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaUsage {
    /// Unix milliseconds when its media first connected; `None` if never.
    pub connected_at_ms: Option<i64>,
    /// It sent or received video (else audio only).
    pub video: bool,
    /// Unix milliseconds when its media stopped, when the session ended
    /// because it was reconnecting for longer than the grace (reason
    /// `connection_lost`): a billed session is charged up to this moment.
    pub lost_at_ms: Option<i64>,
    /// Why the server ended the session, when it did (None: the client
    /// left).
    pub ended_by: Option<LeaveReason>,
}

/// Whether a participant's media may flow as soon as it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaGate {
    /// Media flows as soon as its transports connect.
    Open,
    /// Nothing is forwarded from or to the participant until the watcher
    /// releases it (`Sfu::hold_media`), or ends its session: a paid call
    /// waits for the first hold in the ledger.
    Held,
}

/// Why a watcher refuses a participant at join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
}

/// Watches participants come, connect and go. Calls are made from
/// signaling tasks; implementations must not block.
pub trait CallObserver: Send + Sync + 'static {
    /// Before the participant enters the room; an error closes the
    /// WebSocket with 4007 `billing_invalid` and nothing changes.
    fn check(
        &self,
        room: &str,
        identity: &str,
        billing: Option<&BillingClaims>,
    ) -> Result<MediaGate, Refusal>;
    fn joined(&self, participant: &CallParticipant);
    fn media_connected(&self, participant: &CallParticipant);
    fn left(&self, participant: &CallParticipant, usage: MediaUsage);
    /// The participant's connection is lost (docs/protocol.md, "Staying
    /// connected"): its WebSocket dropped or its media went silent.
    /// `since_ms` (unix milliseconds) is when its media was last heard, or
    /// when its WebSocket dropped if media was still flowing then.
    fn reconnecting(&self, _participant: &CallParticipant, _since_ms: i64) {}
    /// The participant is back after `reconnecting`.
    fn resumed(&self, _participant: &CallParticipant) {}
}

/// Watches nothing: a node without metering.
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn check(&self, _: &str, _: &str, _: Option<&BillingClaims>) -> Result<MediaGate, Refusal> {
        Ok(MediaGate::Open)
    }
    fn joined(&self, _: &CallParticipant) {}
    fn media_connected(&self, _: &CallParticipant) {}
    fn left(&self, _: &CallParticipant, _: MediaUsage) {}
}

/// Several watchers as one: the first refusal refuses a join, media is
/// held if any watcher holds it, and every watcher hears every event.
pub struct Observers(pub Vec<Arc<dyn CallObserver>>);

impl CallObserver for Observers {
    fn check(
        &self,
        room: &str,
        identity: &str,
        billing: Option<&BillingClaims>,
    ) -> Result<MediaGate, Refusal> {
        let mut gate = MediaGate::Open;
        for o in &self.0 {
            if o.check(room, identity, billing)? == MediaGate::Held {
                gate = MediaGate::Held;
            }
        }
        Ok(gate)
    }
    fn joined(&self, p: &CallParticipant) {
        self.0.iter().for_each(|o| o.joined(p));
    }
    fn media_connected(&self, p: &CallParticipant) {
        self.0.iter().for_each(|o| o.media_connected(p));
    }
    fn left(&self, p: &CallParticipant, usage: MediaUsage) {
        self.0.iter().for_each(|o| o.left(p, usage));
    }
    fn reconnecting(&self, p: &CallParticipant, since_ms: i64) {
        self.0.iter().for_each(|o| o.reconnecting(p, since_ms));
    }
    fn resumed(&self, p: &CallParticipant) {
        self.0.iter().for_each(|o| o.resumed(p));
    }
}

/// The open signaling connections by participant sid, so a watcher can
/// send a participant a message.
#[derive(Clone, Default)]
pub struct Participants {
    inner: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ServerMessage>>>>,
}

impl Participants {
    pub(crate) fn register(&self, sid: &str) -> mpsc::UnboundedReceiver<ServerMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(sid.to_owned(), tx);
        rx
    }

    pub(crate) fn unregister(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Queues `message` for participant `sid`; false if it is gone.
    pub fn send(&self, sid: &str, message: ServerMessage) -> bool {
        self.lock()
            .get(sid)
            .is_some_and(|tx| tx.send(message).is_ok())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<ServerMessage>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
