//! A client of callgate's signaling protocol (docs/protocol.md): the
//! WebSocket at `/rtc`, spoken in the server's own message types, so a
//! client built on this crate cannot drift from the server. The load
//! generator (`callgate loadtest`), the end-to-end tests and bots use it.
//!
//! Two levels:
//! - [`Signaling`]: the WebSocket alone, for a client that brings its own
//!   WebRTC stack (the load generator's sans-I/O `rtc` peers) or needs none
//!   (presence, calls, server messages).
//! - [`Participant`]: signaling plus a publisher and a subscriber peer
//!   connection of the async `webrtc` crate, negotiated as the protocol
//!   says; received RTP goes to a [`PeerObserver`].
//!
//! ```no_run
//! # async fn run() -> Result<(), callgate_client::ClientError> {
//! use callgate_client::{ClientMessage, ServerMessage, Signaling};
//! let (mut signaling, welcome) = Signaling::join("ws://127.0.0.1:7880/rtc", "<token>").await?;
//! println!("in {} as {}", welcome.room.name, welcome.participant.sid);
//! signaling.send(&ClientMessage::Leave).await?;
//! while let Some(message) = signaling.recv().await? {
//!     if let ServerMessage::Left { reason } = message {
//!         println!("left: {}", reason.as_str());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A participant that publishes a track and counts what it receives:
//!
//! ```no_run
//! # async fn run(track: std::sync::Arc<dyn webrtc::media_stream::track_local::TrackLocal>)
//! #     -> Result<(), callgate_client::ClientError> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use callgate_client::{Event, Participant, ParticipantOptions, PeerObserver, RemoteTrack};
//!
//! #[derive(Default)]
//! struct Count(AtomicU64);
//! impl PeerObserver for Count {
//!     fn on_rtp(&self, _: &RemoteTrack, _: &rtc::rtp::Packet) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let count = Arc::new(Count::default());
//! let mut me = Participant::join(
//!     "ws://127.0.0.1:7880/rtc",
//!     "<token>",
//!     ParticipantOptions::default(),
//!     count.clone(),
//! )
//! .await?;
//! me.publish(&[track]).await?;
//! while let Some(Event::Message(message)) = me.next_event().await {
//!     println!("{message:?}; {} packets so far", count.0.load(Ordering::Relaxed));
//! }
//! # Ok(()) }
//! ```

mod error;
mod participant;
mod peer;
mod signaling;

pub use callgate_sfu::{
    ConnectionQuality, IceCandidate, LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo,
    TrackInfo, TrackKind, TransportRole,
};
pub use callgate_signaling::protocol::{
    CallRejectReason, CallRing, CallStateNotice, ClientMessage, IceServer, PROTOCOL_VERSION,
    PresenceStatus, ServerMessage, Welcome,
};
pub use error::ClientError;
pub use participant::{Event, Participant, ParticipantOptions, SdpRewrite};
pub use peer::{IgnoreMedia, Network, PeerObserver, PeerOptions, RemoteTrack, new_peer};
pub use signaling::{Receiver, Sender, Signaling};
