//! Razorpay intake (docs/metering.md "Razorpay intake", "Refunds"): a
//! credit trusts only the order the backend made, never the payment's
//! client-set notes; a signed event that must not credit is refused,
//! changes nothing and is counted; refunds reverse exactly what they
//! should, once, and leave a debt rather than a negative wallet.

mod common;

use std::time::Duration;

use callgate_metering::{
    BillingTerms, EndReason, RazorpayOutcome, Refunded, RefusalReason, WalletView,
};
use common::razorpay::*;
use common::*;
use serde_json::{Value, json};
use tokio::time::sleep;

fn refused(reason: RefusalReason, detail: &str) -> RazorpayOutcome {
    RazorpayOutcome::Refused {
        reason,
        detail: detail.into(),
    }
}

fn refunded(
    refund_id: &str,
    payment_id: &str,
    user: &str,
    (coins, taken, debt): (i64, i64, i64),
    applied: bool,
) -> RazorpayOutcome {
    RazorpayOutcome::Refunded(Refunded {
        refund_id: refund_id.into(),
        payment_id: payment_id.into(),
        user: user.into(),
        coins,
        taken,
        debt,
        applied,
    })
}

fn wallet(user: &str, balance: i64, held: i64, debt: i64) -> WalletView {
    WalletView {
        user: user.into(),
        balance,
        held,
        available: balance - held,
        debt,
    }
}

fn credited(out: &RazorpayOutcome) -> (i64, i64, bool) {
    match out {
        RazorpayOutcome::Credited(c) => (c.coins, c.debt_repaid, c.applied),
        other => panic!("not credited: {other:?}"),
    }
}

