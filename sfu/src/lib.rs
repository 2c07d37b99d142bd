//! callgate's media plane: rooms, participants' transports, and RTP
//! forwarding on webrtc-rs's sans-I/O `rtc` core.
//!
//! Each media worker thread owns one UDP port and every room hashed to it;
//! a packet from a publisher is fanned out to its subscribers inside that
//! thread. One ICE-TCP port, shared, reaches the same workers: its acceptor
//! routes each connection by the worker index at the front of the ICE ufrag
//! its first STUN request names. [`Sfu`] is the handle the control plane holds.

mod allocation;
#[doc(hidden)]
pub mod bench_support;
mod bwe;
mod config;
mod consumer;
mod continuity;
mod dtls_flight;
mod early_packets;
mod endpoint;
#[doc(hidden)]
pub mod engine;
pub mod forgotten_layers;
#[doc(hidden)]
pub mod fuzz_support;
mod header_ext;
mod ice_creds;
mod ids;
mod keyframe;
mod layers;
mod load;
mod metrics;
mod nack_edit;
mod nack_limit;
mod outbox;
pub mod packet_filter;
mod participant;
mod producer;
mod quality;
mod rewriter;
mod room;
mod route;
mod sdp_check;
mod session;
mod shard;
#[cfg(test)]
mod sim_tests;
mod speaker;
mod stun;
mod superseded_nacks;
mod tcp;
mod timers;
mod transport;
mod vp8;
mod worker;

pub use config::SfuConfig;
pub use metrics::SfuMetrics;
pub use participant::ParticipantHandle;
pub use quality::ConnectionQuality;
pub use session::{
    ConnectionQualityInfo, EstimateSource, IceCandidate, JoinRequest, Joined, LayerState,
    LayerStats, LeaveReason, ParticipantEvent, ParticipantInfo, ParticipantStats,
    ParticipantUpdate, PublishedStats, ReconnectReason, Resumed, RoomInfo, RoomOptions, SfuError,
    SpeakerInfo, SubscriptionSettings, SubscriptionStats, TrackInfo, TrackKind, TrackSelector,
    TransportRole,
};

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;

use tokio::sync::oneshot;

use worker::{Command, WorkerHandle};

