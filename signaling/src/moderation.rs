//! Changing participants while they are in a room, from the server API or
//! from a `room_admin` participant over signaling (docs/operations.md,
//! "Server API"; docs/protocol.md, "Moderation"): one definition of each
//! change and of its bounds, for both.

use std::collections::BTreeMap;

use callgate_sfu::{ParticipantUpdate, TrackKind, TrackSelector};
use serde::{Deserialize, Serialize};

/// Longest participant metadata, in bytes.
pub const MAX_PARTICIPANT_METADATA_BYTES: usize = 4096;
/// Most attributes a participant has.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest attribute key and value, in bytes.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;
/// Longest display name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A change to a participant, as a request spells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantChange {
    #[serde(default)]
    pub can_publish: Option<bool>,
    #[serde(default)]
    pub can_subscribe: Option<bool>,
    #[serde(default)]
    pub can_publish_data: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Option<String>,
    /// Merged in; an empty value removes its key.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Checks attributes against the bounds (count, key and value sizes).
pub fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    for (key, value) in attributes {
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(format!(
                "an attribute key is 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes"
            ));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(format!(
                "an attribute value is at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

impl ParticipantChange {
    /// The change for the media plane, or why it is out of bounds.
    pub fn checked(self) -> Result<ParticipantUpdate, String> {
        if let Some(name) = &self.name
            && (name.is_empty()
                || name.len() > MAX_NAME_BYTES
                || name.chars().any(char::is_control))
        {
            return Err(format!(
                "name is 1 to {MAX_NAME_BYTES} bytes of printable text"
            ));
        }
        if self
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > MAX_PARTICIPANT_METADATA_BYTES)
        {
            return Err(format!(
                "metadata is longer than {MAX_PARTICIPANT_METADATA_BYTES} bytes"
            ));
        }
        if let Some(attributes) = &self.attributes {
            check_attributes(attributes)?;
        }
        Ok(ParticipantUpdate {
            can_publish: self.can_publish,
            can_subscribe: self.can_subscribe,
            can_publish_data: self.can_publish_data,
            name: self.name,
            metadata: self.metadata,
            attributes: self.attributes,
        })
    }
}

/// A moderator's mute, as a request spells it: a track by sid, or every
/// track of a kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteChange {
    #[serde(default)]
    pub track_sid: Option<String>,
    #[serde(default)]
    pub kind: Option<TrackKind>,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub muted: bool,
}

fn yes() -> bool {
    true
}

impl MuteChange {
    pub fn selector(&self) -> Result<TrackSelector, String> {
        match (&self.track_sid, self.kind) {
            (Some(sid), None) if !sid.is_empty() && sid.len() <= 64 => {
                Ok(TrackSelector::Sid(sid.clone()))
            }
            (None, Some(kind)) => Ok(TrackSelector::Kind(kind)),
            _ => Err("name either track_sid or kind (audio or video)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_within_the_bounds_passes_whole() {
        let change: ParticipantChange = serde_json::from_str(
            r#"{"can_publish":true,"name":"Asha","metadata":"{}","attributes":{"hand":"raised"}}"#,
        )
        .unwrap();
        let update = change.checked().unwrap();
        assert_eq!(update.can_publish, Some(true));
        assert_eq!(update.can_subscribe, None);
        assert_eq!(update.name.as_deref(), Some("Asha"));
        assert_eq!(
            update.attributes.unwrap().get("hand").map(String::as_str),
            Some("raised")
        );
    }

    #[test]
    fn changes_out_of_bounds_are_refused() {
        let many: BTreeMap<String, String> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let cases = [
            ParticipantChange {
                attributes: Some(many),
                ..Default::default()
            },
            ParticipantChange {
                attributes: Some(BTreeMap::from([("".into(), "v".into())])),
                ..Default::default()
            },
            ParticipantChange {
                attributes: Some(BTreeMap::from([(
                    "k".into(),
                    "v".repeat(MAX_ATTRIBUTE_VALUE_BYTES + 1),
                )])),
                ..Default::default()
            },
            ParticipantChange {
                metadata: Some("m".repeat(MAX_PARTICIPANT_METADATA_BYTES + 1)),
                ..Default::default()
            },
            ParticipantChange {
                name: Some(String::new()),
                ..Default::default()
            },
        ];
        for change in cases {
            assert!(change.clone().checked().is_err(), "{change:?}");
        }
        assert!(serde_json::from_str::<ParticipantChange>(r#"{"admin":true}"#).is_err());
    }

    #[test]
    fn a_mute_names_a_track_or_a_kind_not_both() {
        let by_kind: MuteChange = serde_json::from_str(r#"{"kind":"audio"}"#).unwrap();
        assert_eq!(
            by_kind.selector(),
            Ok(TrackSelector::Kind(TrackKind::Audio))
        );
        assert!(by_kind.muted, "mutes unless told otherwise");
        let by_sid: MuteChange =
            serde_json::from_str(r#"{"track_sid":"TR_1","muted":false}"#).unwrap();
        assert_eq!(by_sid.selector(), Ok(TrackSelector::Sid("TR_1".into())));
        let both: MuteChange =
            serde_json::from_str(r#"{"track_sid":"TR_1","kind":"audio"}"#).unwrap();
        assert!(both.selector().is_err());
        let neither: MuteChange = serde_json::from_str(r#"{}"#).unwrap();
        assert!(neither.selector().is_err());
    }
}
