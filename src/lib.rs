//! The `callgate` binary's library half: configuration and wiring the media
//! plane, signaling and (later) TURN and metering into one server.

pub mod config;
pub mod server;
