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

/// Watches nothing: a node without metering. It cannot bill, so a token
/// with billing terms is refused (a paid call must never run free).
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn check(
        &self,
        _: &str,
        _: &str,
        billing: Option<&BillingClaims>,
    ) -> Result<MediaGate, Refusal> {
        match billing {
            None => Ok(MediaGate::Open),
            Some(_) => Err(Refusal {
                message: "this server runs without metering ([metering] enabled = false) \
                          and cannot bill a call"
                    .into(),
            }),
        }
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

/// One open participant connection: where its messages go, and who it is.
struct Entry {
    identity: String,
    tx: mpsc::UnboundedSender<ServerMessage>,
}

#[derive(Default)]
struct Registry {
    /// sid → its room.
    room_of: HashMap<String, String>,
    /// room → its participants by sid.
    rooms: HashMap<String, HashMap<String, Entry>>,
}

/// The open participant connections by sid, so a watcher can send a
/// participant a message and a room's data messages reach its members.
#[derive(Clone, Default)]
pub struct Participants {
    inner: Arc<Mutex<Registry>>,
}

impl Participants {
    pub(crate) fn register(
        &self,
        sid: &str,
        room: &str,
        identity: &str,
    ) -> mpsc::UnboundedReceiver<ServerMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = self.lock();
        r.room_of.insert(sid.to_owned(), room.to_owned());
        r.rooms.entry(room.to_owned()).or_default().insert(
            sid.to_owned(),
            Entry {
                identity: identity.to_owned(),
                tx,
            },
        );
        rx
    }

    pub(crate) fn unregister(&self, sid: &str) {
        let mut r = self.lock();
        let Some(room) = r.room_of.remove(sid) else {
            return;
        };
        if let Some(members) = r.rooms.get_mut(&room) {
            members.remove(sid);
            if members.is_empty() {
                r.rooms.remove(&room);
            }
        }
    }

    /// Queues `message` for participant `sid`; false if it is gone.
    pub fn send(&self, sid: &str, message: ServerMessage) -> bool {
        let r = self.lock();
        r.room_of
            .get(sid)
            .and_then(|room| r.rooms.get(room)?.get(sid))
            .is_some_and(|e| e.tx.send(message).is_ok())
    }

    /// Queues `message` for every participant of `room` but `except`
    /// (a sid), or only those whose identity is in `to` when it is not
    /// empty. Returns how many.
    pub fn send_to_room(
        &self,
        room: &str,
        except: &str,
        to: &[String],
        message: &ServerMessage,
    ) -> usize {
        let r = self.lock();
        let Some(members) = r.rooms.get(room) else {
            return 0;
        };
        members
            .iter()
            .filter(|(sid, e)| {
                sid.as_str() != except && (to.is_empty() || to.contains(&e.identity))
            })
            .filter(|(_, e)| e.tx.send(message.clone()).is_ok())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
