//! The `calls` export, on both databases: one row per call of the call
//! log in CSV and JSON lines (exact lines), calls by `created_at` in
//! [from, to), one member's calls, and a paid call's billed seconds and
//! coins the same as the call log reads them.

mod common;

use std::time::Duration;

use callgate_metering::{
    BillingTerms, CallMember, CallRecord, CallType, EndReason, ExportFormat, ExportKind, Meter,
    MeterError, SessionStart, TimeRange,
};
use common::*;
use tokio::time::sleep;

/// A callee whose identity needs CSV quoting.
const QUOTED: &str = "o'neil, \"q\"";

fn call(
    id: &str,
    caller: &str,
    callees: &[(&str, &str)],
    call_type: CallType,
    created_ms: i64,
) -> CallRecord {
    CallRecord {
        id: id.into(),
        room: format!("room-{id}"),
        caller: caller.into(),
        callees: callees
            .iter()
            .map(|(identity, ring)| CallMember {
                identity: identity.to_string(),
                ring: Some(ring.to_string()),
            })
            .collect(),
        call_type,
        state: "ringing".into(),
        outcome: None,
        created_ms,
        answered_ms: None,
        ended_ms: None,
        ended_by: None,
        end_reason: None,
        session_id: None,
        billed_seconds: None,
        coins: None,
    }
}

fn end(call: &mut CallRecord, outcome: &str, reason: &str, at: i64, by: Option<&str>) {
    call.state = "ended".into();
    call.outcome = Some(outcome.into());
    call.end_reason = Some(reason.into());
    call.ended_ms = Some(at);
    call.ended_by = by.map(Into::into);
}

/// Logs five calls; returns the paid call's session id.
///
/// - `CA_0`, a minute before T0: dave cancelled his call to host9.
/// - `CA_1` at T0: alice → host1 (accepted) and host2 (missed), paid at
///   30 coins a minute, answered at T0 and hung up by host1 90.5 s later.
/// - `CA_2` at T0 + 1 s: bob → `o'neil, "q"`, missed after 30 s.
/// - `CA_4`, then `CA_3`, both at T0 + 2 s: carol → host1, declined; alice
///   → host3, host1, host2, still ringing.
async fn log_calls(meter: &Meter) -> String {
    let mut cancelled = call(
        "CA_0",
        "dave",
        &[("host9", "cancelled")],
        CallType::Audio,
        T0 - 60_000,
    );
    end(
        &mut cancelled,
        "cancelled",
        "cancelled",
        T0 - 55_000,
        Some("dave"),
    );
    meter.log_call(&cancelled, &[]).await.unwrap();

    meter.credit("alice", 100, "pay-1").await.unwrap();
    let mut paid = call(
        "CA_1",
        "alice",
        &[("host1", "ringing"), ("host2", "ringing")],
        CallType::Video,
        T0,
    );
    meter.log_call(&paid, &[]).await.unwrap();
    let session = meter
        .start_session(SessionStart {
            call_id: Some(paid.id.clone()),
            ..start("alice", Some("host1"), BillingTerms::new(30))
        })
        .await
        .unwrap();
    let session_id = session.id().to_owned();
    paid.callees[0].ring = Some("accepted".into());
    paid.state = "accepted".into();
    paid.answered_ms = Some(T0);
    meter.log_call(&paid, &[]).await.unwrap();

    let mut missed = call(
        "CA_2",
        "bob",
        &[(QUOTED, "ringing")],
        CallType::Audio,
        T0 + 1_000,
    );
    meter.log_call(&missed, &[]).await.unwrap();
    missed.callees[0].ring = Some("missed".into());
    end(&mut missed, "missed", "no_answer", T0 + 31_000, None);
    meter.log_call(&missed, &[]).await.unwrap();

    let mut declined = call(
        "CA_4",
        "carol",
        &[("host1", "rejected")],
        CallType::Audio,
        T0 + 2_000,
    );
    end(
        &mut declined,
        "rejected",
        "declined",
        T0 + 5_000,
        Some("host1"),
    );
    meter.log_call(&declined, &[]).await.unwrap();
    let ringing = call(
        "CA_3",
        "alice",
        &[
            ("host3", "ringing"),
            ("host1", "ringing"),
            ("host2", "ringing"),
        ],
        CallType::Video,
        T0 + 2_000,
    );
    meter.log_call(&ringing, &[]).await.unwrap();

    // The tokio clock is paused: this sleep moves it, and the session's
    // timers with it, without waiting.
    sleep(Duration::from_millis(90_500)).await;
    let summary = session.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.ended_ms, T0 + 90_500);
    // 90.5 s at 30 coins a minute, per started minute: 120 s, 60 coins.
    assert_eq!((summary.billed_seconds, summary.coins), (120, 60));
    paid.callees[1].ring = Some("missed".into());
    end(
        &mut paid,
        "completed",
        "hung_up",
        summary.ended_ms,
        Some("host1"),
    );
    meter.log_call(&paid, &[]).await.unwrap();
    session_id
}