/// The running media plane: its worker threads and their sockets.
pub struct Sfu {
    workers: Vec<WorkerHandle>,
    tcp_addr: SocketAddr,
    stop_acceptor: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Sfu {
    /// Binds the ICE-TCP port and one UDP port per worker, and starts the
    /// worker threads and the ICE-TCP acceptor.
    pub fn start(config: SfuConfig, metrics: &SfuMetrics) -> io::Result<Sfu> {
        let count = config.workers.max(1);
        if count > ids::MAX_WORKERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {} media workers", ids::MAX_WORKERS),
            ));
        }
        let listener = tcp::bind(&config)?;
        let tcp_addr = SocketAddr::new(config.advertise_ip, listener.local_addr()?.port());
        let mut workers = (0..count)
            .map(|i| {
                worker::spawn(
                    i,
                    &config,
                    tcp_addr,
                    metrics.for_worker(i),
                    metrics.tcp_for_worker(i),
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut threads: Vec<_> = workers.iter_mut().filter_map(|w| w.thread.take()).collect();
        let senders = workers.iter().map(|w| w.tx.clone()).collect();
        let started = tcp::spawn_acceptor(listener, senders, metrics.clone(), &config);
        let (acceptor, stop) = match started {
            Ok(started) => started,
            Err(e) => {
                for w in &workers {
                    let _ = w.tx.send(Command::Shutdown(LeaveReason::ServerShutdown));
                }
                return Err(e);
            }
        };
        threads.push(acceptor);
        Ok(Sfu {
            workers,
            tcp_addr,
            stop_acceptor: std::sync::Mutex::new(Some(stop)),
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// The advertised media address of every worker.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local_addr).collect()
    }

    /// The advertised ICE-TCP address (passive candidates), shared by every worker.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    fn worker_for(&self, room: &str) -> &WorkerHandle {
        let mut h = DefaultHasher::new();
        room.hash(&mut h);
        &self.workers[(h.finish() % self.workers.len() as u64) as usize]
    }

    async fn ask<T>(
        &self,
        room: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.worker_for(room)
            .tx
            .send(make(tx))
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Puts a participant in a room (opening the room if needed).
    pub async fn join(&self, req: JoinRequest) -> Result<(ParticipantHandle, Joined), SfuError> {
        let room = req.room.clone();
        let worker = self.worker_for(&room).tx.clone();
        let (joined, sid) = self.ask(&room, |tx| Command::Join(req, tx)).await?;
        Ok((ParticipantHandle::new(worker, room, sid), joined))
    }

    pub async fn list_rooms(&self) -> Vec<RoomInfo> {
        let mut rooms = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.tx.send(Command::ListRooms(tx)).is_ok()
                && let Ok(list) = rx.await
            {
                rooms.extend(list);
            }
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    pub async fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, SfuError> {
        self.ask(room, |tx| Command::ListParticipants(room.to_owned(), tx))
            .await
    }

    /// What the media plane knows of `identity`'s media in `room` now.
    pub async fn participant_stats(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<ParticipantStats, SfuError> {
        self.ask(room, |reply| Command::ParticipantStats {
            room: room.to_owned(),
            identity: identity.to_owned(),
            reply,
        })
        .await
    }

    /// Ends the session of `identity` in `room` (`removed` by the server
    /// API, `insufficient_balance` by metering).
    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        self.ask(room, |reply| Command::RemoveParticipant {
            room: room.to_owned(),
            identity: identity.to_owned(),
            reason,
            reply,
        })
        .await
    }

    /// Ends the session `sid` in `room` (metering: a paid session that
    /// could not start). Nothing happens if it has ended already.
    pub fn end_session(&self, room: &str, sid: &str, reason: LeaveReason) {
        let _ = self.worker_for(room).tx.send(Command::Leave {
            room: room.to_owned(),
            sid: sid.to_owned(),
            reason,
        });
    }

    /// Holds or releases the media of session `sid` in `room` (see
    /// `JoinRequest::media_held`). Answers once the worker has applied it:
    /// after a release returns, the next packet is forwarded.
    pub async fn hold_media(&self, room: &str, sid: &str, held: bool) -> Result<(), SfuError> {
        self.ask(room, |reply| Command::HoldMedia {
            room: room.to_owned(),
            sid: sid.to_owned(),
            held,
            reply,
        })
        .await
    }

    /// Opens a room ahead of its first join with its own limits and
    /// metadata (`RoomExists` if it is open already).
    pub async fn create_room(&self, options: RoomOptions) -> Result<RoomInfo, SfuError> {
        let room = options.name.clone();
        self.ask(&room, |tx| Command::CreateRoom(options, tx)).await
    }

    /// Replaces an open room's metadata; everyone in it gets `room_updated`.
    pub async fn update_room_metadata(
        &self,
        room: &str,
        metadata: String,
    ) -> Result<RoomInfo, SfuError> {
        self.ask(room, |reply| Command::UpdateRoom {
            room: room.to_owned(),
            metadata,
            reply,
        })
        .await
    }

    /// Changes a participant in place: its grants, name, metadata,
    /// attributes (docs/operations.md). Everyone in the room gets
    /// `participant_updated`.
    pub async fn update_participant(
        &self,
        room: &str,
        identity: &str,
        update: ParticipantUpdate,
    ) -> Result<ParticipantInfo, SfuError> {
        self.ask(room, |reply| Command::UpdateParticipant {
            room: room.to_owned(),
            identity: identity.to_owned(),
            update,
            reply,
        })
        .await
    }

    /// A moderator mutes (`muted`) or unmutes the tracks of `identity`
    /// that `which` selects: forwarding stops at once, and everyone gets
    /// `track_muted` with `by_moderator`. Unmuting is refused unless the
    /// room allows it. Returns the tracks' sids.
    pub async fn moderate_mute(
        &self,
        room: &str,
        identity: &str,
        which: TrackSelector,
        muted: bool,
    ) -> Result<Vec<String>, SfuError> {
        self.ask(room, |reply| Command::ModerateMute {
            room: room.to_owned(),
            identity: identity.to_owned(),
            which,
            muted,
            reply,
        })
        .await
    }

    /// Ends every session in `room`, and the room.
    pub async fn close_room(&self, room: &str, reason: LeaveReason) -> Result<(), SfuError> {
        self.ask(room, |tx| Command::CloseRoom(room.to_owned(), reason, tx))
            .await
    }

    /// Tells every participant the server is going away, closes every
    /// transport, and waits for the worker threads to end.
    /// Blocks: call it from a blocking context.
    pub fn shutdown(&self) {
        self.shutdown_with(LeaveReason::ServerShutdown);
    }

    /// As [`Sfu::shutdown`], with the sessions still running ended for
    /// `reason` (`node_drained` when a drained cluster node stops).
    pub fn shutdown_with(&self, reason: LeaveReason) {
        // No new connections are handed over while the workers close.
        if let Some(stop) = self
            .stop_acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        for w in &self.workers {
            let _ = w.tx.send(Command::Shutdown(reason));
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        self.shutdown();
    }
}
