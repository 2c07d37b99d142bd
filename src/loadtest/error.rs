//! What can stop a load test.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("invalid option: {0}")]
    Usage(String),
    #[error("{0} is not a loopback address: load tests only target this machine")]
    NotLoopback(String),
    #[error("signaling with {url}: {message}")]
    Signaling { url: String, message: String },
    #[error("webrtc: {0}")]
    WebRtc(String),
    #[error("token: {0}")]
    Token(#[from] callgate_signaling::token::TokenError),
    #[error("reading the server's {what}: {source}")]
    Probe {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}: {message}")]
    Output { path: String, message: String },
}

impl LoadTestError {
    pub(crate) fn webrtc(e: impl std::fmt::Display) -> Self {
        LoadTestError::WebRtc(e.to_string())
    }
}
