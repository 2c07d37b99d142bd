//! A client of callgate's signaling protocol (docs/protocol.md): the
//! WebSocket at `/rtc`, spoken in the server's own message types, so a
//! client built on this crate cannot drift from the server. The load
//! generator (`callgate loadtest`) and bots use it; the WebRTC side (the
//! `webrtc` or `rtc` crate's peer connections) stays the caller's.
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

mod error;
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
pub use signaling::{Receiver, Sender, Signaling};
