//! What the control plane exchanges with the media plane about one
//! participant: the join request, the events pushed to its client, and the
//! room snapshots the server API reads.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Which of a participant's two transports a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportRole {
    /// Client offers, carries the participant's own tracks to the server.
    Publisher,
    /// Server offers, carries everybody else's tracks to the participant.
    Subscriber,
}

impl TransportRole {
    /// As the protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportRole::Publisher => "publisher",
            TransportRole::Subscriber => "subscriber",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrackInfo {
    pub sid: String,
    pub kind: TrackKind,
    pub muted: bool,
    /// The m-line of the publisher's own offer this track came in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    pub codec: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ParticipantInfo {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    /// May send `data` messages (signaling relays them; the media plane
    /// only keeps the grant so that changes reach the participant).
    pub can_publish_data: bool,
    pub tracks: Vec<TrackInfo>,
    /// Free-form, set by the server API (empty when none).
    pub metadata: String,
    /// Small string map: by the server API, or the participant itself
    /// (`attributes.hand = "raised"`).
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A change to a participant (`Sfu::update_participant`); `None` leaves a
/// field as it is. `attributes` are merged in: an empty value removes
/// its key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantUpdate {
    pub can_publish: Option<bool>,
    pub can_subscribe: Option<bool>,
    pub can_publish_data: Option<bool>,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RoomInfo {
    pub name: String,
    pub sid: String,
    pub max_participants: usize,
    pub num_participants: usize,
    pub num_tracks: usize,
    /// How long the room stays open with nobody in it, in seconds.
    pub empty_timeout_s: u64,
    /// The app's free-form metadata (title, cover, topic, …), as set by
    /// the server API; empty when none.
    pub metadata: String,
}

/// A room made ahead of its first join (`Sfu::create_room`): its limits
/// and metadata; `None` takes the node's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomOptions {
    pub name: String,
    pub max_participants: Option<usize>,
    pub empty_timeout: Option<std::time::Duration>,
    pub metadata: String,
    /// Moderators may unmute a participant's track (off by default: a
    /// privacy rule, only the publisher unmutes itself).
    pub allow_remote_unmute: bool,
}

/// Which of a participant's tracks a moderator mutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackSelector {
    Sid(String),
    /// Every track of this kind.
    Kind(TrackKind),
}

/// Why a participant's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    Disconnected,
    Removed,
    RoomClosed,
    DuplicateIdentity,
    ServerShutdown,
    /// The payer's wallet ran dry (metering cut the call).
    InsufficientBalance,
    /// Metering could not go on charging for the call.
    BillingStopped,
    /// The billing terms the participant's call needs were refused by the
    /// meter, so its paid session could not start.
    BillingInvalid,
    /// It was reconnecting (docs/protocol.md, "Staying connected") for
    /// longer than the grace.
    ConnectionLost,
    /// A transport's DTLS handshake did not complete in time after its ICE
    /// connected; the client joins again.
    DtlsTimeout,
    /// Handling one of its transports failed inside the server (a bug,
    /// caught and counted); the client joins again.
    InternalError,
    /// Its node of a cluster drained and stopped with the session still
    /// running; the client joins again, which places the room on another
    /// node.
    NodeDrained,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Removed => "removed",
            LeaveReason::RoomClosed => "room_closed",
            LeaveReason::DuplicateIdentity => "duplicate_identity",
            LeaveReason::ServerShutdown => "server_shutdown",
            LeaveReason::InsufficientBalance => "insufficient_balance",
            LeaveReason::BillingStopped => "billing_stopped",
            LeaveReason::BillingInvalid => "billing_invalid",
            LeaveReason::ConnectionLost => "connection_lost",
            LeaveReason::DtlsTimeout => "dtls_timeout",
            LeaveReason::InternalError => "internal_error",
            LeaveReason::NodeDrained => "node_drained",
        }
    }
}

/// Everything the media plane tells one participant's client, serialized
/// as the signaling message of the same name (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParticipantEvent {
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_sid: String,
        identity: String,
        reason: LeaveReason,
    },
    TrackPublished {
        participant_sid: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_sid: String,
        track_sid: String,
    },
    TrackMuted {
        participant_sid: String,
        track_sid: String,
        muted: bool,
        /// A moderator muted it (server API or a `room_admin`); absent
        /// when the publisher did.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_moderator: bool,
    },
    SubscribeOffer {
        sdp: String,
    },
    /// To the others: the participant's connection is lost; it may resume.
    ParticipantReconnecting {
        participant_sid: String,
        identity: String,
    },
    /// To the others: the participant is back after `ParticipantReconnecting`.
    ParticipantResumed {
        participant_sid: String,
        identity: String,
    },
    /// To the participant: nothing has arrived on its transports for the
    /// silence window while its signaling is attached; restart ICE.
    Reconnecting {
        reason: ReconnectReason,
        /// How long nothing had arrived when this was sent: the control
        /// plane dates the loss (billing stops its clock from then).
        #[serde(skip)]
        silent_for: std::time::Duration,
    },
    /// The participant is back after being reconnecting (its own
    /// `Reconnecting`, or its signaling detached). For the control plane;
    /// not a message.
    #[serde(skip)]
    Resumed,
    /// The participant's media (a transport's DTLS) connected for the first
    /// time. For the control plane (billing starts on it); not a message.
    #[serde(skip)]
    MediaConnected,
    /// The room's metadata changed; to everyone in it.
    RoomUpdated {
        room: RoomInfo,
    },
    /// A participant's grants, name, metadata or attributes changed; to
    /// everyone in the room, itself included.
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// Who is speaking now, loudest first (empty: nobody); to everyone in
    /// the room, when the set, the order or a level changes.
    SpeakersChanged {
        speakers: Vec<SpeakerInfo>,
    },
    /// Participants whose connection quality changed; to the participant
    /// itself and to everyone subscribed to it.
    ConnectionQuality {
        updates: Vec<ConnectionQualityInfo>,
    },
    /// To a publisher: which simulcast layers of its track someone
    /// receives; the others may be paused at the encoder (dynacast).
    SubscribedLayers {
        track_sid: String,
        layers: Vec<LayerState>,
    },
    /// The session is over; nothing follows.
    #[serde(rename = "left")]
    Ended {
        reason: LeaveReason,
    },
}

