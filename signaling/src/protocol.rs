//! Signaling messages, version 1 (docs/protocol.md).

use callgate_sfu::{
    IceCandidate, LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo, TransportRole,
};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame a client may send; larger ones close the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest SDP accepted in one message.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Longest track sid accepted in `update_subscription` (the server's are
/// 15 bytes: `TR_` and 12 alphanumerics).
pub const MAX_SID_BYTES: usize = 64;
/// Largest `width` or `height` accepted in `update_subscription`, in pixels.
pub const MAX_VIDEO_DIMENSION: u32 = 16384;
/// Longest call id accepted (the server's are 35 bytes: `CA_` and 32 hex).
pub const MAX_CALL_ID_BYTES: usize = 64;
/// Most identities one connection watches (`presence_watch`).
pub const MAX_WATCHED: usize = 100;
/// Longest identity accepted in `presence_watch`.
pub const MAX_IDENTITY_BYTES: usize = 256;

/// Largest `payload` of a `data` message, in bytes.
pub const MAX_DATA_PAYLOAD_BYTES: usize = 16 * 1024;
/// Longest `topic` of a `data` message.
pub const MAX_DATA_TOPIC_BYTES: usize = 128;
/// Most `destinations` of a `data` message.
pub const MAX_DATA_DESTINATIONS: usize = 64;

fn yes() -> bool {
    true
}

/// Why a callee turns a call down (`call_reject`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallRejectReason {
    #[default]
    Decline,
    Busy,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join {
        token: String,
        #[serde(default)]
        protocol: Option<u32>,
    },
    PublishOffer {
        sdp: String,
    },
    SubscribeAnswer {
        sdp: String,
    },
    Candidate {
        target: TransportRole,
        candidate: IceCandidate,
    },
    Mute {
        track_sid: String,
        muted: bool,
    },
    Leave,
    /// First message of a presence connection: a device outside any room
    /// (docs/calls.md).
    Connect {
        token: String,
        #[serde(default)]
        protocol: Option<u32>,
    },
    CallAccept {
        call_id: String,
    },
    CallReject {
        call_id: String,
        #[serde(default)]
        reason: CallRejectReason,
    },
    CallCancel {
        call_id: String,
    },
    /// Replaces the connection's watch list.
    PresenceWatch {
        identities: Vec<String>,
    },
    /// A `room_admin` changes another participant of its room.
    UpdateParticipant {
        identity: String,
        update: crate::moderation::ParticipantChange,
    },
    /// A `room_admin` mutes (or, where the room allows, unmutes) another
    /// participant's tracks.
    MuteParticipant {
        identity: String,
        mute: crate::moderation::MuteChange,
    },
    /// A `room_admin` removes another participant from its room.
    RemoveParticipant {
        identity: String,
    },
    /// A participant sets its own attributes (`hand = "raised"`): merged
    /// in, an empty value removes its key.
    SetAttributes {
        attributes: std::collections::BTreeMap<String, String>,
    },
    /// A data message to the room's other participants (chat, reactions).
    Data {
        #[serde(default)]
        topic: Option<String>,
        payload: String,
        /// Kept for a receiver that is reconnecting (default); `false`:
        /// dropped for it instead.
        #[serde(default = "yes")]
        reliable: bool,
        /// Only these identities; all others when empty.
        #[serde(default)]
        destinations: Vec<String>,
    },
    /// First message of a new WebSocket taking a session back.
    Resume {
        participant_sid: String,
        secret: String,
        #[serde(default)]
        protocol: Option<u32>,
    },
    /// A subscribe offer that restarts ICE, please.
    IceRestart,
    /// What the client wants of a track it receives (adaptive stream).
    /// Replaces the previous settings of that track as a whole: a field
    /// left out takes its default.
    UpdateSubscription {
        track_sid: String,
        #[serde(default)]
        disabled: bool,
        /// The size the track is shown at, in pixels.
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        /// 0–255; the server's default (128) when left out.
        #[serde(default)]
        priority: Option<u8>,
    },
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "resume",
    "ice_restart",
    "publish_offer",
    "subscribe_answer",
    "candidate",
    "mute",
    "update_subscription",
    "leave",
    "connect",
    "call_accept",
    "call_reject",
    "call_cancel",
    "presence_watch",
    "data",
    "update_participant",
    "mute_participant",
    "remove_participant",
    "set_attributes",
];

