//! The `callgate` binary's library half: configuration, and wiring the media
//! plane, signaling, the TURN relay and metering into one server.

pub mod billing;
pub mod calling;
pub mod cluster;
pub mod config;
mod dev_api;
#[cfg(feature = "loadtest")]
pub mod loadtest;
mod money_api;
pub mod open_files;
pub mod openapi;
pub mod server;
