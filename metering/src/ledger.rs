//! Double-entry ledger primitives, used inside one write transaction.
//!
//! Lock order, to keep PostgreSQL free of deadlocks: a transaction touches
//! at most one wallet and locks it first (`lock_wallet`), then the other
//! accounts, with `platform` and `funding` (the hot rows) last, just before
//! the commit.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::db::get;
use crate::error::MeterError;

pub(crate) type Tx = Transaction<'static, Any>;

pub const PLATFORM: &str = "platform";
pub const FUNDING: &str = "funding";

pub fn wallet_id(user: &str) -> String {
    format!("wallet:{user}")
}

pub fn earnings_id(user: &str) -> String {
    format!("earnings:{user}")
}

/// Largest coin amount one credit may carry (keeps every sum far from
/// overflow).
pub const MAX_COINS: i64 = 1_000_000_000_000_000;

/// A wallet row as of one moment: `version` grows with every change, so a
/// newer snapshot can be told from an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WalletSnap {
    pub balance: i64,
    pub held: i64,
    pub version: i64,
}

impl WalletSnap {
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }

    fn from_row(row: &AnyRow) -> Result<WalletSnap, MeterError> {
        Ok(WalletSnap {
            balance: get(row, "balance")?,
            held: get(row, "held")?,
            version: get(row, "version")?,
        })
    }
}

/// Creates an account when missing (no effect on balances).
pub(crate) async fn ensure_account(
    tx: &mut Tx,
    id: &str,
    kind: &str,
    now_ms: i64,
) -> Result<(), MeterError> {
    sqlx::query(
        "INSERT INTO accounts (id, kind, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks a wallet row for this transaction and reads it; None when the
/// wallet does not exist.
pub(crate) async fn lock_wallet(
    tx: &mut Tx,
    wallet: &str,
) -> Result<Option<WalletSnap>, MeterError> {
    let row = sqlx::query(
        "UPDATE accounts SET version = version + 1 WHERE id = $1 AND kind = 'wallet' \
         RETURNING balance, held, version",
    )
    .bind(wallet)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(WalletSnap::from_row).transpose()
}

/// Moves a locked wallet: `balance += balance_delta`, `held += held_delta`.
pub(crate) async fn change_wallet(
    tx: &mut Tx,
    wallet: &str,
    balance_delta: i64,
    held_delta: i64,
) -> Result<WalletSnap, MeterError> {
    let row = sqlx::query(
        "UPDATE accounts SET balance = balance + $2, held = held + $3 WHERE id = $1 \
         RETURNING balance, held, version",
    )
    .bind(wallet)
    .bind(balance_delta)
    .bind(held_delta)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| MeterError::Internal(format!("wallet {wallet} vanished")))?;
    let snap = WalletSnap::from_row(&row)?;
    if snap.balance < 0 || snap.held < 0 || snap.held > snap.balance {
        // The CHECK constraint refuses this too; never commit it.
        return Err(MeterError::Internal(format!(
            "wallet {wallet} would be balance {} held {}",
            snap.balance, snap.held
        )));
    }
    Ok(snap)
}

/// `balance += delta` on a non-wallet account.
pub(crate) async fn change_balance(
    tx: &mut Tx,
    account: &str,
    delta: i64,
) -> Result<(), MeterError> {
    if delta == 0 {
        return Ok(());
    }
    let done = sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
        .bind(account)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(MeterError::Internal(format!(
            "account {account} is missing"
        )));
    }
    Ok(())
}

/// Rows a sharded account's balance is spread over.
pub(crate) const SHARDS: u32 = 16;

/// An account's balance in SQL, its shards included, for an `accounts`
/// row aliased `a`.
pub(crate) const BALANCE_OF_A: &str = "(a.balance + CAST(COALESCE((SELECT SUM(s.balance) \
     FROM account_shards s WHERE s.account = a.id), 0) AS BIGINT))";

/// `balance += delta` on the platform account, on the shard `key` (the
/// session's id) picks: settles of different sessions mostly lock
/// different rows (module docs: the platform row is taken last, and now
/// rarely the same one twice at once).
pub(crate) async fn change_platform_balance(
    tx: &mut Tx,
    key: &str,
    delta: i64,
) -> Result<(), MeterError> {
    if delta == 0 {
        return Ok(());
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = key.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    sqlx::query(
        "INSERT INTO account_shards (account, shard, balance) VALUES ($1, $2, $3) \
         ON CONFLICT (account, shard) DO UPDATE SET balance = account_shards.balance + excluded.balance",
    )
    .bind(PLATFORM)
    .bind(i64::from(hash % SHARDS))
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One posting. Returns its id. The caller moves the two balances.
pub(crate) struct Posting<'a> {
    pub at_ms: i64,
    pub debit: &'a str,
    pub credit: &'a str,
    pub coins: i64,
    pub kind: &'static str,
    pub session: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub key: String,
}

pub(crate) async fn insert_posting(tx: &mut Tx, p: &Posting<'_>) -> Result<i64, MeterError> {
    if p.coins <= 0 {
        return Err(MeterError::Internal(format!(
            "posting of {} coins ({})",
            p.coins, p.key
        )));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO postings (at_ms, debit, credit, coins, kind, session_id, reference, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(p.at_ms)
    .bind(p.debit)
    .bind(p.credit)
    .bind(p.coins)
    .bind(p.kind)
    .bind(p.session)
    .bind(p.reference)
    .bind(&p.key)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// An account name as the API accepts it.
pub(crate) fn check_account_name(name: &str) -> Result<(), MeterError> {
    let ok = match name.split_once(':') {
        Some(("wallet" | "earnings", user)) => crate::check_id("user", user).is_ok(),
        Some(_) => false,
        None => name == PLATFORM || name == FUNDING,
    };
    if ok {
        Ok(())
    } else {
        Err(MeterError::UnknownAccount(format!(
            "`{name}` is not wallet:<user>, earnings:<user>, platform or funding"
        )))
    }
}

/// What [`crate::Meter::audit`] finds: every money invariant, checked
/// against the database. `problems` is empty when the books are right.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Sum of all account balances (must be 0).
    pub balance_sum: i64,
    pub accounts: u64,
    pub postings: u64,
    pub open_sessions: u64,
    pub ended_sessions: u64,
    /// Holds of open sessions and of calls not yet billed.
    pub open_holds: u64,
    /// Coins held by open holds, over all wallets.
    pub held: i64,
    /// Coins refunds could not take back, over all wallets.
    pub wallet_debt: i64,
    /// Each broken invariant, in words.
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}
