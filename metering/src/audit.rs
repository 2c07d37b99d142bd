//! The money invariants, checked against the database (tests, and
//! operators who want to see the books balance).

use futures_util::TryStreamExt;

use crate::db::get;
use crate::error::MeterError;
use crate::ledger::AuditReport;
use crate::ledger::BALANCE_OF_A;
use crate::meter::Inner;
use crate::session::{SESSION_COLUMNS, core_of};

/// How many examples of one broken invariant are listed.
const EXAMPLES: i64 = 20;

pub(crate) async fn audit(inner: &Inner) -> Result<AuditReport, MeterError> {
    let pool = &inner.db.write;
    let mut r = AuditReport::default();
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) \
           + CAST((SELECT COALESCE(SUM(balance), 0) FROM account_shards) AS BIGINT) AS s, \
         CAST(COUNT(*) AS BIGINT) AS n FROM accounts",
    )
    .fetch_one(pool)
    .await?;
    r.balance_sum = get(&row, "s")?;
    r.accounts = get::<i64>(&row, "n")? as u64;
    if r.balance_sum != 0 {
        r.problems
            .push(format!("sum of balances is {}, not 0", r.balance_sum));
    }
    r.postings = sqlx::query_scalar::<_, i64>("SELECT CAST(COUNT(*) AS BIGINT) FROM postings")
        .fetch_one(pool)
        .await? as u64;

    // Each balance is the sum of its postings.
    let rows = sqlx::query(&format!(
        "SELECT a.id, {BALANCE_OF_A} AS balance, \
           CAST(COALESCE((SELECT SUM(coins) FROM postings WHERE credit = a.id), 0) AS BIGINT) \
         - CAST(COALESCE((SELECT SUM(coins) FROM postings WHERE debit = a.id), 0) AS BIGINT) AS posted \
         FROM accounts a WHERE {BALANCE_OF_A} <> \
           CAST(COALESCE((SELECT SUM(coins) FROM postings WHERE credit = a.id), 0) AS BIGINT) \
         - CAST(COALESCE((SELECT SUM(coins) FROM postings WHERE debit = a.id), 0) AS BIGINT) \
         LIMIT {EXAMPLES}"
    ))
    .fetch_all(pool)
    .await?;
    for row in rows {
        r.problems.push(format!(
            "account {} has balance {} but postings sum to {}",
            get::<String>(&row, "id")?,
            get::<i64>(&row, "balance")?,
            get::<i64>(&row, "posted")?
        ));
    }

    // Wallets: never below zero, held = the sum of their holds (sessions'
    // and calls' that have not started billing).
    const HOLDS_OF_WALLET: &str = "CAST(COALESCE((SELECT SUM(coins) FROM holds WHERE wallet = a.id), 0) \
          + COALESCE((SELECT SUM(coins) FROM call_holds WHERE wallet = a.id), 0) AS BIGINT)";
    let rows = sqlx::query(&format!(
        "SELECT a.id, a.balance, a.held, {HOLDS_OF_WALLET} AS holds \
         FROM accounts a WHERE a.kind = 'wallet' AND (a.balance < 0 OR a.held < 0 OR a.held > a.balance \
           OR a.held <> {HOLDS_OF_WALLET}) \
         LIMIT {EXAMPLES}"
    ))
    .fetch_all(pool)
    .await?;
    for row in rows {
        r.problems.push(format!(
            "wallet {}: balance {}, held {}, holds sum {}",
            get::<String>(&row, "id")?,
            get::<i64>(&row, "balance")?,
            get::<i64>(&row, "held")?,
            get::<i64>(&row, "holds")?
        ));
    }
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(coins), 0) AS BIGINT) AS s FROM \
         (SELECT coins FROM holds UNION ALL SELECT coins FROM call_holds) AS h",
    )
    .fetch_one(pool)
    .await?;
    r.open_holds = get::<i64>(&row, "n")? as u64;
    r.held = get(&row, "s")?;

    // Holds belong to open sessions, one each; postings never target
    // another session's payer.
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM holds h JOIN sessions s ON s.id = h.session_id \
         WHERE s.state <> 'open' OR h.wallet <> 'wallet:' || s.payer",
    )
    .fetch_one(pool)
    .await?;
    if n > 0 {
        r.problems
            .push(format!("{n} holds of ended sessions or of another wallet"));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM sessions s WHERE s.state = 'open' \
         AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.session_id = s.id)",
    )
    .fetch_one(pool)
    .await?;
    if n > 0 {
        r.problems.push(format!("{n} open sessions without a hold"));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM postings p JOIN sessions s ON s.id = p.session_id \
         WHERE p.debit <> 'wallet:' || s.payer \
            OR (p.kind = 'charge' AND (s.payee IS NULL OR p.credit <> 'earnings:' || s.payee)) \
            OR (p.kind = 'commission' AND p.credit <> 'platform') \
            OR p.kind = 'credit'",
    )
    .fetch_one(pool)
    .await?;
    if n > 0 {
        r.problems
            .push(format!("{n} session postings between the wrong accounts"));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM credits c JOIN postings p ON p.id = c.posting_id \
         WHERE p.coins <> c.coins OR p.credit <> c.wallet OR p.debit <> 'funding' OR p.kind <> 'credit'",
    )
    .fetch_one(pool)
    .await?;
    let orphans: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM postings p WHERE p.kind = 'credit' \
         AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.posting_id = p.id)",
    )
    .fetch_one(pool)
    .await?;
    if n + orphans > 0 {
        r.problems.push(format!(
            "{n} credits unlike their posting, {orphans} credit postings without a credit"
        ));
    }

    refund_invariants(pool, &mut r).await?;

    // Each session: its postings are its figures, its figures its rating.
    let sql = format!(
        "SELECT {SESSION_COLUMNS}, \
           CAST(COALESCE((SELECT SUM(coins) FROM postings p WHERE p.session_id = s.id AND p.kind = 'charge'), 0) AS BIGINT) AS posted_payee, \
           CAST(COALESCE((SELECT SUM(coins) FROM postings p WHERE p.session_id = s.id AND p.kind = 'commission'), 0) AS BIGINT) AS posted_platform, \
           CAST(COALESCE((SELECT SUM(coins) FROM holds h WHERE h.session_id = s.id), 0) AS BIGINT) AS hold \
         FROM sessions s"
    );
    let mut rows = sqlx::query(&sql).fetch(pool);
    let block_s = inner.config.block_secs();
    let mut bad_sessions = 0;
    while let Some(row) = rows.try_next().await? {
        let state: String = get(&row, "state")?;
        let hold: i64 = get(&row, "hold")?;
        let (core, l) = core_of(&row, hold, block_s)?;
        let posted_payee: i64 = get(&row, "posted_payee")?;
        let posted_platform: i64 = get(&row, "posted_platform")?;
        let mut wrong = Vec::new();
        if posted_payee != l.payee_coins || posted_platform != l.platform_coins {
            wrong.push(format!(
                "postings {posted_payee}+{posted_platform} vs figures {}+{}",
                l.payee_coins, l.platform_coins
            ));
        }
        let split = core.terms.split(l.coins, core.payee.is_some());
        if split.payee != l.payee_coins || split.platform != l.platform_coins {
            wrong.push(format!(
                "split {}+{} of {} is not {}+{}",
                l.payee_coins, l.platform_coins, l.coins, split.payee, split.platform
            ));
        }
        if state == "open" {
            r.open_sessions += 1;
            let start_cost = core.terms.cost((l.block_start_ms / 1000) as u64);
            let want_hold = match l.limit {
                Some(limit) => limit - l.coins,
                None => core.terms.cost((l.block_end_ms / 1000) as u64) - l.coins,
            };
            if l.coins != start_cost || hold != want_hold {
                wrong.push(format!(
                    "open: coins {} hold {} (want {start_cost}, {want_hold})",
                    l.coins, hold
                ));
            }
        } else {
            r.ended_sessions += 1;
            let duration: i64 = get(&row, "duration_ms")?;
            let billed: i64 = get(&row, "billed_seconds")?;
            let (want_billed, want_coins) = core.terms.rate_at(duration, l.limit);
            if billed != want_billed || l.coins != want_coins || hold != 0 {
                wrong.push(format!(
                    "ended after {duration} ms: billed {billed} s for {} coins (want {want_billed} s, {want_coins}); hold {hold}",
                    l.coins
                ));
            }
            if duration > l.block_end_ms {
                wrong.push(format!(
                    "ran {duration} ms past its hold's end {}",
                    l.block_end_ms
                ));
            }
        }
        if !wrong.is_empty() {
            bad_sessions += 1;
            if bad_sessions <= EXAMPLES {
                r.problems
                    .push(format!("session {}: {}", core.id, wrong.join("; ")));
            }
        }
    }
    if bad_sessions > EXAMPLES {
        r.problems.push(format!(
            "… {} more sessions with problems",
            bad_sessions - EXAMPLES
        ));
    }
    Ok(r)
}

