//! What signaling hands the call desk (docs/calls.md): devices coming and
//! going, and the call inputs and presence watches they send. The desk
//! (in the binary, next to the meter) answers through [`Devices`].
//!
//! [`Devices`]: crate::devices::Devices

use crate::devices::DeviceId;
use crate::protocol::CallRejectReason;

/// A call input or presence watch from a device. Serializable so that a
/// node can hand it to the node that drives the call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallRequest {
    Accept {
        call_id: String,
    },
    Reject {
        call_id: String,
        reason: CallRejectReason,
    },
    Cancel {
        call_id: String,
    },
    WatchPresence {
        identities: Vec<String>,
    },
}

/// The call desk as signaling sees it. Calls are made from connection
/// tasks; implementations queue them and must not block.
pub trait CallControl: Send + Sync + 'static {
    /// `identity` opened a connection (presence or a room's).
    fn device_connected(&self, identity: &str, device: DeviceId);
    /// That connection closed.
    fn device_disconnected(&self, identity: &str, device: DeviceId);
    /// `identity` sent `request` on `device`; a refusal comes back to that
    /// device as an `error`.
    fn request(&self, identity: &str, device: DeviceId, request: CallRequest);
}
