//! Presence and call messages across nodes. An identity's devices, room
//! sessions and calls can be on several nodes at once, so each node writes
//! its own share of the identity's presence and the status is what all
//! shares add up to. The call desks tell each other of changes, rings and
//! call states on one Redis pub/sub channel.

use futures_util::{Stream, StreamExt};
use redis::AsyncCommands;

use crate::error::ClusterError;
use crate::registry::Cluster;

/// One node's share of an identity's presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceShare {
    /// The identity's signaling connections open on the node.
    pub devices: u32,
    /// The identity's sessions in rooms that live on the node.
    pub rooms: u32,
    /// Whether a call the node drives rings or connects the identity.
    pub engaged: bool,
}

impl PresenceShare {
    /// A share that says nothing (it is removed rather than written).
    pub fn is_empty(&self) -> bool {
        *self == PresenceShare::default()
    }

    fn encode(&self) -> String {
        format!("{} {} {}", self.devices, self.rooms, u8::from(self.engaged))
    }

    fn decode(text: &str) -> Option<PresenceShare> {
        let mut fields = text.split(' ');
        let share = PresenceShare {
            devices: fields.next()?.parse().ok()?,
            rooms: fields.next()?.parse().ok()?,
            engaged: match fields.next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            },
        };
        fields.next().is_none().then_some(share)
    }
}

impl Cluster {
    /// Writes this node's share of `identity`'s presence and, in the same
    /// round trip, publishes `announcement` as a call message (so that the
    /// other nodes look at the identity again).
    pub async fn share_presence(
        &self,
        identity: &str,
        share: PresenceShare,
        announcement: &str,
    ) -> Result<(), ClusterError> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if share.is_empty() {
            pipe.hdel(keys.presence(identity), self.node_id())
                .ignore()
                .srem(keys.presence_of(self.node_id()), identity)
                .ignore();
        } else {
            pipe.hset(keys.presence(identity), self.node_id(), share.encode())
                .ignore()
                .sadd(keys.presence_of(self.node_id()), identity)
                .ignore();
        }
        pipe.publish(keys.calls_channel(), announcement).ignore();
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Every node's share of `identity`'s presence.
    pub async fn presence_shares(
        &self,
        identity: &str,
    ) -> Result<Vec<PresenceShare>, ClusterError> {
        let entries: Vec<(String, String)> = self
            .connection()
            .hgetall(self.keys().presence(identity))
            .await?;
        entries
            .into_iter()
            .map(|(node, text)| {
                PresenceShare::decode(&text).ok_or(ClusterError::BadEntry {
                    node,
                    message: format!("presence share of {identity:?}: {text:?}"),
                })
            })
            .collect()
    }

    /// Removes node `node`'s shares (it is gone, or this node starts
    /// afresh); the identities they were of, whose presence may change.
    pub async fn forget_presence_of(&self, node: &str) -> Result<Vec<String>, ClusterError> {
        let keys = self.keys();
        let mut conn = self.connection();
        let mut identities: Vec<String> = conn.smembers(keys.presence_of(node)).await?;
        identities.sort();
        let mut pipe = redis::pipe();
        for identity in &identities {
            pipe.hdel(keys.presence(identity), node).ignore();
        }
        pipe.del(keys.presence_of(node)).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(identities)
    }

    /// Sends `payload` to the call desks of every node (this one too).
    pub async fn publish_call_message(&self, payload: &str) -> Result<(), ClusterError> {
        self.connection()
            .publish::<_, _, ()>(self.keys().calls_channel(), payload)
            .await?;
        Ok(())
    }

    /// The call messages every node publishes, from now on, this node's
    /// own included. The stream ends when the connection to Redis breaks;
    /// what is published until the caller subscribes again is not seen.
    pub async fn call_messages(
        &self,
    ) -> Result<impl Stream<Item = String> + Send + use<>, ClusterError> {
        let mut pubsub = self.client().get_async_pubsub().await?;
        pubsub.subscribe(self.keys().calls_channel()).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|message| async move { message.get_payload::<String>().ok() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_reads_back_as_written_and_junk_is_refused() {
        let share = PresenceShare {
            devices: 2,
            rooms: 1,
            engaged: true,
        };
        assert_eq!(PresenceShare::decode(&share.encode()), Some(share));
        for junk in ["", "1 2", "1 2 3", "1 2 1 4", "a 2 1", "-1 0 0"] {
            assert_eq!(PresenceShare::decode(junk), None, "{junk:?}");
        }
    }
}
