//! Exports: RFC 4180 CSV and JSON lines, [from, to) ranges, per-user
//! filters, and sessions that reconcile exactly with the ledger.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callgate_metering::{
    BillingTerms, CallType, EndReason, ExportFormat, ExportKind, SessionStart, TimeRange,
    UsageKind, UsageRecord,
};
use common::*;
use serde_json::Value;
use tokio::time::sleep;

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn csv_rows(text: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

async fn sessions_reconcile_with_the_ledger(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 500, "pay-1").await.unwrap();
    meter.credit("bob", 45, "pay-2").await.unwrap();
    // An awkward room name: comma, quote, non-ASCII.
    let room = "room, \"quoted\" — ₹";
    let mut handles = Vec::new();
    for (payer, payee, terms) in [
        (
            "alice",
            Some("host-1"),
            BillingTerms::new(13).with_commission_bps(2000),
        ),
        ("alice", None, BillingTerms::new(7).with_increments(1, 1)),
        (
            "bob",
            Some("host-2"),
            BillingTerms::new(60).with_commission_bps(3333),
        ),
    ] {
        handles.push(
            meter
                .start_session(SessionStart {
                    room: room.into(),
                    payer: payer.into(),
                    payee: payee.map(Into::into),
                    terms,
                    call_type: CallType::Video,
                    call_id: None,
                })
                .await
                .unwrap(),
        );
        sleep(Duration::from_millis(33_333)).await;
    }
    sleep(Duration::from_secs(100)).await;
    let mut ended = Vec::new();
    for h in handles {
        ended.push(h.end(EndReason::RoomClosed).await.unwrap());
    }
    let (header, rows) =
        csv_rows(&export_string(&meter, ExportKind::Sessions, ExportFormat::Csv).await);
    assert_eq!(header, ExportKind::Sessions.columns());
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["room"], room, "CSV quoting round-trips");
        assert_eq!(row["call_type"], "video");
    }
    let sessions =
        jsonl(&export_string(&meter, ExportKind::Sessions, ExportFormat::JsonLines).await);
    let ledger = jsonl(&export_string(&meter, ExportKind::Ledger, ExportFormat::JsonLines).await);
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0]["room"], room);
    let (mut coins, mut payee, mut platform) = (0, 0, 0);
    for s in &sessions {
        let id = s["session_id"].as_str().unwrap();
        let c = s["coins"].as_i64().unwrap();
        let p = s["payee_coins"].as_i64().unwrap();
        let f = s["platform_coins"].as_i64().unwrap();
        assert_eq!(p + f, c);
        let mine: Vec<&Value> = ledger.iter().filter(|l| l["session_id"] == id).collect();
        let sum = |kind: &str| -> i64 {
            mine.iter()
                .filter(|l| l["kind"] == kind)
                .map(|l| l["coins"].as_i64().unwrap())
                .sum()
        };
        assert_eq!((sum("charge"), sum("commission")), (p, f), "{id}");
        coins += c;
        payee += p;
        platform += f;
    }
    let kind_sum = |kind: &str| -> i64 {
        ledger
            .iter()
            .filter(|l| l["kind"] == kind)
            .map(|l| l["coins"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(kind_sum("charge"), payee);
    assert_eq!(kind_sum("commission"), platform);
    assert_eq!(kind_sum("credit"), 545);
    assert_eq!(meter.account("platform").await.unwrap(), platform);
    assert_eq!(
        meter.account("earnings:host-1").await.unwrap()
            + meter.account("earnings:host-2").await.unwrap(),
        payee
    );
    assert_eq!(
        meter.wallet("alice").await.unwrap().balance + meter.wallet("bob").await.unwrap().balance,
        545 - coins
    );
    assert_eq!(ended.iter().map(|s| s.coins).sum::<i64>(), coins);
    // bob (45 coins at 60/min) was cut at 45 s.
    let bob = sessions.iter().find(|s| s["payer"] == "bob").unwrap();
    assert_eq!(bob["end_reason"], "insufficient_balance");
    assert_eq!(bob["duration_ms"], 45_000);
    assert_eq!(bob["payee"], "host-2");
    assert!(sessions.iter().any(|s| s["payee"].is_null()));
    assert_clean(&meter).await;
}
on_both!(reconcile, sessions_reconcile_with_the_ledger);

async fn ranges_filters_and_usage(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 100, "pay-1").await.unwrap();
    let s = meter
        .start_session(start("alice", Some("host"), BillingTerms::new(1)))
        .await
        .unwrap();
    sleep(Duration::from_secs(10)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    let ended = summary.ended_ms;
    for (who, kind, from, to) in [
        ("alice", UsageKind::Video, 0, 10_000),
        ("host", UsageKind::Video, 0, 10_000),
        ("listener", UsageKind::Audio, 2_000, 9_001),
    ] {
        meter
            .record_usage(UsageRecord {
                room: "room-1".into(),
                identity: who.into(),
                kind,
                started_at_ms: T0 + from,
                ended_at_ms: T0 + to,
            })
            .await
            .unwrap();
    }
    let export = |kind, from, to, user: Option<&'static str>| {
        let meter = meter.clone();
        async move {
            let mut out = Vec::new();
            let range = TimeRange::new(from, to).unwrap();
            let n = match user {
                None => meter.export(kind, range, ExportFormat::Csv, &mut out).await,
                Some(u) => {
                    meter
                        .export_for_user(kind, range, ExportFormat::Csv, u, &mut out)
                        .await
                }
            };
            n.map(|n| (n, String::from_utf8(out).unwrap()))
        }
    };
    // [from, to): the session ended at `ended`.
    assert_eq!(
        export(ExportKind::Sessions, ended, ended + 1, None)
            .await
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        export(ExportKind::Sessions, ended - 1, ended, None)
            .await
            .unwrap()
            .0,
        0
    );
    let (n, text) = export(ExportKind::Sessions, 0, ended, None).await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        text,
        format!("{}\r\n", ExportKind::Sessions.columns().join(","))
    );
    // Usage: everyone, paid or not, by media kind.
    let (n, text) = export(ExportKind::Usage, 0, i64::MAX, None).await.unwrap();
    assert_eq!(n, 3);
    let (_, rows) = csv_rows(&text);
    let listener = rows.iter().find(|r| r["identity"] == "listener").unwrap();
    assert_eq!(listener["kind"], "audio");
    assert_eq!(listener["duration_ms"], "7001");
    assert_eq!(listener["seconds"], "8");
    assert_eq!(listener["started_at"], "2023-11-14T22:13:22.000Z");
    // Per user.
    assert_eq!(
        export(ExportKind::Usage, 0, i64::MAX, Some("listener"))
            .await
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        export(ExportKind::Sessions, 0, i64::MAX, Some("host"))
            .await
            .unwrap()
            .0,
        1
    );
    let (n, text) = export(ExportKind::Ledger, 0, i64::MAX, Some("alice"))
        .await
        .unwrap();
    assert_eq!(n, 2, "credit and charge: {text}");
    assert_eq!(
        export(ExportKind::Ledger, 0, i64::MAX, Some("stranger"))
            .await
            .unwrap_err()
            .code(),
        "unknown_account"
    );
    // Bad ranges are refused before a byte is written.
    let mut out = Vec::new();
    let e = meter
        .export(
            ExportKind::Ledger,
            TimeRange {
                from_ms: 5,
                to_ms: 5,
            },
            ExportFormat::Csv,
            &mut out,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_range");
    assert!(out.is_empty());
    let e = meter
        .record_usage(UsageRecord {
            room: "r".into(),
            identity: "x".into(),
            kind: UsageKind::Audio,
            started_at_ms: 10,
            ended_at_ms: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_range");
    assert_eq!(meter.count("participant_usage").await.unwrap(), 3);
}
on_both!(ranges, ranges_filters_and_usage);