/// Where a subscriber's downlink estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EstimateSource {
    /// The SFU's own estimator on the subscriber's transport-wide
    /// congestion control feedback.
    SendSide,
    /// The subscriber's browser's receive-side estimate (REMB).
    Remb,
}

impl EstimateSource {
    /// Its name in metrics labels and the stats API.
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateSource::SendSide => "send_side",
            EstimateSource::Remb => "remb",
        }
    }
}

/// What the media plane knows of one participant's media now (the server
/// API's participant stats).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParticipantStats {
    pub sid: String,
    pub identity: String,
    /// Its last judged connection quality; `None` before the first window.
    pub connection_quality: Option<crate::quality::ConnectionQuality>,
    /// What its downlink takes, bits per second: the SFU's send-side
    /// estimate, or what its browser said (REMB); `None` before either.
    pub downlink_estimate_bps: Option<u64>,
    /// Where `downlink_estimate_bps` comes from.
    pub downlink_estimate_source: Option<EstimateSource>,
    /// The tracks it receives.
    pub subscriptions: Vec<SubscriptionStats>,
    /// The tracks it publishes.
    pub published: Vec<PublishedStats>,
}

/// One track a participant receives.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionStats {
    pub track_sid: String,
    pub kind: TrackKind,
    /// Its share of the participant's downlink estimate, bits per second
    /// (0: paused for want of bandwidth); `None` while there is no estimate.
    pub share_bps: Option<u64>,
    /// The simulcast layer it gets (its rid); `None` for a single stream.
    pub layer: Option<String>,
    pub disabled: bool,
    pub priority: u8,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
}

/// One track a participant publishes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PublishedStats {
    pub track_sid: String,
    pub kind: TrackKind,
    pub muted: bool,
    /// What it was last told to stay under (REMB), bits per second.
    pub remb_bps: Option<u64>,
    /// Its simulcast layers, lowest first (empty: a single stream).
    pub layers: Vec<LayerStats>,
}

/// One simulcast layer as received.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LayerStats {
    pub rid: String,
    pub bitrate_bps: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Someone receives it (what the publisher was last told).
    pub subscribed: bool,
}

/// One active speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerInfo {
    pub participant_sid: String,
    pub track_sid: String,
    /// Loudness, 0.0 (silent) to 1.0 (full scale), smoothed.
    pub level: f32,
}

/// One participant's connection quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionQualityInfo {
    pub participant_sid: String,
    pub quality: crate::quality::ConnectionQuality,
}

/// One simulcast layer of a published track, and whether it is wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    /// The layer's RTP stream id: `q`, `h` or `f`.
    pub rid: String,
    pub active: bool,
}

/// What a subscriber wants of one track it receives (adaptive stream): the
/// server picks the highest layer no larger than the size asked for that
/// fits the subscriber's bandwidth, and sends nothing while `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionSettings {
    /// Send nothing of this track (its element is hidden or off screen).
    pub disabled: bool,
    /// The size it is shown at, in pixels; `None`: as large as there is.
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    /// Higher is served first when bandwidth is short (0–255; default 128).
    pub priority: u8,
}

impl SubscriptionSettings {
    /// The largest picture wanted, (width, height); `None`: any.
    pub(crate) fn max_size(&self) -> Option<(u32, u32)> {
        match (self.max_width, self.max_height) {
            (None, None) => None,
            (w, h) => Some((w.unwrap_or(u32::MAX), h.unwrap_or(u32::MAX))),
        }
    }
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            disabled: false,
            max_width: None,
            max_height: None,
            priority: 128,
        }
    }
}

/// Why the server says a participant is reconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectReason {
    /// Nothing arrived on its transports for the silence window.
    MediaSilent,
}

/// What a resumed participant's client learns: the room as it is now.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
}

/// A participant asking to enter a room, after its token was verified.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// Forward nothing from or to this participant until the control plane
    /// releases it (`Sfu::hold_media`): a paid call's media waits for the
    /// ledger's first hold.
    pub media_held: bool,
}

/// What a successful join hands back to the control plane.
#[derive(Debug)]
pub struct Joined {
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
    pub events: mpsc::UnboundedReceiver<ParticipantEvent>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    #[error("room {0} is full")]
    RoomFull(String),
    #[error("the room's media worker is overloaded")]
    WorkerOverloaded,
    #[error("no such room")]
    RoomNotFound,
    #[error("the room exists already")]
    RoomExists,
    #[error("this room does not let moderators unmute a participant")]
    RemoteUnmuteRefused,
    #[error("no such participant")]
    ParticipantNotFound,
    #[error("no such track")]
    TrackNotFound,
    #[error("this participant may not publish")]
    PublishNotAllowed,
    #[error("this participant may not subscribe")]
    SubscribeNotAllowed,
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("no subscribe offer is waiting for an answer")]
    NoPendingOffer,
    #[error("media worker stopped")]
    WorkerGone,
    #[error("media engine failed: {0}")]
    Internal(String),
}

/// A trickled ICE candidate, as the browser's `RTCIceCandidateInit` has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
}