async fn the_issue_attacks_credit_nothing(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    let out = hook(
        &meter,
        &order_paid("pay_ok", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    assert_eq!(
        out.to_string(),
        "credited 500 coins to u1 (razorpay:pay_ok)"
    );
    let users = ["u1", "mallory"];
    let before = books(&meter, &users).await;

    // 100 paise whose payment notes ask for a million coins: the old intake
    // credited 1000000. Through payment.captured the notes are not read at
    // all; through order.paid 100 INR paise is no price.
    let notes = json!({"user": "mallory", "coins": "1000000"});
    let out = hook(
        &meter,
        &payment_captured("pay_a1", 100, "INR", notes.clone()),
    )
    .await;
    assert_eq!(out.status(), "ignored");
    let mut body = order_paid("pay_a1", 100, "INR", json!({"user": "mallory"}));
    payment_of(&mut body)["notes"] = notes.clone();
    assert_eq!(
        hook(&meter, &body).await,
        refused(
            RefusalReason::UnknownPrice,
            "payment pay_a1: order order_pay_a1 of 100 INR has no notes.coins and no price in the table"
        )
    );
    // One US cent: the old intake gave it the 49900-paise price (500
    // coins). Prices are by amount and currency: 1 USD cent has none.
    assert_eq!(
        hook(
            &meter,
            &order_paid("pay_a2", 1, "USD", json!({"user": "mallory"}))
        )
        .await,
        refused(
            RefusalReason::UnknownPrice,
            "payment pay_a2: order order_pay_a2 of 1 USD has no notes.coins and no price in the table"
        )
    );
    // A cent paid on a 600-cent order.
    let mut body = order_paid("pay_a3", 600, "USD", json!({"user": "mallory"}));
    payment_of(&mut body)["amount"] = json!(1);
    assert_eq!(
        hook(&meter, &body).await,
        refused(
            RefusalReason::AmountMismatch,
            "payment pay_a3: paid 1 USD, order order_pay_a3 is for 600"
        )
    );
    assert_eq!(
        books(&meter, &users).await,
        before,
        "refusals change nothing"
    );
    assert_eq!(refused_total(&registry, "unknown_price"), 2);
    assert_eq!(refused_total(&registry, "amount_mismatch"), 1);
    assert_eq!(refused_total(&registry, "conflict"), 0);

    // Payment notes naming another user (and more coins): the order's
    // user gets the order's price.
    let mut body = order_paid("pay_a4", 49_900, "INR", json!({"user": "u1"}));
    payment_of(&mut body)["notes"] = notes;
    assert_eq!(
        hook(&meter, &body).await.to_string(),
        "credited 500 coins to u1 (razorpay:pay_a4)"
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 1000, 0, 0));
    assert_eq!(
        meter.wallet("mallory").await.unwrap(),
        wallet("mallory", 0, 0, 0)
    );
    assert_eq!(meter.account("funding").await.unwrap(), -1000);
    assert_clean(&meter).await;
}
on_both!(issue_attacks, the_issue_attacks_credit_nothing);

async fn mismatched_orders_are_refused_with_their_reason(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    hook(
        &meter,
        &order_paid("pay_ok", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    let before = books(&meter, &["u1"]).await;
    let user = || json!({"user": "u1"});
    let edit = |id: &str, f: &dyn Fn(&mut Value)| {
        let mut body = order_paid(id, 49_900, "INR", user());
        f(&mut body);
        body
    };
    let cases: Vec<(Value, RefusalReason, &str)> = vec![
        (
            edit("pay_m1", &|b| payment_of(b)["amount"] = json!(100)),
            RefusalReason::AmountMismatch,
            "payment pay_m1: paid 100 INR, order order_pay_m1 is for 49900",
        ),
        (
            edit("pay_m2", &|b| order_of(b)["amount_paid"] = json!(100)),
            RefusalReason::AmountMismatch,
            "payment pay_m2: order order_pay_m2 is for 49900 INR but has amount_paid 100",
        ),
        (
            edit("pay_m3", &|b| payment_of(b)["currency"] = json!("USD")),
            RefusalReason::CurrencyMismatch,
            "payment pay_m3: paid in USD, order order_pay_m3 is in INR",
        ),
        (
            edit("pay_m4", &|b| {
                payment_of(b)["order_id"] = json!("order_other")
            }),
            RefusalReason::OrderMismatch,
            "payment pay_m4: paid order order_other, the event's order is order_pay_m4",
        ),
        (
            edit("pay_m5", &|b| payment_of(b)["status"] = json!("authorized")),
            RefusalReason::NotCaptured,
            "payment pay_m5: status is authorized, not captured",
        ),
        (
            order_paid("pay_m6", 50_000, "INR", user()),
            RefusalReason::UnknownPrice,
            "payment pay_m6: order order_pay_m6 of 50000 INR has no notes.coins and no price in the table",
        ),
        (
            edit("pay_m7", &|b| {
                order_of(b)["notes"] = json!({"user": "u1", "coins": "lots"})
            }),
            RefusalReason::BadOrderNotes,
            "payment pay_m7: order order_pay_m7 notes.coins \"lots\" is not 1..=1000000000000000 coins",
        ),
        (
            edit("pay_m8", &|b| {
                order_of(b)["notes"] = json!({"user": "bad\nuser"})
            }),
            RefusalReason::BadOrderNotes,
            "payment pay_m8: order order_pay_m8 notes.user is not a user id",
        ),
        (
            edit("pay_m9", &|b| {
                payment_of(b).as_object_mut().unwrap().remove("currency");
            }),
            RefusalReason::Malformed,
            "payment `currency` is missing or not a string",
        ),
    ];
    for (body, reason, detail) in &cases {
        assert_eq!(hook(&meter, body).await, refused(*reason, detail));
    }
    // A signed body that is no JSON at all.
    let out = meter
        .razorpay_webhook(&rzp_sign("not json"), b"not json")
        .await
        .unwrap();
    assert_eq!(
        out,
        refused(
            RefusalReason::Malformed,
            "razorpay body is not JSON: expected ident at line 1 column 2"
        )
    );
    assert_eq!(
        books(&meter, &["u1"]).await,
        before,
        "refusals change nothing"
    );
    for (reason, n) in [
        ("amount_mismatch", 2),
        ("currency_mismatch", 1),
        ("order_mismatch", 1),
        ("not_captured", 1),
        ("unknown_price", 1),
        ("bad_order_notes", 2),
        ("malformed", 2),
        ("conflict", 0),
    ] {
        assert_eq!(refused_total(&registry, reason), n, "{reason}");
    }
    // An amount the table does not price credits what the backend wrote on
    // its order.
    let out = hook(
        &meter,
        &order_paid(
            "pay_m6",
            50_000,
            "INR",
            json!({"user": "u1", "coins": "42"}),
        ),
    )
    .await;
    assert_eq!(credited(&out), (42, 0, true));
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 542, 0, 0));
    assert_clean(&meter).await;
}
on_both!(mismatches, mismatched_orders_are_refused_with_their_reason);

async fn a_payment_credits_once_whatever_the_events(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    let captured = payment_captured("pay_1", 49_900, "INR", json!({"user": "u1"}));
    let paid = order_paid("pay_1", 49_900, "INR", json!({"user": "u1"}));
    assert_eq!(
        hook(&meter, &captured).await.to_string(),
        "ignored payment.captured: a payment's notes are the client's, so payment.captured \
         credits nothing; order.paid credits the payment"
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 0, 0, 0));
    let out = hook(&meter, &paid).await;
    assert_eq!((out.status(), credited(&out)), ("credited", (500, 0, true)));
    let after = books(&meter, &["u1", "u2"]).await;
    for body in [&paid, &captured, &paid] {
        let out = hook(&meter, body).await;
        assert!(matches!(out.status(), "duplicate" | "ignored"), "{out}");
    }
    assert_eq!(books(&meter, &["u1", "u2"]).await, after);
    // The same payment id on an order for someone else.
    assert_eq!(
        hook(
            &meter,
            &order_paid("pay_1", 49_900, "INR", json!({"user": "u2"}))
        )
        .await,
        refused(
            RefusalReason::Conflict,
            "payment pay_1: razorpay:pay_1 was already credited for 500 coins to wallet:u1"
        )
    );
    assert_eq!(books(&meter, &["u1", "u2"]).await, after);
    // A second payment Razorpay reports for the same order.
    let mut twice = order_paid("pay_2", 49_900, "INR", json!({"user": "u1"}));
    payment_of(&mut twice)["order_id"] = json!("order_pay_1");
    order_of(&mut twice)["id"] = json!("order_pay_1");
    assert_eq!(
        hook(&meter, &twice).await,
        refused(
            RefusalReason::Conflict,
            "payment pay_2: order order_pay_1 was already credited for payment pay_1"
        )
    );
    assert_eq!(books(&meter, &["u1", "u2"]).await, after);
    assert_eq!(refused_total(&registry, "conflict"), 2);
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 500, 0, 0));
    assert_eq!(meter.count("credits").await.unwrap(), 1);
    assert_eq!(meter.count("razorpay_payments").await.unwrap(), 1);
    assert_clean(&meter).await;
}
on_both!(credits_once, a_payment_credits_once_whatever_the_events);

