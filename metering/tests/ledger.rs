//! Credits, accounts and the ledger's invariants, on both databases.

mod common;

use callgate_metering::{BillingTerms, EndReason, MAX_COINS, WalletView};
use common::*;
use sqlx::Connection;

async fn credits_are_idempotent_on_their_reference(db: TestDb) {
    let meter = db.open().await;
    let first = meter.credit("u1", 100, "pay_1").await.unwrap();
    assert!(first.applied);
    assert_eq!((first.balance, first.available), (100, 100));
    let again = meter.credit("u1", 100, "pay_1").await.unwrap();
    assert!(!again.applied, "the same payment credits once");
    assert_eq!(again.balance, 100);
    assert_eq!(again.posting_id, first.posting_id);
    let postings = meter.count("postings").await.unwrap();
    let accounts = meter.count("accounts").await.unwrap();
    // Same reference, other coins or other user: a conflict, nothing changes.
    for (user, coins) in [("u1", 99), ("u2", 100)] {
        let e = meter.credit(user, coins, "pay_1").await.unwrap_err();
        assert_eq!(e.code(), "conflict", "{e}");
        assert_eq!(e.http_status(), 409);
    }
    // Bad input: refused, nothing changes (not even an empty wallet).
    for (user, coins, reference, code) in [
        ("u3", 0, "pay_2", "invalid_amount"),
        ("u3", -5, "pay_2", "invalid_amount"),
        ("u3", MAX_COINS + 1, "pay_2", "invalid_amount"),
        ("", 5, "pay_2", "invalid_identifier"),
        ("u3", 5, "", "invalid_identifier"),
        ("u\n3", 5, "pay_2", "invalid_identifier"),
        // The Razorpay intake's own references.
        ("u3", 5, "razorpay:pay_2", "invalid_identifier"),
    ] {
        let e = meter.credit(user, coins, reference).await.unwrap_err();
        assert_eq!(e.code(), code, "{user:?} {coins} {reference:?}");
    }
    assert_eq!(meter.count("postings").await.unwrap(), postings);
    assert_eq!(meter.count("accounts").await.unwrap(), accounts);
    assert_eq!(meter.wallet("u1").await.unwrap().balance, 100);
    assert_eq!(
        meter.wallet("u2").await.unwrap(),
        WalletView {
            user: "u2".into(),
            balance: 0,
            held: 0,
            available: 0,
            debt: 0,
        }
    );
    meter.credit("u1", 50, "pay_3").await.unwrap();
    assert_eq!(meter.account("wallet:u1").await.unwrap(), 150);
    assert_eq!(meter.account("funding").await.unwrap(), -150);
    assert_eq!(meter.account("platform").await.unwrap(), 0);
    assert_eq!(meter.account("earnings:nobody").await.unwrap(), 0);
    for bad in ["bogus", "wallet:", "earnings", "cash:u1", "wallet:\u{7}"] {
        assert_eq!(
            meter.account(bad).await.unwrap_err().code(),
            "unknown_account",
            "{bad}"
        );
    }
    assert_clean(&meter).await;
}
on_both!(
    idempotent_credits,
    credits_are_idempotent_on_their_reference
);

async fn a_credit_that_would_overflow_the_ledger_is_refused(db: TestDb) {
    let meter = db.open().await;
    meter.credit("u1", 5, "pay_1").await.unwrap();
    // What ~9.2 million max-size credits would leave: funding one
    // MAX_COINS credit away from i64::MIN (u1's wallet stays as it was, so
    // the books do not balance here; this is about the arithmetic).
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let near_min = i64::MIN + MAX_COINS;
    sqlx::query("UPDATE accounts SET balance = $1 WHERE id = 'funding'")
        .bind(near_min)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let postings = meter.count("postings").await.unwrap();
    let accounts = meter.count("accounts").await.unwrap();
    let e = meter.credit("u2", MAX_COINS, "pay_2").await.unwrap_err();
    assert_eq!(e.code(), "invalid_amount", "{e}");
    assert_eq!(
        e.to_string(),
        "invalid amount: 1000000000000000 coins would take the funding account's balance out of range"
    );
    // Nothing changed: no posting, no wallet for u2, funding as it was.
    assert_eq!(meter.count("postings").await.unwrap(), postings);
    assert_eq!(meter.count("accounts").await.unwrap(), accounts);
    assert_eq!(meter.wallet("u2").await.unwrap().balance, 0);
    assert_eq!(meter.account("funding").await.unwrap(), near_min);
    // One coin less still fits exactly.
    let ok = meter.credit("u2", MAX_COINS - 1, "pay_3").await.unwrap();
    assert_eq!(ok.balance, MAX_COINS - 1);
    assert_eq!(meter.account("funding").await.unwrap(), i64::MIN + 1);
}
on_both!(
    overflowing_credit,
    a_credit_that_would_overflow_the_ledger_is_refused
);