const HEADER_CSV: &str = "call_id,room,caller,callees,call_type,state,outcome,created_at,\
     answered_at,ended_at,ended_by,end_reason,duration_s,session_id,billed_seconds,coins";

fn csv_lines(session: &str) -> [String; 5] {
    [
        "CA_0,room-CA_0,dave,host9:cancelled,audio,ended,cancelled,2023-11-14T22:12:20.000Z,,\
         2023-11-14T22:12:25.000Z,dave,cancelled,,,,"
            .to_string(),
        format!(
            "CA_1,room-CA_1,alice,host1:accepted;host2:missed,video,ended,completed,\
             2023-11-14T22:13:20.000Z,2023-11-14T22:13:20.000Z,2023-11-14T22:14:50.500Z,host1,\
             hung_up,90,{session},120,60"
        ),
        "CA_2,room-CA_2,bob,\"o'neil, \"\"q\"\":missed\",audio,ended,missed,\
         2023-11-14T22:13:21.000Z,,2023-11-14T22:13:51.000Z,,no_answer,,,,"
            .to_string(),
        "CA_3,room-CA_3,alice,host1:ringing;host2:ringing;host3:ringing,video,ringing,,\
         2023-11-14T22:13:22.000Z,,,,,,,,"
            .to_string(),
        "CA_4,room-CA_4,carol,host1:rejected,audio,ended,rejected,2023-11-14T22:13:22.000Z,,\
         2023-11-14T22:13:25.000Z,host1,declined,,,,"
            .to_string(),
    ]
}

fn json_lines(session: &str) -> [String; 5] {
    [
        r#"{"call_id":"CA_0","room":"room-CA_0","caller":"dave","callees":[{"identity":"host9","ring":"cancelled"}],"call_type":"audio","state":"ended","outcome":"cancelled","created_at":"2023-11-14T22:12:20.000Z","answered_at":null,"ended_at":"2023-11-14T22:12:25.000Z","ended_by":"dave","end_reason":"cancelled","duration_s":null,"session_id":null,"billed_seconds":null,"coins":null}"#.to_string(),
        format!(
            r#"{{"call_id":"CA_1","room":"room-CA_1","caller":"alice","callees":[{{"identity":"host1","ring":"accepted"}},{{"identity":"host2","ring":"missed"}}],"call_type":"video","state":"ended","outcome":"completed","created_at":"2023-11-14T22:13:20.000Z","answered_at":"2023-11-14T22:13:20.000Z","ended_at":"2023-11-14T22:14:50.500Z","ended_by":"host1","end_reason":"hung_up","duration_s":90,"session_id":"{session}","billed_seconds":120,"coins":60}}"#
        ),
        r#"{"call_id":"CA_2","room":"room-CA_2","caller":"bob","callees":[{"identity":"o'neil, \"q\"","ring":"missed"}],"call_type":"audio","state":"ended","outcome":"missed","created_at":"2023-11-14T22:13:21.000Z","answered_at":null,"ended_at":"2023-11-14T22:13:51.000Z","ended_by":null,"end_reason":"no_answer","duration_s":null,"session_id":null,"billed_seconds":null,"coins":null}"#.to_string(),
        r#"{"call_id":"CA_3","room":"room-CA_3","caller":"alice","callees":[{"identity":"host1","ring":"ringing"},{"identity":"host2","ring":"ringing"},{"identity":"host3","ring":"ringing"}],"call_type":"video","state":"ringing","outcome":null,"created_at":"2023-11-14T22:13:22.000Z","answered_at":null,"ended_at":null,"ended_by":null,"end_reason":null,"duration_s":null,"session_id":null,"billed_seconds":null,"coins":null}"#.to_string(),
        r#"{"call_id":"CA_4","room":"room-CA_4","caller":"carol","callees":[{"identity":"host1","ring":"rejected"}],"call_type":"audio","state":"ended","outcome":"rejected","created_at":"2023-11-14T22:13:22.000Z","answered_at":null,"ended_at":"2023-11-14T22:13:25.000Z","ended_by":"host1","end_reason":"declined","duration_s":null,"session_id":null,"billed_seconds":null,"coins":null}"#.to_string(),
    ]
}

/// The export as text and its row count; `user` as `export_for_user`.
async fn export(
    meter: &Meter,
    format: ExportFormat,
    range: TimeRange,
    user: Option<&str>,
) -> Result<(u64, String), MeterError> {
    let mut out = Vec::new();
    let n = match user {
        None => {
            meter
                .export(ExportKind::Calls, range, format, &mut out)
                .await
        }
        Some(u) => {
            meter
                .export_for_user(ExportKind::Calls, range, format, u, &mut out)
                .await
        }
    }?;
    Ok((n, String::from_utf8(out).unwrap()))
}

/// The CSV text of a header and these rows.
fn csv_text(rows: &[&String]) -> String {
    let mut text = format!("{HEADER_CSV}\r\n");
    for row in rows {
        text.push_str(row);
        text.push_str("\r\n");
    }
    text
}

