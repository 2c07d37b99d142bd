//! `callgate loadtest`: simulated participants with real WebRTC (ICE,
//! DTLS, SRTP: webrtc-rs's sans-I/O `rtc` peer connections by default, the
//! async `webrtc` crate with `--client webrtc`) join a server over its
//! signaling protocol, publish synthetic Opus and VP8-like media whose
//! payloads carry send times and sequence marks, and report what users
//! feel (loss, one-way latency, join time) and what the server paid (CPU
//! per forwarded packet, peak memory).
//!
//! One file, one purpose: `scenario` lays out who joins where, `media` and
//! `payload` make the packets, `participant` is a client, `rtc_peer` and
//! `peer` its transports in either engine,
//! `stats` and `histogram` measure, `probe` reads the server, `run` drives
//! one run, `sweep` and `chart` several, `report` prints, `cli` is the
//! command line.

mod chart;
pub mod cli;
mod error;
mod histogram;
pub mod media;
mod participant;
pub mod payload;
mod peer;
mod probe;
mod report;
mod rtc_peer;
mod run;
pub mod scenario;
mod stats;
mod sweep;

pub use error::LoadTestError;
pub use participant::{ClientKind, VideoShape};
pub use report::{Report, ServerSummary};
pub use run::{Options, run};
pub use stats::{MediaSummary, Percentiles};
