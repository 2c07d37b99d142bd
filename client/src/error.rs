use thiserror::Error;

/// What can go wrong on the signaling connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientError {
    /// The WebSocket could not be opened.
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    /// The server closed the connection (docs/protocol.md, "Close codes").
    #[error("closed by the server: {code} {reason}")]
    Closed { code: u16, reason: String },
    /// The server answered `error` where an answer was expected.
    #[error("refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The connection failed, or the server sent what the protocol does not
    /// allow at that point.
    #[error("signaling: {0}")]
    Protocol(String),
    /// The WebRTC stack (the `webrtc` crate) failed.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// The server did not answer within the wait.
    #[error("no {0} in time")]
    Timeout(&'static str),
}

impl ClientError {
    pub(crate) fn webrtc(e: impl std::fmt::Display) -> ClientError {
        ClientError::WebRtc(e.to_string())
    }
}