async fn refunds_reverse_exact_coins(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    for (payment, user) in [("pay_1", "u1"), ("pay_2", "u2")] {
        hook(
            &meter,
            &order_paid(payment, 49_900, "INR", json!({"user": user})),
        )
        .await;
    }
    // 10000 of 49900 paise back is 100.2 coins: 101 (rounded up).
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_1", "pay_1", 10_000, 49_900, "INR")
        )
        .await,
        refunded("rfnd_1", "pay_1", "u1", (101, 101, 0), true)
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 399, 0, 0));
    // The rest: the two refunds together reverse exactly the 500.
    let out = hook(
        &meter,
        &refund("payment.refunded", "rfnd_2", "pay_1", 39_900, 49_900, "INR"),
    )
    .await;
    assert_eq!(out, refunded("rfnd_2", "pay_1", "u1", (399, 399, 0), true));
    assert_eq!(
        out.to_string(),
        "refund rfnd_2 of pay_1: 399 coins reversed from u1 (399 taken, 0 left as debt)"
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 0, 0, 0));
    // A full refund in one.
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_3", "pay_2", 49_900, 49_900, "INR")
        )
        .await,
        refunded("rfnd_3", "pay_2", "u2", (500, 500, 0), true)
    );
    assert_eq!(meter.account("funding").await.unwrap(), 0);
    let ledger = export_string(
        &meter,
        callgate_metering::ExportKind::Ledger,
        callgate_metering::ExportFormat::JsonLines,
    )
    .await;
    let refunds: Vec<(String, String, i64, String)> = ledger
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "refund")
        .map(|v| {
            (
                v["debit"].as_str().unwrap().to_owned(),
                v["credit"].as_str().unwrap().to_owned(),
                v["coins"].as_i64().unwrap(),
                v["reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let posting = |debit: &str, coins, reference: &str| {
        (
            debit.to_owned(),
            "funding".to_owned(),
            coins,
            reference.to_owned(),
        )
    };
    assert_eq!(
        refunds,
        [
            posting("wallet:u1", 101, "razorpay-refund:rfnd_1"),
            posting("wallet:u1", 399, "razorpay-refund:rfnd_2"),
            posting("wallet:u2", 500, "razorpay-refund:rfnd_3"),
        ]
    );

    // More than was paid, or in another currency: refused, nothing changes.
    let before = books(&meter, &["u1", "u2"]).await;
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_4", "pay_1", 1, 49_900, "INR")
        )
        .await,
        refused(
            RefusalReason::RefundExceedsPayment,
            "refund rfnd_4 of pay_1: 1 more INR on top of 49900 refunded of 49900 paid"
        )
    );
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_5", "pay_2", 100, 49_900, "USD")
        )
        .await,
        refused(
            RefusalReason::CurrencyMismatch,
            "refund rfnd_5 of pay_2: refund in USD, payment in INR"
        )
    );
    let mut body = refund("refund.created", "rfnd_6", "pay_2", 100, 49_900, "INR");
    payment_of(&mut body)["id"] = json!("pay_1");
    assert_eq!(
        hook(&meter, &body).await,
        refused(
            RefusalReason::PaymentMismatch,
            "refund rfnd_6 is of pay_2, the event's payment is pay_1"
        )
    );
    assert_eq!(books(&meter, &["u1", "u2"]).await, before);
    assert_eq!(refused_total(&registry, "refund_exceeds_payment"), 1);
    assert_eq!(refused_total(&registry, "currency_mismatch"), 1);
    assert_eq!(refused_total(&registry, "payment_mismatch"), 1);
    let report = meter.audit().await.unwrap();
    assert_eq!(report.wallet_debt, 0);
    assert_clean(&meter).await;
}
on_both!(refund_figures, refunds_reverse_exact_coins);