/// Refunds (docs/metering.md "Refunds"): a `refund` posting goes from a
/// wallet to funding; what each payment's refunds reversed is what its
/// refund rows say and what the rounding rule says; per wallet, the coins
/// reversed are exactly the coins taken back plus the debt.
async fn refund_invariants(pool: &sqlx::AnyPool, r: &mut AuditReport) -> Result<(), MeterError> {
    r.wallet_debt =
        sqlx::query_scalar::<_, i64>("SELECT CAST(COALESCE(SUM(debt), 0) AS BIGINT) FROM accounts")
            .fetch_one(pool)
            .await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM postings WHERE kind = 'refund' \
         AND (credit <> 'funding' OR debit NOT LIKE 'wallet:%' OR session_id IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?;
    let not_wallets: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM accounts WHERE debt <> 0 AND (kind <> 'wallet' OR debt < 0)",
    )
    .fetch_one(pool)
    .await?;
    if n + not_wallets > 0 {
        r.problems.push(format!(
            "{n} refund postings between the wrong accounts, {not_wallets} debts on non-wallets"
        ));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM razorpay_payments r WHERE NOT EXISTS \
         (SELECT 1 FROM credits c WHERE c.reference = 'razorpay:' || r.payment_id \
          AND c.wallet = r.wallet AND c.coins = r.coins)",
    )
    .fetch_one(pool)
    .await?;
    let unposted: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM razorpay_refunds f WHERE f.taken > 0 AND NOT EXISTS \
         (SELECT 1 FROM postings p WHERE p.idempotency_key = 'refund/' || f.refund_id \
          AND p.kind = 'refund' AND p.coins = f.taken)",
    )
    .fetch_one(pool)
    .await?;
    if n + unposted > 0 {
        r.problems.push(format!(
            "{n} razorpay payments without their credit, {unposted} refunds without their posting"
        ));
    }
    let mut rows = sqlx::query(
        "SELECT p.payment_id, p.amount, p.coins, p.reversed_coins, \
           CAST(COALESCE((SELECT SUM(f.amount) FROM razorpay_refunds f \
             WHERE f.payment_id = p.payment_id AND f.coins IS NOT NULL), 0) AS BIGINT) AS refunded, \
           CAST(COALESCE((SELECT SUM(f.coins) FROM razorpay_refunds f \
             WHERE f.payment_id = p.payment_id AND f.coins IS NOT NULL), 0) AS BIGINT) AS refund_coins \
         FROM razorpay_payments p WHERE p.reversed_coins > 0 OR EXISTS \
           (SELECT 1 FROM razorpay_refunds f WHERE f.payment_id = p.payment_id AND f.coins IS NOT NULL)",
    )
    .fetch(pool);
    let mut wrong = 0;
    while let Some(row) = rows.try_next().await? {
        let payment: String = get(&row, "payment_id")?;
        let amount: i64 = get(&row, "amount")?;
        let coins: i64 = get(&row, "coins")?;
        let reversed: i64 = get(&row, "reversed_coins")?;
        let refunded: i64 = get(&row, "refunded")?;
        let refund_coins: i64 = get(&row, "refund_coins")?;
        let want = crate::refund::reversed_coins(coins, amount, refunded);
        if reversed != want || refund_coins != reversed {
            wrong += 1;
            if wrong <= EXAMPLES {
                r.problems.push(format!(
                    "razorpay payment {payment}: {refunded} of {amount} refunded reversed {reversed} \
                     of {coins} coins (want {want}); its refunds say {refund_coins}"
                ));
            }
        }
    }
    drop(rows);
    let rows = sqlx::query(&format!(
        "SELECT a.id, a.debt, {taken} AS taken, {reversed} AS reversed FROM accounts a \
         WHERE a.kind = 'wallet' AND a.debt + {taken} <> {reversed} LIMIT {EXAMPLES}",
        taken = "CAST(COALESCE((SELECT SUM(p.coins) FROM postings p \
                   WHERE p.kind = 'refund' AND p.debit = a.id), 0) AS BIGINT)",
        reversed = "CAST(COALESCE((SELECT SUM(f.reversed_coins) FROM razorpay_payments f \
                   WHERE f.wallet = a.id), 0) AS BIGINT)",
    ))
    .fetch_all(pool)
    .await?;
    for row in rows {
        r.problems.push(format!(
            "wallet {}: refunds reversed {} coins but {} were taken back and {} are owed",
            get::<String>(&row, "id")?,
            get::<i64>(&row, "reversed")?,
            get::<i64>(&row, "taken")?,
            get::<i64>(&row, "debt")?
        ));
    }
    Ok(())
}
