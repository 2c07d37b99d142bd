//! Refunds of Razorpay payments: the coins a refunded payment credited go
//! back, wallet → funding (`refund` postings), in proportion to the money
//! returned (docs/metering.md "Refunds").
//!
//! A refund is recorded by its id (Razorpay may report one refund in
//! `refund.created` and `payment.refunded`, each redelivered: it is applied
//! once), then applied to its payment under the payment's wallet lock. The
//! coins a refund reverses are computed on the running total refunded, so
//! two half refunds reverse exactly what one full refund would:
//! `reversed = ceil(coins × refunded / amount)`. What the wallet cannot give
//! back (spent, or held by a running call) becomes the wallet's `debt`: the
//! wallet never goes below zero; its next credit repays the debt first, and
//! it starts no paid call meanwhile.
//!
//! Recording and applying are two transactions, and a payment's credit
//! applies its refunds after its own commit: whichever of a refund and its
//! payment's credit commits last sees the other, so a refund that arrives
//! before the credit is applied when the credit comes.

use serde_json::json;

use crate::db::{get, is_unique_violation};
use crate::error::MeterError;
use crate::ledger::{self, Posting};
use crate::meter::Inner;
use crate::razorpay::{RazorpayOutcome, RefusalReason};
use crate::webhook::{self, events};

/// A refund as Razorpay reported it (checked for shape, not yet against
/// its payment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub refund_id: String,
    pub payment_id: String,
    /// Smallest currency unit, > 0.
    pub amount: i64,
    pub currency: String,
}

/// What a refund reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refunded {
    pub refund_id: String,
    pub payment_id: String,
    pub user: String,
    /// Coins this refund reversed: `taken + debt`.
    pub coins: i64,
    /// Taken from the wallet (a `refund` posting).
    pub taken: i64,
    /// Not in the wallet (spent or held): added to the wallet's debt.
    pub debt: i64,
    /// False when the refund had been applied before: nothing changed.
    pub applied: bool,
}

/// Coins owed back once `refunded` of a payment of `amount` that credited
/// `coins` has been returned: rounded up (a user keeps no coin bought with
/// money given back), all of them for a full refund, never more.
pub fn reversed_coins(coins: i64, amount: i64, refunded: i64) -> i64 {
    if amount <= 0 || coins <= 0 {
        return 0;
    }
    let refunded = i128::from(refunded.clamp(0, amount));
    let den = i128::from(amount);
    let owed = (i128::from(coins) * refunded + den - 1) / den;
    i64::try_from(owed).map_or(coins, |o| o.min(coins))
}

enum Recorded {
    /// Recorded now, or before with the same figures.
    Ok,
    Refused(RefusalReason, String),
}

/// Records a refund and applies it if its payment was credited here.
pub(crate) async fn intake(
    inner: &Inner,
    notice: &RefundNotice,
) -> Result<RazorpayOutcome, MeterError> {
    let recorded = match record(inner, notice).await {
        // A concurrent delivery of the same refund won: read it.
        Err(e) if is_unique_violation(&e) => record(inner, notice).await?,
        other => other?,
    };
    if let Recorded::Refused(reason, detail) = recorded {
        return Ok(RazorpayOutcome::Refused { reason, detail });
    }
    let applied_now = apply(inner, &notice.payment_id).await?;
    let _io = inner.clock.io_guard();
    let row = sqlx::query(
        "SELECT r.coins, r.taken, r.debt, p.wallet FROM razorpay_refunds r \
         LEFT JOIN razorpay_payments p ON p.payment_id = r.payment_id WHERE r.refund_id = $1",
    )
    .bind(&notice.refund_id)
    .fetch_one(&inner.db.write)
    .await?;
    let coins: Option<i64> = get(&row, "coins")?;
    let wallet: Option<String> = get(&row, "wallet")?;
    let (Some(coins), Some(wallet)) = (coins, wallet) else {
        return Ok(RazorpayOutcome::RefundPending {
            refund_id: notice.refund_id.clone(),
            payment_id: notice.payment_id.clone(),
        });
    };
    Ok(RazorpayOutcome::Refunded(Refunded {
        refund_id: notice.refund_id.clone(),
        payment_id: notice.payment_id.clone(),
        user: wallet
            .strip_prefix("wallet:")
            .unwrap_or(wallet.as_str())
            .to_owned(),
        coins,
        taken: get::<Option<i64>>(&row, "taken")?.unwrap_or(0),
        debt: get::<Option<i64>>(&row, "debt")?.unwrap_or(0),
        applied: applied_now.contains(&notice.refund_id),
    }))
}

