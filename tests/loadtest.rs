//! `callgate loadtest` against the real server: a short run of each
//! scenario, with a few participants, in which every expected track must
//! arrive. No timing is asserted: these check that the load generator
//! joins, negotiates and measures, not how fast anything is.

mod common;

use std::process::Command;

use common::TestServer;
use serde_json::Value;

/// Runs `callgate loadtest` with `args` against `server`; returns its JSON.
fn loadtest(server: &TestServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("loadtest")
        .arg("--url")
        .arg(format!("ws://{}", server.http))
        .args([
            "--duration",
            "1s",
            "--join-timeout",
            "20s",
            "--quiet",
            "--json",
        ])
        .arg("--server-pid")
        .arg(server.pid().to_string())
        .args(args)
        .output()
        .expect("callgate loadtest runs");
    assert!(
        out.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("loadtest prints JSON")
}

fn assert_every_track_arrives(report: &Value, participants: u64, tracks: u64) {
    assert_eq!(report["participants"], participants, "{report:#}");
    assert_eq!(report["joined"], participants, "{report:#}");
    let media = &report["media"];
    assert_eq!(media["tracks_expected"], tracks, "{report:#}");
    assert_eq!(media["tracks_received"], tracks, "{report:#}");
    assert_eq!(media["joins_without_media"], 0, "{report:#}");
    assert!(media["packets_in"].as_u64().unwrap() > 0, "{report:#}");
    // The server's counters and CPU were read.
    let server = &report["server"];
    assert!(server["packets_out"].as_f64().unwrap() > 0.0, "{report:#}");
    assert!(server["cpu_seconds"].as_f64().is_some(), "{report:#}");
}

#[test]
fn audio_room_one_speaker_reaches_every_listener() {
    let server = TestServer::start(&[]);
    let r = loadtest(&server, &["--scenario", "audio-room", "--subscribers", "3"]);
    assert_every_track_arrives(&r, 4, 3);
}

#[test]
fn video_calls_carry_audio_and_video_both_ways() {
    let server = TestServer::start(&[]);
    let r = loadtest(&server, &["--scenario", "video-calls", "--rooms", "2"]);
    // 2 calls × 2 sides × (audio + video).
    assert_every_track_arrives(&r, 4, 8);
}

#[test]
fn meeting_everyone_receives_everyone_else() {
    let server = TestServer::start(&[]);
    let r = loadtest(
        &server,
        &["--scenario", "meeting", "--rooms", "1", "--publishers", "3"],
    );
    // 3 participants × 2 others × (audio + video).
    assert_every_track_arrives(&r, 3, 12);
}

#[test]
fn livestream_reaches_every_subscriber() {
    let server = TestServer::start(&[]);
    let r = loadtest(
        &server,
        &[
            "--scenario",
            "livestream",
            "--subscribers",
            "3",
            "--video-kbps",
            "300",
        ],
    );
    assert_every_track_arrives(&r, 4, 6);
}

#[test]
fn the_async_webrtc_client_works_too() {
    let server = TestServer::start(&[]);
    let r = loadtest(
        &server,
        &[
            "--scenario",
            "meeting",
            "--rooms",
            "1",
            "--publishers",
            "2",
            "--client",
            "webrtc",
        ],
    );
    assert_every_track_arrives(&r, 2, 4);
}

#[test]
fn a_sweep_runs_each_size_and_draws_its_chart() {
    let server = TestServer::start(&[]);
    let dir = std::env::temp_dir().join(format!("callgate-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("sweep.svg");
    let r = loadtest(
        &server,
        &[
            "--scenario",
            "livestream",
            "--sweep",
            "subscribers=1,2",
            "--chart",
            chart.to_str().unwrap(),
        ],
    );
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for (step, subscribers) in steps.iter().zip([1, 2]) {
        assert_eq!(step["value"], subscribers);
        assert_every_track_arrives(&step["report"], 1 + subscribers, 2 * subscribers);
    }
    let svg = std::fs::read_to_string(&chart).expect("the chart is written");
    assert!(svg.contains("<svg"), "{svg}");
    let _ = std::fs::remove_dir_all(&dir);
}
