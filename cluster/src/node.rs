//! What a node tells the others about itself.

use serde::{Deserialize, Serialize};

pub type NodeId = String;

/// A node's entry in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where the other nodes reach its HTTP server (signaling and server
    /// API): `http://10.0.0.2:7880`.
    pub url: String,
    #[serde(flatten)]
    pub load: NodeLoad,
    /// Draining: it keeps its rooms until they end, and takes no new ones.
    pub draining: bool,
    /// When it last refreshed its entry (Unix ms).
    pub refreshed_ms: i64,
}

/// How busy a node is, refreshed every few seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The busiest media worker's share of its time spent working (0–1).
    pub cpu: f64,
    pub rooms: u64,
    pub participants: u64,
}