async fn concurrent_credits_with_one_reference_apply_once(db: TestDb) {
    let meter = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let m = meter.clone();
        tasks.push(tokio::spawn(async move {
            let same = m.credit("u1", 10, "pay_same").await.unwrap();
            let own = m.credit("u1", 1, &format!("pay_{i}")).await.unwrap();
            (same.applied, own.applied)
        }));
    }
    let mut applied = 0;
    for t in tasks {
        let (same, own) = t.await.unwrap();
        applied += i32::from(same);
        assert!(own);
    }
    assert_eq!(applied, 1);
    assert_eq!(meter.wallet("u1").await.unwrap().balance, 10 + 12);
    assert_eq!(meter.count("credits").await.unwrap(), 13);
    assert_clean(&meter).await;
}
on_both!(
    concurrent_credits,
    concurrent_credits_with_one_reference_apply_once
);

async fn the_books_survive_a_reopen(db: TestDb) {
    let meter = db.open().await;
    meter.credit("u1", 70, "pay_1").await.unwrap();
    meter.shutdown().await;
    assert_eq!(
        meter.credit("u1", 1, "pay_x").await.unwrap_err().code(),
        "shutting_down"
    );
    let meter = db.open().await;
    assert_eq!(meter.wallet("u1").await.unwrap().balance, 70);
    assert!(!meter.credit("u1", 70, "pay_1").await.unwrap().applied);
    let report = meter.audit().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.accounts, report.postings), (3, 1));
}
on_both!(reopen, the_books_survive_a_reopen);

async fn the_platform_balance_is_spread_over_rows_and_reads_as_one(db: TestDb) {
    let meter = db.open().await;
    let mut platform = 0;
    for i in 0..24 {
        let payer = format!("payer-{i}");
        meter
            .credit(&payer, 100, &format!("pay-{i}"))
            .await
            .unwrap();
        let s = meter
            .start_session(start(
                &payer,
                Some("host"),
                BillingTerms::new(10).with_commission_bps(2000),
            ))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(61)).await;
        platform += s.end(EndReason::Hangup).await.unwrap().platform_coins;
    }
    // Two started minutes of 10 coins, 20 % of each to the platform.
    assert_eq!(platform, 24 * 4);
    // Settles of different sessions move different rows…
    let shards = meter.count("account_shards").await.unwrap();
    assert!((2..=16).contains(&shards), "{shards} shards");
    // …and the account reads as their sum, which its postings agree with.
    assert_eq!(meter.account("platform").await.unwrap(), platform);
    let report = meter.audit().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
}
on_both!(
    platform_shards,
    the_platform_balance_is_spread_over_rows_and_reads_as_one
);

/// Writes a ledger as the first schema (before refunds) made it: one
/// credit of 7 coins to u1 with reference `old-1`. Returns its posting id.
fn ledger_before_refunds(db: &TestDb) -> i64 {
    let dialect = if db.postgres { "postgres" } else { "sqlite" };
    let first = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect)
        .join("0001_ledger.sql");
    let dir = std::env::temp_dir()
        .join("callgate-metering-tests")
        .join(format!("m{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&first, dir.join("0001_ledger.sql")).unwrap();
    let url = db.url.clone();
    // Its own runtime, so tokio's paused clock stays still meanwhile.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            sqlx::migrate::Migrator::new(dir)
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO accounts (id, kind, balance, created_ms) VALUES ('wallet:u1', 'wallet', 7, 0)",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("UPDATE accounts SET balance = -7 WHERE id = 'funding'")
                .execute(&mut *tx)
                .await
                .unwrap();
            let posting: i64 = sqlx::query_scalar(
                "INSERT INTO postings (at_ms, debit, credit, coins, kind, reference, idempotency_key) \
                 VALUES (0, 'funding', 'wallet:u1', 7, 'credit', 'old-1', 'credit/old-1') RETURNING id",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO credits (reference, wallet, coins, posting_id, at_ms) VALUES ('old-1', 'wallet:u1', 7, $1, 0)",
            )
            .bind(posting)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            pool.close().await;
            posting
        })
    })
    .join()
    .unwrap()
}

async fn a_ledger_from_before_refunds_keeps_its_books(db: TestDb) {
    let posting = ledger_before_refunds(&db);
    // Opening runs the refunds migration (SQLite rebuilds `postings`).
    let meter = db.open_with(common::razorpay::razorpay_config(&db)).await;
    assert_eq!(
        meter.wallet("u1").await.unwrap(),
        WalletView {
            user: "u1".into(),
            balance: 7,
            held: 0,
            available: 7,
            debt: 0,
        }
    );
    let old = meter.credit("u1", 7, "old-1").await.unwrap();
    assert!(!old.applied, "the old credit is still known");
    assert_eq!(old.posting_id, posting);
    assert_eq!(meter.count("postings").await.unwrap(), 1);
    // And the new posting kind is accepted.
    common::razorpay::hook(
        &meter,
        &common::razorpay::order_paid("pay_1", 49_900, "INR", serde_json::json!({"user": "u1"})),
    )
    .await;
    let out = common::razorpay::hook(
        &meter,
        &common::razorpay::refund("refund.created", "rfnd_1", "pay_1", 49_900, 49_900, "INR"),
    )
    .await;
    assert_eq!(out.status(), "refunded");
    assert_eq!(meter.wallet("u1").await.unwrap().balance, 7);
    assert_eq!(meter.count("postings").await.unwrap(), 3);
    assert_clean(&meter).await;
}
on_both!(migrated, a_ledger_from_before_refunds_keeps_its_books);