/// Why a client frame could not be read; both keep the connection open.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Malformed(String),
    Unknown(String),
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ParseError::Malformed(e.to_string()))?;
        match value.get("type").and_then(|t| t.as_str()) {
            None => return Err(ParseError::Malformed("missing string field `type`".into())),
            Some(t) if !CLIENT_TYPES.contains(&t) => return Err(ParseError::Unknown(t.into())),
            Some(_) => {}
        }
        let message: ClientMessage =
            serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))?;
        match &message {
            ClientMessage::PublishOffer { sdp } | ClientMessage::SubscribeAnswer { sdp }
                if sdp.len() > MAX_SDP_BYTES =>
            {
                Err(ParseError::Malformed(format!(
                    "sdp is longer than {MAX_SDP_BYTES} bytes"
                )))
            }
            ClientMessage::UpdateSubscription {
                track_sid,
                width,
                height,
                ..
            } => {
                if track_sid.is_empty() {
                    return Err(ParseError::Malformed("track_sid is empty".into()));
                }
                if track_sid.len() > MAX_SID_BYTES {
                    return Err(ParseError::Malformed(format!(
                        "track_sid is longer than {MAX_SID_BYTES} bytes"
                    )));
                }
                for (name, value) in [("width", width), ("height", height)] {
                    if let Some(v) = value
                        && !(1..=MAX_VIDEO_DIMENSION).contains(v)
                    {
                        return Err(ParseError::Malformed(format!(
                            "{name} {v} is outside 1..={MAX_VIDEO_DIMENSION}"
                        )));
                    }
                }
                Ok(message)
            }
            ClientMessage::CallAccept { call_id }
            | ClientMessage::CallReject { call_id, .. }
            | ClientMessage::CallCancel { call_id }
                if call_id.is_empty() || call_id.len() > MAX_CALL_ID_BYTES =>
            {
                Err(ParseError::Malformed(format!(
                    "call_id must be 1 to {MAX_CALL_ID_BYTES} bytes"
                )))
            }
            ClientMessage::Data {
                topic,
                payload,
                destinations,
                ..
            } => {
                if payload.len() > MAX_DATA_PAYLOAD_BYTES {
                    return Err(ParseError::Malformed(format!(
                        "payload is longer than {MAX_DATA_PAYLOAD_BYTES} bytes"
                    )));
                }
                if topic
                    .as_ref()
                    .is_some_and(|t| t.len() > MAX_DATA_TOPIC_BYTES)
                {
                    return Err(ParseError::Malformed(format!(
                        "topic is longer than {MAX_DATA_TOPIC_BYTES} bytes"
                    )));
                }
                if destinations.len() > MAX_DATA_DESTINATIONS
                    || destinations
                        .iter()
                        .any(|d| d.is_empty() || d.len() > MAX_IDENTITY_BYTES)
                {
                    return Err(ParseError::Malformed(format!(
                        "destinations are at most {MAX_DATA_DESTINATIONS} identities of 1 to {MAX_IDENTITY_BYTES} bytes"
                    )));
                }
                Ok(message)
            }
            ClientMessage::UpdateParticipant { identity, .. }
            | ClientMessage::MuteParticipant { identity, .. }
            | ClientMessage::RemoveParticipant { identity }
                if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES =>
            {
                Err(ParseError::Malformed(format!(
                    "identity is 1 to {MAX_IDENTITY_BYTES} bytes"
                )))
            }
            ClientMessage::SetAttributes { attributes } => {
                crate::moderation::check_attributes(attributes).map_err(ParseError::Malformed)?;
                Ok(message)
            }
            ClientMessage::PresenceWatch { identities } => {
                if identities.len() > MAX_WATCHED {
                    return Err(ParseError::Malformed(format!(
                        "a connection watches at most {MAX_WATCHED} identities"
                    )));
                }
                if identities
                    .iter()
                    .any(|i| i.is_empty() || i.len() > MAX_IDENTITY_BYTES)
                {
                    return Err(ParseError::Malformed(format!(
                        "an identity is 1 to {MAX_IDENTITY_BYTES} bytes"
                    )));
                }
                Ok(message)
            }
            _ => Ok(message),
        }
    }
}