fn jsonl_text(rows: &[&String]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

async fn every_call_is_one_row_in_csv_and_json_lines(db: TestDb) {
    let meter = db.open().await;
    let session = log_calls(&meter).await;
    assert_eq!(ExportKind::Calls.columns().join(","), HEADER_CSV);
    assert_eq!("calls".parse::<ExportKind>().unwrap(), ExportKind::Calls);

    let csv = csv_lines(&session);
    let (n, text) = export(&meter, ExportFormat::Csv, TimeRange::all(), None)
        .await
        .unwrap();
    assert_eq!(text, csv_text(&csv.iter().collect::<Vec<_>>()));
    assert_eq!(n, 5);
    let json = json_lines(&session);
    let (n, text) = export(&meter, ExportFormat::JsonLines, TimeRange::all(), None)
        .await
        .unwrap();
    assert_eq!(text, jsonl_text(&json.iter().collect::<Vec<_>>()));
    assert_eq!(n, 5);

    // The paid call's figures are the call log's.
    let logged = meter.call("CA_1").await.unwrap().unwrap();
    assert_eq!((logged.billed_seconds, logged.coins), (Some(120), Some(60)));
    // The CSV field splits back into the callees.
    let mut reader = csv::Reader::from_reader(csv[2].as_bytes());
    reader.set_headers(csv::StringRecord::from(
        ExportKind::Calls.columns().to_vec(),
    ));
    let record = reader.records().next().unwrap().unwrap();
    assert_eq!(&record[3], format!("{QUOTED}:missed"));
    assert_clean(&meter).await;
}
on_both!(rows, every_call_is_one_row_in_csv_and_json_lines);

async fn calls_are_chosen_by_created_at_and_by_member(db: TestDb) {
    let meter = db.open().await;
    let session = log_calls(&meter).await;
    let csv = csv_lines(&session);
    let json = json_lines(&session);

    // [from, to) over created_at: CA_1 (T0) and CA_2 (T0 + 1 s), not CA_0
    // (before) nor CA_3 and CA_4 (at `to`).
    let range = TimeRange::new(T0, T0 + 2_000).unwrap();
    let (n, text) = export(&meter, ExportFormat::Csv, range, None)
        .await
        .unwrap();
    assert_eq!((n, text), (2, csv_text(&[&csv[1], &csv[2]])));
    let range = TimeRange::new(T0 + 1, T0 + 2_001).unwrap();
    let (n, text) = export(&meter, ExportFormat::JsonLines, range, None)
        .await
        .unwrap();
    assert_eq!((n, text), (3, jsonl_text(&[&json[2], &json[3], &json[4]])));
    // The range parsed as the CLI and the API parse it.
    let range = TimeRange::parse(Some("2023-11-14T22:13:20Z"), Some("1700000000001")).unwrap();
    let (n, text) = export(&meter, ExportFormat::Csv, range, None)
        .await
        .unwrap();
    assert_eq!((n, text), (1, csv_text(&[&csv[1]])));
    let range = TimeRange::new(T0 + 2_001, i64::MAX).unwrap();
    let (n, text) = export(&meter, ExportFormat::Csv, range, None)
        .await
        .unwrap();
    assert_eq!((n, text), (0, csv_text(&[])));
    let (n, text) = export(&meter, ExportFormat::JsonLines, range, None)
        .await
        .unwrap();
    assert_eq!((n, text), (0, String::new()));

    // One member's calls, as caller or as callee, with all their callees.
    let all = TimeRange::all();
    for (user, rows) in [
        ("host1", vec![1, 3, 4]),
        ("alice", vec![1, 3]),
        (QUOTED, vec![2]),
        ("host9", vec![0]),
        ("dave", vec![0]),
        ("host3", vec![3]),
    ] {
        let want: Vec<&String> = rows.iter().map(|&i| &csv[i]).collect();
        let (n, text) = export(&meter, ExportFormat::Csv, all, Some(user))
            .await
            .unwrap();
        assert_eq!((n, text), (rows.len() as u64, csv_text(&want)), "{user}");
        let want: Vec<&String> = rows.iter().map(|&i| &json[i]).collect();
        let (n, text) = export(&meter, ExportFormat::JsonLines, all, Some(user))
            .await
            .unwrap();
        assert_eq!((n, text), (rows.len() as u64, jsonl_text(&want)), "{user}");
    }
    // Both filters at once.
    let range = TimeRange::new(T0 + 1, i64::MAX).unwrap();
    let (n, text) = export(&meter, ExportFormat::Csv, range, Some("host1"))
        .await
        .unwrap();
    assert_eq!((n, text), (2, csv_text(&[&csv[3], &csv[4]])));
    // A member of no call and without a wallet is unknown; one with only a
    // wallet has no calls.
    let e = export(&meter, ExportFormat::Csv, all, Some("stranger"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unknown_account");
    meter.credit("erin", 5, "pay-2").await.unwrap();
    let (n, text) = export(&meter, ExportFormat::Csv, all, Some("erin"))
        .await
        .unwrap();
    assert_eq!((n, text), (0, csv_text(&[])));
}
on_both!(
    ranges_and_members,
    calls_are_chosen_by_created_at_and_by_member
);
