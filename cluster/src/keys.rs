//! The Redis keys, all under one prefix so that several clusters (or a
//! test per run) can share a Redis.

/// Key names for one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The set of node ids that have registered (members whose node key
    /// expired are removed by whoever notices).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's entry (JSON `NodeInfo`), expiring unless refreshed.
    pub fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    /// The prefix of node keys, for the placement script.
    pub fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }

    /// The rooms placed on a node (a set), counted by placement.
    pub fn node_rooms(&self, id: &str) -> String {
        format!("{}rooms:{id}", self.prefix)
    }

    /// The prefix of per-node room sets, for the placement script.
    pub fn node_rooms_prefix(&self) -> String {
        format!("{}rooms:", self.prefix)
    }

    /// Which node a room lives on (a node id).
    pub fn room(&self, name: &str) -> String {
        format!("{}room:{name}", self.prefix)
    }

    /// Which node a participant session lives on, for a `resume` that
    /// reaches another node.
    pub fn participant(&self, sid: &str) -> String {
        format!("{}participant:{sid}", self.prefix)
    }

    /// An identity's presence as each node sees it (a hash: node id →
    /// that node's [`PresenceShare`](crate::PresenceShare)).
    pub fn presence(&self, identity: &str) -> String {
        format!("{}presence:{identity}", self.prefix)
    }

    /// The identities a node has a presence share in (a set), to remove
    /// them when the node goes.
    pub fn presence_of(&self, node: &str) -> String {
        format!("{}presence_of:{node}", self.prefix)
    }

    /// The channel the call desks of all nodes talk on.
    pub fn calls_channel(&self) -> String {
        format!("{}calls", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new("callgate:")
    }
}