async fn a_refund_delivered_twice_reverses_once(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    hook(
        &meter,
        &order_paid("pay_1", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    let created = refund("refund.created", "rfnd_1", "pay_1", 10_000, 49_900, "INR");
    assert_eq!(
        hook(&meter, &created).await,
        refunded("rfnd_1", "pay_1", "u1", (101, 101, 0), true)
    );
    let after = books(&meter, &["u1"]).await;
    // Razorpay reports one refund in refund.created and payment.refunded,
    // and redelivers either.
    let reported = refund("payment.refunded", "rfnd_1", "pay_1", 10_000, 49_900, "INR");
    for body in [&reported, &created, &reported] {
        let out = hook(&meter, body).await;
        assert_eq!(out, refunded("rfnd_1", "pay_1", "u1", (101, 101, 0), false));
        assert_eq!(out.to_string(), "refund rfnd_1 already applied");
    }
    assert_eq!(books(&meter, &["u1"]).await, after);
    // The same refund id with another amount is not the same refund.
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_1", "pay_1", 20_000, 49_900, "INR")
        )
        .await,
        refused(
            RefusalReason::Conflict,
            "refund rfnd_1 of pay_1: seen before as 10000 INR of pay_1"
        )
    );
    assert_eq!(books(&meter, &["u1"]).await, after);
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 399, 0, 0));
    assert_eq!(meter.count("razorpay_refunds").await.unwrap(), 1);
    assert_clean(&meter).await;
}
on_both!(refund_once, a_refund_delivered_twice_reverses_once);

