use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A node's entry in Redis is not what this version writes.
    #[error("node entry of {node}: {message}")]
    BadEntry { node: String, message: String },
    /// No node is alive and taking rooms.
    #[error("no node is taking rooms")]
    NoNode,
    /// A node id or room name that cannot be a key part.
    #[error("invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
}
