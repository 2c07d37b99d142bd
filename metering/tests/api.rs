//! The API's futures can be spawned (they are `Send`), and its types are
//! what the server expects.

use callgate_metering::{
    BillingTerms, CallType, EndReason, ExportFormat, ExportKind, Meter, MeterError, SessionHandle,
    SessionStart, TimeRange, UsageKind, UsageRecord,
};

fn send<T: Send>(_: &T) {}

#[allow(dead_code, unused_must_use)]
fn futures_are_send(meter: Meter, handle: SessionHandle) {
    send(&meter.credit("u", 1, "r"));
    send(&meter.wallet("u"));
    send(&meter.account("platform"));
    send(&meter.start_session(SessionStart {
        room: "r".into(),
        payer: "u".into(),
        payee: None,
        terms: BillingTerms::new(1),
        call_type: CallType::Audio,
        call_id: None,
    }));
    send(&meter.record_usage(UsageRecord {
        room: "r".into(),
        identity: "u".into(),
        kind: UsageKind::Audio,
        started_at_ms: 0,
        ended_at_ms: 1,
    }));
    send(&meter.export(
        ExportKind::Sessions,
        TimeRange::all(),
        ExportFormat::Csv,
        tokio::io::sink(),
    ));
    send(&meter.razorpay_webhook("sig", b"{}"));
    send(&meter.shutdown());
    send(&meter.audit());
    send(&handle.end(EndReason::Hangup));
}

#[test]
fn types_are_shareable() {
    fn sync_send<T: Send + Sync + Clone + 'static>() {}
    sync_send::<Meter>();
    sync_send::<callgate_metering::MeterEvent>();
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<MeterError>();
    let terms: BillingTerms = "x"
        .parse::<CallType>()
        .map(|_| BillingTerms::new(1))
        .unwrap_or_default();
    assert_eq!(terms.increments_text(), "60/60");
    for r in EndReason::ALL {
        assert_eq!(r.as_str().parse::<EndReason>().unwrap(), r);
    }
}