/// docs/metering.md "Refunds", the example, figure by figure.
async fn a_refund_of_spent_coins_leaves_a_debt_not_a_negative_wallet(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    hook(
        &meter,
        &order_paid("pay_1", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    // 90 s of a 60 coins/min call, per started minute: 120 coins spent.
    let call = meter
        .start_session(start("u1", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(90)).await;
    assert_eq!(call.end(EndReason::Hangup).await.unwrap().coins, 120);
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 380, 0, 0));

    // A fifth of the money back: 100 coins, all there.
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_1", "pay_1", 9_980, 49_900, "INR")
        )
        .await,
        refunded("rfnd_1", "pay_1", "u1", (100, 100, 0), true)
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 280, 0, 0));
    // The rest: 400 more coins, of which 280 are there and 120 are owed.
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_2", "pay_1", 39_920, 49_900, "INR")
        )
        .await,
        refunded("rfnd_2", "pay_1", "u1", (400, 280, 120), true)
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 0, 0, 120));
    assert_eq!(meter.account("earnings:host").await.unwrap(), 120);
    assert_eq!(meter.account("funding").await.unwrap(), -120);
    let report = meter.audit().await.unwrap();
    assert_eq!(report.wallet_debt, 120);
    assert_clean(&meter).await;

    // No new paid call while the wallet owes.
    let before = books(&meter, &["u1"]).await;
    let e = meter
        .start_session(start("u1", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "insufficient_balance");
    assert_eq!(
        e.to_string(),
        "insufficient balance: u1 owes 120 coins of a refund"
    );
    assert_eq!(books(&meter, &["u1"]).await, before);

    // The next credits repay the debt first.
    let c = meter.credit("u1", 100, "topup-1").await.unwrap();
    assert_eq!((c.debt_repaid, c.balance), (100, 0));
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 0, 0, 20));
    let out = hook(
        &meter,
        &order_paid("pay_2", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    assert_eq!(
        out.to_string(),
        "credited 500 coins to u1 (razorpay:pay_2), 20 of them repaid a refund's debt"
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 480, 0, 0));
    // Every coin the payment bought came back: 100 and 280 at the refunds,
    // 100 and 20 from the next credits.
    let ledger = export_string(
        &meter,
        callgate_metering::ExportKind::Ledger,
        callgate_metering::ExportFormat::JsonLines,
    )
    .await;
    let refund_postings: Vec<(i64, String)> = ledger
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "refund" && v["debit"] == "wallet:u1" && v["credit"] == "funding")
        .map(|v| {
            (
                v["coins"].as_i64().unwrap(),
                v["reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        refund_postings,
        [
            (100, "razorpay-refund:rfnd_1".to_owned()),
            (280, "razorpay-refund:rfnd_2".to_owned()),
            (100, "topup-1".to_owned()),
            (20, "razorpay:pay_2".to_owned()),
        ]
    );
    assert_eq!(meter.account("funding").await.unwrap(), -600);
    let call = meter
        .start_session(start("u1", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    call.end(EndReason::Hangup).await.unwrap();
    assert_clean(&meter).await;
}
on_both!(
    refund_debt,
    a_refund_of_spent_coins_leaves_a_debt_not_a_negative_wallet
);

async fn coins_held_by_a_running_call_stay_with_the_call(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    hook(
        &meter,
        &order_paid("pay_1", 49_900, "INR", json!({"user": "u3"})),
    )
    .await;
    // Per second at 60 coins/min: the first block holds 60 coins.
    let call = meter
        .start_session(start(
            "u3",
            Some("host"),
            BillingTerms::new(60).with_increments(1, 1),
        ))
        .await
        .unwrap();
    assert_eq!(meter.wallet("u3").await.unwrap(), wallet("u3", 500, 60, 0));
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        hook(
            &meter,
            &refund("refund.created", "rfnd_1", "pay_1", 49_900, 49_900, "INR")
        )
        .await,
        refunded("rfnd_1", "pay_1", "u3", (500, 440, 60), true)
    );
    // The call keeps its hold (the wallet is never below what it holds)
    // and now ends where the hold does, at 60 s.
    assert_eq!(meter.wallet("u3").await.unwrap(), wallet("u3", 60, 60, 60));
    assert_eq!(call.seconds_left(), Some(30));
    assert_clean(&meter).await;
    assert_eq!(call.end(EndReason::Hangup).await.unwrap().coins, 30);
    // What the call did not use stays in the wallet, still owing.
    assert_eq!(meter.wallet("u3").await.unwrap(), wallet("u3", 30, 0, 60));
    let e = meter
        .start_session(start("u3", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "insufficient balance: u3 owes 60 coins of a refund"
    );
    // The next credit repays all 60 from the 30 left and the 100 new.
    let c = meter.credit("u3", 100, "topup-3").await.unwrap();
    assert_eq!((c.debt_repaid, c.balance), (60, 70));
    assert_eq!(meter.wallet("u3").await.unwrap(), wallet("u3", 70, 0, 0));
    assert_eq!(meter.account("earnings:host").await.unwrap(), 30);
    assert_clean(&meter).await;
}
on_both!(
    refund_while_held,
    coins_held_by_a_running_call_stay_with_the_call
);

async fn a_refund_before_its_payment_waits_for_the_credit(db: TestDb) {
    let meter = db.open_with(razorpay_config(&db)).await;
    // Webhooks come in any order: the refund first.
    let early = refund("refund.created", "rfnd_1", "pay_1", 10_000, 49_900, "INR");
    let out = hook(&meter, &early).await;
    assert_eq!(
        out,
        RazorpayOutcome::RefundPending {
            refund_id: "rfnd_1".into(),
            payment_id: "pay_1".into()
        }
    );
    assert_eq!(
        out.to_string(),
        "refund rfnd_1 recorded; payment pay_1 is not credited here (yet)"
    );
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 0, 0, 0));
    assert_eq!(meter.count("postings").await.unwrap(), 0);
    // The credit comes, and the refund with it.
    let paid = order_paid("pay_1", 49_900, "INR", json!({"user": "u1"}));
    assert_eq!(credited(&hook(&meter, &paid).await), (500, 0, true));
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 399, 0, 0));
    assert_eq!(
        hook(&meter, &early).await,
        refunded("rfnd_1", "pay_1", "u1", (101, 101, 0), false)
    );
    assert_eq!(credited(&hook(&meter, &paid).await), (500, 0, false));
    assert_eq!(meter.wallet("u1").await.unwrap(), wallet("u1", 399, 0, 0));
    assert_clean(&meter).await;
}
on_both!(
    refund_first,
    a_refund_before_its_payment_waits_for_the_credit
);
