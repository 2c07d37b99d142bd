//! The call desks of a cluster talking to each other (docs/calls.md,
//! "Several nodes"). A call is driven by the desk of the node its room
//! lives on, but its members' devices may be open on any node: rings,
//! call states and call inputs cross nodes as [`BusMessage`]s on one Redis
//! pub/sub channel, and each node writes its share of every identity's
//! presence to Redis, where any node adds the shares up.

use callgate_cluster::{Cluster, PresenceShare};
use callgate_signaling::devices::DeviceId;
use callgate_signaling::protocol::{PresenceStatus, ServerMessage};
use callgate_signaling::ringing::CallRequest;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::desk::DeskInput;

/// How long the subscriber waits before subscribing again after Redis
/// broke the subscription.
const RESUBSCRIBE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One device of the cluster: its node and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAddr {
    pub node: String,
    pub device: DeviceId,
}

/// What one desk tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// For every device of `identity`, on every node.
    ToIdentity {
        identity: String,
        message: ServerMessage,
    },
    /// For one device.
    ToDevice {
        to: DeviceAddr,
        message: ServerMessage,
    },
    /// `identity`'s presence may have changed: nodes with watchers of it
    /// add up its shares again.
    Presence { identity: String },
    /// A device of `identity` opened: the calls ringing it ring there too.
    DeviceConnected { identity: String, at: DeviceAddr },
    /// A call input for a call node `node` drives, from device `from`.
    Request {
        node: String,
        identity: String,
        from: DeviceAddr,
        request: CallRequest,
    },
}

/// A message and the node that sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub message: BusMessage,
}

/// This node's end of the bus.
#[derive(Clone)]
pub struct Bus {
    cluster: Cluster,
}

impl Bus {
    pub fn new(cluster: Cluster) -> Bus {
        Bus { cluster }
    }

    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// Sends `message` to every desk (best effort: a message lost with a
    /// broken Redis connection is logged, and the ring timeout, `call.ring`
    /// webhook and the next presence change make up for it).
    pub async fn publish(&self, message: BusMessage) {
        let Some(payload) = self.payload(message) else {
            return;
        };
        if let Err(e) = self.cluster.publish_call_message(&payload).await {
            warn!(error = %e, "a call message was not published");
        }
    }

    /// `message` from this node, as the channel carries it.
    fn payload(&self, message: BusMessage) -> Option<String> {
        let envelope = Envelope {
            from: self.node_id().to_owned(),
            message,
        };
        serde_json::to_string(&envelope)
            .inspect_err(|e| warn!(error = %e, "a call message did not serialize"))
            .ok()
    }

    /// Writes this node's share of `identity`'s presence and tells every
    /// desk it may have changed (one Redis round trip: this is done on
    /// every connect, disconnect, join and leave).
    pub async fn share_presence(&self, identity: &str, share: PresenceShare) {
        debug!(identity = %identity, ?share, "presence share");
        let Some(changed) = self.payload(BusMessage::Presence {
            identity: identity.to_owned(),
        }) else {
            return;
        };
        if let Err(e) = self.cluster.share_presence(identity, share, &changed).await {
            warn!(error = %e, identity = %identity, "presence share not written");
        }
    }

    /// Every node's share of `identity`'s presence.
    pub async fn presence_shares(&self, identity: &str) -> Option<Vec<PresenceShare>> {
        match self.cluster.presence_shares(identity).await {
            Ok(shares) => Some(shares),
            Err(e) => {
                warn!(error = %e, identity = %identity, "presence shares not read");
                None
            }
        }
    }

    /// Removes the presence shares of node `node` (gone, or this node
    /// starting afresh) and tells every desk whose presence that changed.
    pub async fn forget_node(&self, node: &str) {
        match self.cluster.forget_presence_of(node).await {
            Ok(identities) => {
                for identity in identities {
                    self.publish(BusMessage::Presence { identity }).await;
                }
            }
            Err(e) => warn!(error = %e, node = %node, "presence shares of a node not removed"),
        }
    }

    /// The node that drives call `id` (the node its room lives on), if it
    /// is alive.
    pub async fn node_of_call(&self, id: &str) -> Option<String> {
        match self.cluster.owner(&super::desk::room_of_call(id)).await {
            Ok(owner) => owner.map(|n| n.id),
            Err(e) => {
                debug!(error = %e, call = %id, "no node found for a call");
                None
            }
        }
    }

    /// Hands every message of the bus to the desk, subscribing again when
    /// Redis breaks the subscription, until the desk stops.
    pub async fn listen(self, desk: mpsc::UnboundedSender<DeskInput>) {
        while !desk.is_closed() {
            let messages = match self.cluster.call_messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    warn!(error = %e, "could not subscribe to the call messages");
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
            };
            let mut messages = std::pin::pin!(messages);
            while let Some(payload) = messages.next().await {
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => {
                        if desk.send(DeskInput::Bus(Box::new(envelope))).is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "a call message of another version ignored"),
                }
            }
            warn!("the call message subscription broke; subscribing again");
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    }
}

/// An identity's presence from every node's share of it.
pub fn status_of(shares: &[PresenceShare]) -> PresenceStatus {
    if shares.iter().any(|s| s.rooms > 0 || s.engaged) {
        PresenceStatus::Busy
    } else if shares.iter().any(|s| s.devices > 0) {
        PresenceStatus::Online
    } else {
        PresenceStatus::Offline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_as_written() {
        let envelope = Envelope {
            from: "n1".into(),
            message: BusMessage::Request {
                node: "n2".into(),
                identity: "alice".into(),
                from: DeviceAddr {
                    node: "n1".into(),
                    device: 7,
                },
                request: CallRequest::Cancel {
                    call_id: "CA_1".into(),
                },
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        let ring = Envelope {
            from: "n1".into(),
            message: BusMessage::ToIdentity {
                identity: "bob".into(),
                message: ServerMessage::Presence {
                    identity: "alice".into(),
                    status: PresenceStatus::Busy,
                },
            },
        };
        let text = serde_json::to_string(&ring).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), ring);
    }

    #[test]
    fn shares_add_up_to_busy_then_online_then_offline() {
        let online = PresenceShare {
            devices: 1,
            ..PresenceShare::default()
        };
        let in_room = PresenceShare {
            rooms: 1,
            ..PresenceShare::default()
        };
        let ringing = PresenceShare {
            engaged: true,
            ..PresenceShare::default()
        };
        assert_eq!(status_of(&[online, in_room]), PresenceStatus::Busy);
        assert_eq!(status_of(&[ringing]), PresenceStatus::Busy);
        assert_eq!(status_of(&[online]), PresenceStatus::Online);
        assert_eq!(status_of(&[]), PresenceStatus::Offline);
    }
}