/// Writes the refund's row, once per refund id, after checking it against
/// its payment when the payment is known.
async fn record(inner: &Inner, notice: &RefundNotice) -> Result<Recorded, MeterError> {
    let _io = inner.clock.io_guard();
    let now = inner.clock.now_ms();
    let mut tx = inner.db.begin().await?;
    let refusal = |reason, detail: String| {
        Ok(Recorded::Refused(
            reason,
            format!(
                "refund {} of {}: {detail}",
                notice.refund_id, notice.payment_id
            ),
        ))
    };
    let seen = sqlx::query(
        "SELECT payment_id, amount, currency FROM razorpay_refunds WHERE refund_id = $1",
    )
    .bind(&notice.refund_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = seen {
        tx.rollback().await?;
        let (payment_id, amount, currency): (String, i64, String) = (
            get(&row, "payment_id")?,
            get(&row, "amount")?,
            get(&row, "currency")?,
        );
        if payment_id == notice.payment_id && amount == notice.amount && currency == notice.currency
        {
            return Ok(Recorded::Ok);
        }
        return refusal(
            RefusalReason::Conflict,
            format!("seen before as {amount} {currency} of {payment_id}"),
        );
    }
    let payment =
        sqlx::query("SELECT amount, currency FROM razorpay_payments WHERE payment_id = $1")
            .bind(&notice.payment_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(payment) = payment {
        let paid: i64 = get(&payment, "amount")?;
        let currency: String = get(&payment, "currency")?;
        if currency != notice.currency {
            tx.rollback().await?;
            return refusal(
                RefusalReason::CurrencyMismatch,
                format!("refund in {}, payment in {currency}", notice.currency),
            );
        }
        let refunded: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM razorpay_refunds WHERE payment_id = $1",
        )
        .bind(&notice.payment_id)
        .fetch_one(&mut *tx)
        .await?;
        if refunded.saturating_add(notice.amount) > paid {
            tx.rollback().await?;
            return refusal(
                RefusalReason::RefundExceedsPayment,
                format!(
                    "{} more {currency} on top of {refunded} refunded of {paid} paid",
                    notice.amount
                ),
            );
        }
    }
    sqlx::query(
        "INSERT INTO razorpay_refunds (refund_id, payment_id, amount, currency, received_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&notice.refund_id)
    .bind(&notice.payment_id)
    .bind(notice.amount)
    .bind(&notice.currency)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recorded::Ok)
}

/// Applies every recorded, not yet applied refund of a credited payment, in
/// the order they came. Returns the refund ids applied now (none when the
/// payment is not credited here or has nothing waiting). Idempotent.
pub(crate) async fn apply(inner: &Inner, payment_id: &str) -> Result<Vec<String>, MeterError> {
    let (snap, user, applied) = {
        let _io = inner.clock.io_guard();
        let wallet: Option<String> =
            sqlx::query_scalar("SELECT wallet FROM razorpay_payments WHERE payment_id = $1")
                .bind(payment_id)
                .fetch_optional(&inner.db.write)
                .await?;
        let Some(wallet) = wallet else {
            return Ok(Vec::new());
        };
        let waiting: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM razorpay_refunds WHERE payment_id = $1 AND coins IS NULL",
        )
        .bind(payment_id)
        .fetch_one(&inner.db.write)
        .await?;
        if waiting == 0 {
            return Ok(Vec::new());
        }
        let now = inner.clock.now_ms();
        let mut tx = inner.db.begin().await?;
        // The wallet lock serializes every writer of this payment's rows.
        let mut snap = ledger::lock_wallet(&mut tx, &wallet)
            .await?
            .ok_or_else(|| MeterError::Internal(format!("{wallet} is not a wallet")))?;
        let payment = sqlx::query(
            "SELECT amount, coins, reversed_coins FROM razorpay_payments WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_one(&mut *tx)
        .await?;
        let paid: i64 = get(&payment, "amount")?;
        let credited: i64 = get(&payment, "coins")?;
        let mut reversed: i64 = get(&payment, "reversed_coins")?;
        let mut refunded: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM razorpay_refunds \
             WHERE payment_id = $1 AND coins IS NOT NULL",
        )
        .bind(payment_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut wallet_debt: i64 = sqlx::query_scalar("SELECT debt FROM accounts WHERE id = $1")
            .bind(&wallet)
            .fetch_one(&mut *tx)
            .await?;
        let waiting = sqlx::query(
            "SELECT refund_id, amount FROM razorpay_refunds WHERE payment_id = $1 AND coins IS NULL \
             ORDER BY received_ms, refund_id",
        )
        .bind(payment_id)
        .fetch_all(&mut *tx)
        .await?;
        let user = wallet
            .strip_prefix("wallet:")
            .unwrap_or(wallet.as_str())
            .to_owned();
        let mut applied = Vec::new();
        let mut taken_total: i64 = 0;
        for row in waiting {
            let refund_id: String = get(&row, "refund_id")?;
            let amount: i64 = get(&row, "amount")?;
            refunded = refunded.saturating_add(amount);
            let target = reversed_coins(credited, paid, refunded);
            let coins = (target - reversed).max(0);
            let taken = coins.min(snap.available().max(0));
            let debt = coins - taken;
            let mut posting_id = None;
            if taken > 0 {
                let reference = format!("razorpay-refund:{refund_id}");
                posting_id = Some(
                    ledger::insert_posting(
                        &mut tx,
                        &Posting {
                            at_ms: now,
                            debit: &wallet,
                            credit: ledger::FUNDING,
                            coins: taken,
                            kind: "refund",
                            session: None,
                            reference: Some(&reference),
                            key: format!("refund/{refund_id}"),
                        },
                    )
                    .await?,
                );
                snap = ledger::change_wallet(&mut tx, &wallet, -taken, 0).await?;
                taken_total += taken;
            }
            if debt > 0 {
                sqlx::query("UPDATE accounts SET debt = debt + $2 WHERE id = $1")
                    .bind(&wallet)
                    .bind(debt)
                    .execute(&mut *tx)
                    .await?;
                wallet_debt += debt;
            }
            let done = sqlx::query(
                "UPDATE razorpay_refunds SET coins = $2, taken = $3, debt = $4, applied_ms = $5 \
                 WHERE refund_id = $1 AND coins IS NULL",
            )
            .bind(&refund_id)
            .bind(coins)
            .bind(taken)
            .bind(debt)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(MeterError::Internal(format!(
                    "refund {refund_id} applied twice"
                )));
            }
            reversed = target;
            if inner.webhooks_on() {
                webhook::enqueue(
                    &mut tx,
                    events::WALLET_REFUNDED,
                    json!({
                        "user": user,
                        "refund_id": refund_id,
                        "payment_id": payment_id,
                        "coins": coins,
                        "taken": taken,
                        "debt": debt,
                        "posting_id": posting_id,
                        "balance": snap.balance,
                        "held": snap.held,
                        "available": snap.available(),
                        "wallet_debt": wallet_debt,
                    }),
                    now,
                )
                .await?;
            }
            applied.push(refund_id);
        }
        sqlx::query("UPDATE razorpay_payments SET reversed_coins = $2 WHERE payment_id = $1")
            .bind(payment_id)
            .bind(reversed)
            .execute(&mut *tx)
            .await?;
        ledger::change_balance(&mut tx, ledger::FUNDING, taken_total).await?;
        tx.commit().await?;
        (snap, user, applied)
    };
    if applied.is_empty() {
        return Ok(applied);
    }
    // Running calls of the user see the smaller wallet (their projected
    // cut moves closer) before the webhook is answered.
    inner.wallet_changed_acked(&user, snap, None).await;
    inner.outbox_written();
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::reversed_coins;

    #[test]
    fn reversal_is_proportional_rounded_up_and_whole_for_a_full_refund() {
        assert_eq!(reversed_coins(500, 49_900, 49_900), 500);
        assert_eq!(reversed_coins(500, 49_900, 0), 0);
        // 10000 of 49900 paise is 100.2 coins: 101.
        assert_eq!(reversed_coins(500, 49_900, 10_000), 101);
        assert_eq!(reversed_coins(500, 49_900, 1), 1);
        assert_eq!(reversed_coins(500, 50_000, 25_000), 250);
        // Never more than credited, whatever is claimed refunded.
        assert_eq!(reversed_coins(500, 49_900, 99_999), 500);
        assert_eq!(reversed_coins(500, 49_900, -5), 0);
        // No overflow at the extremes.
        assert_eq!(
            reversed_coins(crate::MAX_COINS, i64::MAX, i64::MAX - 1),
            crate::MAX_COINS
        );
        assert_eq!(reversed_coins(crate::MAX_COINS, i64::MAX, 1), 1);
    }
}