/// A callee's ring as `call_state` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalleeRing {
    pub identity: String,
    /// `ringing`, `accepted`, `rejected`, `busy`, `missed` or `cancelled`.
    pub ring: String,
}

/// `call_ring`: a callee's device rings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRing {
    pub call_id: String,
    pub room: String,
    pub caller: String,
    pub caller_name: String,
    /// `audio` or `video`.
    pub call_type: String,
    /// This callee's access token for the call's room.
    pub token: String,
    pub ring_timeout_s: u64,
    pub ring_ends_at_ms: i64,
}

/// `call_state`: where a call stands, to every member's devices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallStateNotice {
    pub call_id: String,
    /// `ringing`, `accepted`, `rejected`, `cancelled`, `missed` or `ended`.
    pub state: String,
    /// The member whose action changed it; none for a timeout.
    pub by: Option<String>,
    /// Why it ended, once it has.
    pub end_reason: Option<String>,
    pub callees: Vec<CalleeRing>,
}

/// An identity's presence (docs/calls.md, "Presence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Busy,
    Offline,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What `joined` and `resumed` tell a participant: the room as it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Welcome {
    pub protocol: u32,
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    /// Everybody else in the room, with their tracks.
    pub participants: Vec<ParticipantInfo>,
    pub ice_servers: Vec<IceServer>,
    /// Takes this session back with `resume` on a new WebSocket.
    pub resume_secret: String,
    /// How long the server keeps the session for that.
    pub reconnect_grace_s: u64,
}

/// What the server sends: one definition for the server, which writes
/// it, and for clients, tests and tools, which read it (`Deserialize`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined(Welcome),
    /// The answer to `resume`: the same fields as `joined`, as they are now.
    Resumed(Welcome),
    PublishAnswer {
        sdp: String,
    },
    /// To the payer and payee of a billed call whenever the time the payer's
    /// wallet still covers changes.
    Balance {
        seconds_left: u64,
    },
    /// To the payer and payee at the configured thresholds before the cut.
    BalanceWarning {
        seconds_left: u64,
    },
    Left {
        reason: LeaveReason,
    },
    /// A refused message or input; `call_id` names the call a refused
    /// call input was about.
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
    /// The answer to `connect`.
    Connected {
        protocol: u32,
        identity: String,
    },
    CallRing(CallRing),
    CallState(CallStateNotice),
    Presence {
        identity: String,
        status: PresenceStatus,
    },
    /// A data message from another participant of the room.
    Data {
        /// The sender's identity and session.
        from: String,
        from_sid: String,
        topic: Option<String>,
        payload: String,
        reliable: bool,
    },
    /// Events from the media plane carry their own `type`.
    #[serde(untagged)]
    Event(ParticipantEvent),
}

