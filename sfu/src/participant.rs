//! The control plane's handle on one participant's session in a worker.

use tokio::sync::{mpsc, oneshot};

use crate::session::{
    IceCandidate, LeaveReason, Resumed, SfuError, SubscriptionSettings, TransportRole,
};
use crate::worker::Command;

/// Held by the signaling connection of one participant. Dropping it without
/// `leave` ends the session with reason `left`.
pub struct ParticipantHandle {
    worker: mpsc::UnboundedSender<Command>,
    room: String,
    sid: String,
    ended: bool,
}

impl ParticipantHandle {
    pub(crate) fn new(worker: mpsc::UnboundedSender<Command>, room: String, sid: String) -> Self {
        ParticipantHandle {
            worker,
            room,
            sid,
            ended: false,
        }
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.worker
            .send(make(tx))
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Applies the client's publisher offer and returns the server's answer.
    pub async fn publish_offer(&self, sdp: String) -> Result<String, SfuError> {
        self.ask(|reply| Command::PublishOffer {
            room: self.room.clone(),
            sid: self.sid.clone(),
            sdp,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the last subscribe offer.
    pub async fn subscribe_answer(&self, sdp: String) -> Result<(), SfuError> {
        self.ask(|reply| Command::SubscribeAnswer {
            room: self.room.clone(),
            sid: self.sid.clone(),
            sdp,
            reply,
        })
        .await
    }

    pub async fn add_candidate(
        &self,
        role: TransportRole,
        candidate: IceCandidate,
    ) -> Result<(), SfuError> {
        self.ask(|reply| Command::Candidate {
            room: self.room.clone(),
            sid: self.sid.clone(),
            role,
            candidate,
            reply,
        })
        .await
    }

    pub async fn mute(&self, track_sid: String, muted: bool) -> Result<(), SfuError> {
        self.ask(|reply| Command::Mute {
            room: self.room.clone(),
            sid: self.sid.clone(),
            track_sid,
            muted,
            reply,
        })
        .await
    }

    /// What the client wants of a track it receives (`update_subscription`).
    pub async fn update_subscription(
        &self,
        track_sid: String,
        settings: SubscriptionSettings,
    ) -> Result<(), SfuError> {
        self.ask(|reply| Command::UpdateSubscription {
            room: self.room.clone(),
            sid: self.sid.clone(),
            track_sid,
            settings,
            reply,
        })
        .await
    }

    /// The signaling connection dropped without `leave`: the session is kept
    /// for the grace, reconnecting (docs/protocol.md, "Staying connected").
    pub fn detach(&self) {
        if !self.ended {
            let _ = self.worker.send(Command::Detach {
                room: self.room.clone(),
                sid: self.sid.clone(),
            });
        }
    }

    /// The signaling connection is back: the room as it is now; a subscribe
    /// offer restarting ICE follows on the events.
    pub async fn attach(&self) -> Result<Resumed, SfuError> {
        self.ask(|reply| Command::Attach {
            room: self.room.clone(),
            sid: self.sid.clone(),
            reply,
        })
        .await
    }

    /// Asks for a subscribe offer that restarts ICE.
    pub async fn ice_restart(&self) -> Result<(), SfuError> {
        self.ask(|reply| Command::IceRestart {
            room: self.room.clone(),
            sid: self.sid.clone(),
            reply,
        })
        .await
    }

    /// Ends the session; the worker tells the others.
    pub fn leave(mut self, reason: LeaveReason) {
        self.send_leave(reason);
    }

    /// The worker already ended this session (it sent `Ended`).
    pub fn mark_ended(&mut self) {
        self.ended = true;
    }

    fn send_leave(&mut self, reason: LeaveReason) {
        if !self.ended {
            self.ended = true;
            let _ = self.worker.send(Command::Leave {
                room: self.room.clone(),
                sid: self.sid.clone(),
                reason,
            });
        }
    }
}

impl Drop for ParticipantHandle {
    fn drop(&mut self) {
        self.send_leave(LeaveReason::Left);
    }
}
