//! Several callgate nodes on one Redis: the node registry (who is alive,
//! how loaded, where to reach it) and room placement (which node a room
//! lives on). docs/operations.md, "Running several nodes", describes the
//! keys and what happens when a node goes.
//!
//! Redis is the only shared state besides the ledger's PostgreSQL: no
//! consensus or gossip of our own. A room's placement is one key, written
//! by a Lua script so that two nodes placing the same new room at once
//! agree; it stays valid while its node keeps refreshing its own key, which
//! expires when the node dies.

mod error;
mod keys;
mod node;
mod placement;
mod presence;
mod registry;
pub mod testing;

pub use error::ClusterError;
pub use keys::Keys;
pub use node::{NodeId, NodeInfo, NodeLoad};
pub use placement::{Candidate, load_step};
pub use presence::PresenceShare;
pub use registry::{Cluster, ClusterConfig, Scan};