impl ServerMessage {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
            call_id: None,
        }
    }

    /// A refused call input, naming its call.
    pub fn call_error(code: &str, message: impl Into<String>, call_id: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
            call_id: Some(call_id.into()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!(r#"{{"type":"error","code":"internal","message":"{e}"}}"#))
    }
}

impl From<ParticipantEvent> for ServerMessage {
    fn from(event: ParticipantEvent) -> Self {
        ServerMessage::Event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"join","token":"t","protocol":1}"#),
            Ok(ClientMessage::Join {
                token: "t".into(),
                protocol: Some(1)
            })
        );
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"candidate","target":"subscriber","candidate":{"candidate":"c","sdp_mid":"0","sdp_m_line_index":0}}"#
            ),
            Ok(ClientMessage::Candidate {
                target: TransportRole::Subscriber,
                candidate: IceCandidate {
                    candidate: "c".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0)
                }
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"leave","extra":true}"#),
            Ok(ClientMessage::Leave)
        );
    }

    #[test]
    fn tells_malformed_from_unknown() {
        assert!(matches!(
            ClientMessage::parse("nope"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            ClientMessage::parse("{}"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"mute","track_sid":1}"#),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"dance"}"#),
            Err(ParseError::Unknown("dance".into()))
        );
        let big = format!(
            r#"{{"type":"publish_offer","sdp":"{}"}}"#,
            "a".repeat(MAX_SDP_BYTES + 1)
        );
        assert!(matches!(
            ClientMessage::parse(&big),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn update_subscription_parses_every_field_and_defaults_the_rest() {
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"update_subscription","track_sid":"TR_a81c","disabled":true,"width":1280,"height":720,"priority":200}"#
            ),
            Ok(ClientMessage::UpdateSubscription {
                track_sid: "TR_a81c".into(),
                disabled: true,
                width: Some(1280),
                height: Some(720),
                priority: Some(200),
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"update_subscription","track_sid":"TR_a81c"}"#),
            Ok(ClientMessage::UpdateSubscription {
                track_sid: "TR_a81c".into(),
                disabled: false,
                width: None,
                height: None,
                priority: None,
            })
        );
        // As for every message (docs/protocol.md): unknown fields are ignored.
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"update_subscription","track_sid":"TR_a81c","max_width":5,"extra":true}"#
            ),
            Ok(ClientMessage::UpdateSubscription {
                track_sid: "TR_a81c".into(),
                disabled: false,
                width: None,
                height: None,
                priority: None,
            })
        );
    }

    #[test]
    fn update_subscription_accepts_the_bounds_of_every_range() {
        let sid = "T".repeat(MAX_SID_BYTES);
        for (width, height, priority) in
            [(1, 1, 0), (MAX_VIDEO_DIMENSION, MAX_VIDEO_DIMENSION, 255)]
        {
            let text = serde_json::json!({
                "type": "update_subscription",
                "track_sid": sid,
                "width": width,
                "height": height,
                "priority": priority,
            })
            .to_string();
            assert_eq!(
                ClientMessage::parse(&text),
                Ok(ClientMessage::UpdateSubscription {
                    track_sid: sid.clone(),
                    disabled: false,
                    width: Some(width),
                    height: Some(height),
                    priority: Some(priority),
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn update_subscription_out_of_range_or_mistyped_is_malformed() {
        let long_sid = format!(
            r#"{{"type":"update_subscription","track_sid":"{}"}}"#,
            "T".repeat(MAX_SID_BYTES + 1)
        );
        let cases = [
            r#"{"type":"update_subscription"}"#,
            r#"{"type":"update_subscription","track_sid":""}"#,
            r#"{"type":"update_subscription","track_sid":5}"#,
            long_sid.as_str(),
            r#"{"type":"update_subscription","track_sid":"TR_1","width":0}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","height":0}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","width":16385}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","height":16385}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","width":-1}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","width":640.5}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","width":"640"}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","priority":256}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","priority":-1}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","disabled":"yes"}"#,
            r#"{"type":"update_subscription","track_sid":"TR_1","disabled":null}"#,
        ];
        for text in cases {
            assert!(
                matches!(ClientMessage::parse(text), Err(ParseError::Malformed(_))),
                "{text:.80}: {:?}",
                ClientMessage::parse(text)
            );
        }
    }

    #[test]
    fn call_and_presence_messages_parse_as_documented() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"connect","token":"t","protocol":1}"#),
            Ok(ClientMessage::Connect {
                token: "t".into(),
                protocol: Some(1)
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"call_accept","call_id":"CA_1"}"#),
            Ok(ClientMessage::CallAccept {
                call_id: "CA_1".into()
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"call_reject","call_id":"CA_1"}"#),
            Ok(ClientMessage::CallReject {
                call_id: "CA_1".into(),
                reason: CallRejectReason::Decline
            }),
            "decline when no reason is given"
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"call_reject","call_id":"CA_1","reason":"busy"}"#),
            Ok(ClientMessage::CallReject {
                call_id: "CA_1".into(),
                reason: CallRejectReason::Busy
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"call_cancel","call_id":"CA_1"}"#),
            Ok(ClientMessage::CallCancel {
                call_id: "CA_1".into()
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"presence_watch","identities":["a","b"]}"#),
            Ok(ClientMessage::PresenceWatch {
                identities: vec!["a".into(), "b".into()]
            })
        );
    }

    #[test]
    fn call_and_presence_messages_out_of_bounds_are_malformed() {
        let long_id = format!(
            r#"{{"type":"call_accept","call_id":"{}"}}"#,
            "C".repeat(MAX_CALL_ID_BYTES + 1)
        );
        let many = serde_json::json!({
            "type": "presence_watch",
            "identities": vec!["x"; MAX_WATCHED + 1],
        })
        .to_string();
        let long_identity = serde_json::json!({
            "type": "presence_watch",
            "identities": ["x".repeat(MAX_IDENTITY_BYTES + 1)],
        })
        .to_string();
        for text in [
            r#"{"type":"call_accept"}"#,
            r#"{"type":"call_accept","call_id":""}"#,
            long_id.as_str(),
            r#"{"type":"call_reject","call_id":"CA_1","reason":"meh"}"#,
            r#"{"type":"call_cancel","call_id":7}"#,
            r#"{"type":"presence_watch","identities":[""]}"#,
            r#"{"type":"presence_watch"}"#,
            many.as_str(),
            long_identity.as_str(),
        ] {
            assert!(
                matches!(ClientMessage::parse(text), Err(ParseError::Malformed(_))),
                "{text:.80}: {:?}",
                ClientMessage::parse(text)
            );
        }
        // At the bound is fine.
        let full = serde_json::json!({
            "type": "presence_watch",
            "identities": vec!["x"; MAX_WATCHED],
        })
        .to_string();
        assert!(ClientMessage::parse(&full).is_ok());
    }

    #[test]
    fn call_messages_serialize_as_documented() {
        let state = ServerMessage::CallState(CallStateNotice {
            call_id: "CA_1".into(),
            state: "accepted".into(),
            by: Some("host1".into()),
            end_reason: None,
            callees: vec![CalleeRing {
                identity: "host1".into(),
                ring: "accepted".into(),
            }],
        });
        assert_eq!(
            state.to_json(),
            r#"{"type":"call_state","call_id":"CA_1","state":"accepted","by":"host1","end_reason":null,"callees":[{"identity":"host1","ring":"accepted"}]}"#
        );
        let refused = ServerMessage::call_error("call_ended", "the call has ended", "CA_1");
        assert_eq!(
            refused.to_json(),
            r#"{"type":"error","code":"call_ended","message":"the call has ended","call_id":"CA_1"}"#
        );
        let presence = ServerMessage::Presence {
            identity: "host1".into(),
            status: PresenceStatus::Busy,
        };
        assert_eq!(
            presence.to_json(),
            r#"{"type":"presence","identity":"host1","status":"busy"}"#
        );
    }

    #[test]
    fn media_plane_events_serialize_as_documented() {
        let speakers = ServerMessage::from(ParticipantEvent::SpeakersChanged {
            speakers: vec![callgate_sfu::SpeakerInfo {
                participant_sid: "PA_1".into(),
                track_sid: "TR_1".into(),
                level: 0.5,
            }],
        });
        assert_eq!(
            speakers.to_json(),
            r#"{"type":"speakers_changed","speakers":[{"participant_sid":"PA_1","track_sid":"TR_1","level":0.5}]}"#
        );
        let quality = ServerMessage::from(ParticipantEvent::ConnectionQuality {
            updates: vec![callgate_sfu::ConnectionQualityInfo {
                participant_sid: "PA_1".into(),
                quality: callgate_sfu::ConnectionQuality::Poor,
            }],
        });
        assert_eq!(
            quality.to_json(),
            r#"{"type":"connection_quality","updates":[{"participant_sid":"PA_1","quality":"poor"}]}"#
        );
        let layers = ServerMessage::from(ParticipantEvent::SubscribedLayers {
            track_sid: "TR_1".into(),
            layers: vec![
                callgate_sfu::LayerState {
                    rid: "q".into(),
                    active: true,
                },
                callgate_sfu::LayerState {
                    rid: "f".into(),
                    active: false,
                },
            ],
        });
        assert_eq!(
            layers.to_json(),
            r#"{"type":"subscribed_layers","track_sid":"TR_1","layers":[{"rid":"q","active":true},{"rid":"f","active":false}]}"#
        );
    }

    #[test]
    fn server_messages_carry_their_type() {
        let json = ServerMessage::Left {
            reason: LeaveReason::Removed,
        }
        .to_json();
        assert_eq!(json, r#"{"type":"left","reason":"removed"}"#);
        let event = ServerMessage::from(ParticipantEvent::TrackMuted {
            participant_sid: "PA_1".into(),
            track_sid: "TR_1".into(),
            muted: true,
            by_moderator: false,
        });
        assert_eq!(
            event.to_json(),
            r#"{"type":"track_muted","participant_sid":"PA_1","track_sid":"TR_1","muted":true}"#
        );
        let ended = ServerMessage::from(ParticipantEvent::Ended {
            reason: LeaveReason::RoomClosed,
        });
        assert_eq!(ended.to_json(), r#"{"type":"left","reason":"room_closed"}"#);
        let offer = ServerMessage::from(ParticipantEvent::SubscribeOffer { sdp: "v=0".into() });
        assert_eq!(offer.to_json(), r#"{"type":"subscribe_offer","sdp":"v=0"}"#);
    }

    fn participant(sid: &str) -> ParticipantInfo {
        ParticipantInfo {
            sid: sid.into(),
            identity: format!("id-{sid}"),
            name: "Name".into(),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: false,
            tracks: vec![callgate_sfu::TrackInfo {
                sid: "TR_1".into(),
                kind: callgate_sfu::TrackKind::Video,
                muted: false,
                mid: Some("0".into()),
                codec: "video/VP8".into(),
            }],
            metadata: "{}".into(),
            attributes: [("hand".to_owned(), "raised".to_owned())].into(),
        }
    }

    /// One of every server message a client can read (the media plane's
    /// internal events, `resumed`/`media_connected`, never go out).
    fn every_server_message() -> Vec<ServerMessage> {
        let room = RoomInfo {
            name: "r".into(),
            sid: "RM_1".into(),
            max_participants: 50,
            num_participants: 2,
            num_tracks: 1,
            empty_timeout_s: 20,
            metadata: "{\"title\":\"t\"}".into(),
        };
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            room: room.clone(),
            participant: participant("PA_1"),
            participants: vec![participant("PA_2")],
            ice_servers: vec![IceServer {
                urls: vec!["turn:127.0.0.1:3478".into()],
                username: Some("u".into()),
                credential: Some("c".into()),
            }],
            resume_secret: "s".into(),
            reconnect_grace_s: 20,
        };
        let events = vec![
            ParticipantEvent::ParticipantJoined {
                participant: participant("PA_2"),
            },
            ParticipantEvent::ParticipantLeft {
                participant_sid: "PA_2".into(),
                identity: "bob".into(),
                reason: LeaveReason::ConnectionLost,
            },
            ParticipantEvent::TrackPublished {
                participant_sid: "PA_2".into(),
                track: participant("PA_2").tracks[0].clone(),
            },
            ParticipantEvent::TrackUnpublished {
                participant_sid: "PA_2".into(),
                track_sid: "TR_1".into(),
            },
            ParticipantEvent::TrackMuted {
                participant_sid: "PA_2".into(),
                track_sid: "TR_1".into(),
                muted: true,
                by_moderator: true,
            },
            ParticipantEvent::SubscribeOffer { sdp: "v=0".into() },
            ParticipantEvent::ParticipantReconnecting {
                participant_sid: "PA_2".into(),
                identity: "bob".into(),
            },
            ParticipantEvent::ParticipantResumed {
                participant_sid: "PA_2".into(),
                identity: "bob".into(),
            },
            ParticipantEvent::Reconnecting {
                reason: callgate_sfu::ReconnectReason::MediaSilent,
                silent_for: std::time::Duration::ZERO,
            },
            ParticipantEvent::RoomUpdated { room },
            ParticipantEvent::ParticipantUpdated {
                participant: participant("PA_2"),
            },
            ParticipantEvent::SpeakersChanged {
                speakers: vec![callgate_sfu::SpeakerInfo {
                    participant_sid: "PA_2".into(),
                    track_sid: "TR_1".into(),
                    level: 0.5,
                }],
            },
            ParticipantEvent::ConnectionQuality {
                updates: vec![callgate_sfu::ConnectionQualityInfo {
                    participant_sid: "PA_2".into(),
                    quality: callgate_sfu::ConnectionQuality::Good,
                }],
            },
            ParticipantEvent::SubscribedLayers {
                track_sid: "TR_1".into(),
                layers: vec![callgate_sfu::LayerState {
                    rid: "h".into(),
                    active: true,
                }],
            },
        ];
        let mut messages = vec![
            ServerMessage::Joined(welcome.clone()),
            ServerMessage::Resumed(welcome),
            ServerMessage::PublishAnswer { sdp: "v=0".into() },
            ServerMessage::Balance { seconds_left: 60 },
            ServerMessage::BalanceWarning { seconds_left: 10 },
            ServerMessage::Left {
                reason: LeaveReason::InsufficientBalance,
            },
            ServerMessage::error("permission_denied", "no"),
            ServerMessage::call_error("call_ended", "over", "CA_1"),
            ServerMessage::Connected {
                protocol: PROTOCOL_VERSION,
                identity: "host1".into(),
            },
            ServerMessage::CallRing(CallRing {
                call_id: "CA_1".into(),
                room: "r".into(),
                caller: "alice".into(),
                caller_name: "Alice".into(),
                call_type: "video".into(),
                token: "t".into(),
                ring_timeout_s: 30,
                ring_ends_at_ms: 1_700_000_000_000,
            }),
            ServerMessage::CallState(CallStateNotice {
                call_id: "CA_1".into(),
                state: "ended".into(),
                by: None,
                end_reason: Some("completed".into()),
                callees: vec![CalleeRing {
                    identity: "host1".into(),
                    ring: "accepted".into(),
                }],
            }),
            ServerMessage::Presence {
                identity: "host1".into(),
                status: PresenceStatus::Online,
            },
            ServerMessage::Data {
                from: "alice".into(),
                from_sid: "PA_1".into(),
                topic: Some("chat".into()),
                payload: "hi".into(),
                reliable: true,
            },
        ];
        messages.extend(events.into_iter().map(ServerMessage::from));
        messages
    }

    #[test]
    fn every_server_message_reads_back_as_it_was_written() {
        for message in every_server_message() {
            let json = message.to_json();
            let read: ServerMessage = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
            assert_eq!(read, message, "{json}");
        }
        // The media plane's end of a session is the `left` a client reads.
        let ended = ServerMessage::from(ParticipantEvent::Ended {
            reason: LeaveReason::Removed,
        });
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&ended.to_json()).unwrap(),
            ServerMessage::Left {
                reason: LeaveReason::Removed
            }
        );
    }

    #[test]
    fn every_client_message_a_client_writes_the_server_reads() {
        let messages = vec![
            ClientMessage::Join {
                token: "t".into(),
                protocol: Some(PROTOCOL_VERSION),
            },
            ClientMessage::PublishOffer { sdp: "v=0".into() },
            ClientMessage::SubscribeAnswer { sdp: "v=0".into() },
            ClientMessage::Candidate {
                target: TransportRole::Publisher,
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                },
            },
            ClientMessage::Mute {
                track_sid: "TR_1".into(),
                muted: true,
            },
            ClientMessage::Leave,
            ClientMessage::Connect {
                token: "t".into(),
                protocol: None,
            },
            ClientMessage::CallAccept {
                call_id: "CA_1".into(),
            },
            ClientMessage::CallReject {
                call_id: "CA_1".into(),
                reason: CallRejectReason::Busy,
            },
            ClientMessage::CallCancel {
                call_id: "CA_1".into(),
            },
            ClientMessage::PresenceWatch {
                identities: vec!["a".into()],
            },
            ClientMessage::UpdateParticipant {
                identity: "bob".into(),
                update: crate::moderation::ParticipantChange {
                    can_publish: Some(true),
                    ..Default::default()
                },
            },
            ClientMessage::MuteParticipant {
                identity: "bob".into(),
                mute: crate::moderation::MuteChange {
                    track_sid: None,
                    kind: Some(callgate_sfu::TrackKind::Audio),
                    muted: true,
                },
            },
            ClientMessage::RemoveParticipant {
                identity: "bob".into(),
            },
            ClientMessage::SetAttributes {
                attributes: [("hand".to_owned(), "raised".to_owned())].into(),
            },
            ClientMessage::Data {
                topic: Some("chat".into()),
                payload: "hi".into(),
                reliable: false,
                destinations: vec!["bob".into()],
            },
            ClientMessage::Resume {
                participant_sid: "PA_1".into(),
                secret: "s".into(),
                protocol: Some(PROTOCOL_VERSION),
            },
            ClientMessage::IceRestart,
            ClientMessage::UpdateSubscription {
                track_sid: "TR_1".into(),
                disabled: false,
                width: Some(320),
                height: Some(180),
                priority: Some(200),
            },
        ];
        assert_eq!(messages.len(), CLIENT_TYPES.len(), "one of each type");
        for message in messages {
            let json = serde_json::to_string(&message).unwrap();
            assert_eq!(ClientMessage::parse(&json), Ok(message), "{json}");
        }
    }
}
