//! Billed sessions: holds, captures, the cut-off timer, recovery.
//!
//! Each open session is one task (an actor) that owns its timers and
//! mirrors its row in `sessions`; every change to money is one write
//! transaction (`settle`), fenced on the row's `state` and `captures`
//! counter so that a stale or zombie actor can never post.
//!
//! The model (docs/metering.md "Holds"): the call is cut into blocks that
//! end on increment boundaries (`next_boundary`). While the payer's wallet
//! can fund the whole current block, a hold of its marginal cost is placed
//! and the block is rated by the increments. When it cannot, the hold takes
//! what the wallet has (`limit` = captured + hold) and the block becomes the
//! last stretch: rated per second, capped at `limit`, and cut at the
//! instant the pro-rata cost reaches `limit`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::call_log;
use crate::db::get;
use crate::error::MeterError;
use crate::ledger::{self, Posting, Tx, WalletSnap};
use crate::meter::{Inner, Meter, MeterEvent};
use crate::terms::{BillingTerms, CallType};
use crate::webhook::{self, events};

/// What starts a billed session.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub room: String,
    pub payer: String,
    /// The host who earns; None sends every coin to the platform.
    pub payee: Option<String>,
    pub terms: BillingTerms,
    pub call_type: CallType,
    /// The call (`CA_…`) this session bills, if it was started as one
    /// (docs/calls.md): the session takes over the call's hold.
    pub call_id: Option<String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Either side hung up (generic).
    Hangup,
    PayerLeft,
    PayeeLeft,
    RoomClosed,
    /// The meter cut the call: the wallet could fund no more time.
    InsufficientBalance,
    /// The server is stopping cleanly.
    Shutdown,
    /// The `SessionHandle` was dropped without `end`.
    Abandoned,
    /// Closed by recovery at its last checkpoint (its process died, or its
    /// hold expired).
    Recovered,
    /// The meter could not reach its database to fund the next block.
    MeterError,
    /// The payer or the payee was reconnecting for longer than the grace:
    /// charged up to the moment its media stopped (a normal end, not a cut).
    ConnectionLost,
}

impl EndReason {
    pub const ALL: [EndReason; 10] = [
        EndReason::Hangup,
        EndReason::PayerLeft,
        EndReason::PayeeLeft,
        EndReason::RoomClosed,
        EndReason::InsufficientBalance,
        EndReason::Shutdown,
        EndReason::Abandoned,
        EndReason::Recovered,
        EndReason::MeterError,
        EndReason::ConnectionLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::PayerLeft => "payer_left",
            EndReason::PayeeLeft => "payee_left",
            EndReason::RoomClosed => "room_closed",
            EndReason::InsufficientBalance => "insufficient_balance",
            EndReason::Shutdown => "shutdown",
            EndReason::Abandoned => "abandoned",
            EndReason::Recovered => "recovered",
            EndReason::MeterError => "meter_error",
            EndReason::ConnectionLost => "connection_lost",
        }
    }

    /// True when the meter ended the session on its own: the call must be
    /// stopped (a `MeterEvent::Cut` says so).
    pub fn is_cut(self) -> bool {
        matches!(
            self,
            EndReason::InsufficientBalance | EndReason::Recovered | EndReason::MeterError
        )
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        EndReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| MeterError::Malformed(format!("end reason `{s}`")))
    }
}

/// A session as it ended: what finance sees in the `sessions` export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    pub room: String,
    pub payer: String,
    pub payee: Option<String>,
    pub call_type: CallType,
    pub terms: BillingTerms,
    /// Unix ms when billing started.
    pub started_ms: i64,
    /// Unix ms when billing ended: for a session paused while a
    /// participant was reconnecting, `started_ms + duration_ms` plus the
    /// time paused before the end (a session ended while paused ends at its
    /// pause point).
    pub ended_ms: i64,
    /// The billed duration: the time the billed clock ran, without the
    /// time paused (docs/metering.md "Reconnecting").
    pub duration_ms: i64,
    pub billed_seconds: i64,
    pub coins: i64,
    pub payee_coins: i64,
    pub platform_coins: i64,
    pub end_reason: EndReason,
}

impl SessionSummary {
    pub(crate) fn from_row(row: &AnyRow) -> Result<SessionSummary, MeterError> {
        let reason: String = get(row, "end_reason")?;
        let call_type: String = get(row, "call_type")?;
        Ok(SessionSummary {
            id: get(row, "id")?,
            room: get(row, "room")?,
            payer: get(row, "payer")?,
            payee: get(row, "payee")?,
            call_type: call_type.parse()?,
            terms: terms_of(row)?,
            started_ms: get(row, "started_ms")?,
            ended_ms: get(row, "ended_ms")?,
            duration_ms: get(row, "duration_ms")?,
            billed_seconds: get(row, "billed_seconds")?,
            coins: get(row, "coins")?,
            payee_coins: get(row, "payee_coins")?,
            platform_coins: get(row, "platform_coins")?,
            end_reason: reason.parse()?,
        })
    }

    pub(crate) fn webhook_data(&self) -> serde_json::Value {
        json!({
            "session": self.id,
            "room": self.room,
            "payer": self.payer,
            "payee": self.payee,
            "call_type": self.call_type.as_str(),
            "rate_per_minute": self.terms.rate_per_minute,
            "initial_increment": self.terms.initial_increment,
            "increment": self.terms.increment,
            "commission_bps": self.terms.commission_bps,
            "started_at_ms": self.started_ms,
            "ended_at_ms": self.ended_ms,
            "duration_ms": self.duration_ms,
            "billed_seconds": self.billed_seconds,
            "coins": self.coins,
            "payee_coins": self.payee_coins,
            "platform_coins": self.platform_coins,
            "end_reason": self.end_reason.as_str(),
        })
    }
}

fn terms_of(row: &AnyRow) -> Result<BillingTerms, MeterError> {
    let small =
        |v: i64| u32::try_from(v).map_err(|_| MeterError::Internal("terms out of range".into()));
    Ok(BillingTerms {
        rate_per_minute: get(row, "rate_per_minute")?,
        initial_increment: small(get(row, "incr_initial")?)?,
        increment: small(get(row, "incr_next")?)?,
        commission_bps: small(get(row, "commission_bps")?)?,
    })
}

pub(crate) const SESSION_COLUMNS: &str = "id, node, instance, room, payer, payee, call_type, \
    rate_per_minute, incr_initial, incr_next, commission_bps, state, started_ms, checkpoint_ms, \
    block_start_ms, block_end_ms, limit_coins, captures, coins, payee_coins, platform_coins, \
    ended_ms, duration_ms, billed_seconds, end_reason, paused_ms, paused_at_ms";

// ---------------------------------------------------------------------------
// The pure part: what one settle does.

/// What never changes in a session.
#[derive(Debug, Clone)]
pub(crate) struct Core {
    pub id: String,
    pub room: String,
    pub payer: String,
    pub payee: Option<String>,
    pub call_type: CallType,
    pub terms: BillingTerms,
    pub started_ms: i64,
    pub block_s: u64,
    pub wallet: String,
    pub earnings: Option<String>,
}

/// The ledger side of an open session, as its row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ledgered {
    pub captures: i64,
    pub coins: i64,
    pub payee_coins: i64,
    pub platform_coins: i64,
    pub block_start_ms: i64,
    pub block_end_ms: i64,
    pub limit: Option<i64>,
    pub hold: i64,
}

/// A hold to place for the current block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldPlan {
    pub hold: i64,
    pub limit: Option<i64>,
    pub block_start_ms: i64,
    pub block_end_ms: i64,
}

/// Sizes the hold of the block starting at `block_start_s`, with `coins`
/// captured so far (= cost of `block_start_s`) and `budget` coins the
/// wallet can give this block.
pub(crate) fn size_hold(
    terms: &BillingTerms,
    block_s: u64,
    block_start_s: u64,
    coins: i64,
    budget: i64,
) -> HoldPlan {
    let next_s = terms.next_boundary(block_start_s, block_s);
    let marginal = terms.cost(next_s) - coins;
    if budget >= marginal {
        HoldPlan {
            hold: marginal,
            limit: None,
            block_start_ms: block_start_s as i64 * 1000,
            block_end_ms: next_s as i64 * 1000,
        }
    } else {
        let budget = budget.max(0);
        let limit = coins + budget;
        HoldPlan {
            hold: budget,
            limit: Some(limit),
            block_start_ms: block_start_s as i64 * 1000,
            block_end_ms: terms.ms_funded_by(limit),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// The fully held block ended: capture it, hold the next.
    Boundary,
    /// More money may be there: grow a last-stretch hold.
    Extend,
    /// The last stretch ran out: extend if money came, else cut.
    Cut,
    /// Another session of the same payer starts: keep `keep_num/keep_den`
    /// of what this one holds beyond the time already used, release the
    /// rest (and go on as a last stretch), so both calls share the wallet.
    Yield {
        keep_num: i64,
        keep_den: i64,
    },
    End(EndReason),
}

/// What a settle writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// New cumulative coins captured (≥ the old).
    pub coins: i64,
    pub next: Option<HoldPlan>,
    /// (reason, duration ms, billed seconds) when the session ends.
    pub end: Option<(EndReason, i64, i64)>,
}

/// Decides a settle at call time `t_ms` given what the wallet has beyond
/// all holds (`available`). None: nothing to write.
pub(crate) fn plan(
    terms: &BillingTerms,
    block_s: u64,
    l: &Ledgered,
    available: i64,
    op: Op,
    t_ms: i64,
) -> Option<Plan> {
    let end_at = |reason: EndReason, t: i64, limit: Option<i64>| {
        let t = t.clamp(0, l.block_end_ms);
        let (billed, coins) = terms.rate_at(t, limit);
        Plan {
            coins,
            next: None,
            end: Some((reason, t, billed)),
        }
    };
    match op {
        Op::End(reason) => Some(end_at(reason, t_ms, l.limit)),
        Op::Yield { keep_num, keep_den } => {
            let limit = l.limit.unwrap_or(l.coins + l.hold);
            let t = t_ms.clamp(0, l.block_end_ms);
            let (_, used) = terms.rate_at(t, Some(limit));
            let unused = limit - used;
            if unused <= 0 || keep_den <= 0 {
                return None;
            }
            // Rounded up: the session yielding keeps the odd coin.
            let keep = (unused * keep_num + keep_den - 1) / keep_den;
            let new_limit = used + keep;
            if new_limit >= limit {
                return None;
            }
            Some(Plan {
                coins: l.coins,
                next: Some(HoldPlan {
                    hold: new_limit - l.coins,
                    limit: Some(new_limit),
                    block_start_ms: l.block_start_ms,
                    block_end_ms: terms.ms_funded_by(new_limit).max(t),
                }),
                end: None,
            })
        }
        Op::Extend => {
            l.limit?;
            if available <= 0 {
                return None;
            }
            let hp = size_hold(
                terms,
                block_s,
                (l.block_start_ms / 1000) as u64,
                l.coins,
                l.hold + available,
            );
            Some(Plan {
                coins: l.coins,
                next: Some(hp),
                end: None,
            })
        }
        Op::Cut => {
            if available > 0
                && let Some(p) = plan(terms, block_s, l, available, Op::Extend, t_ms)
                && p.next.is_some_and(|h| h.block_end_ms > l.block_end_ms)
            {
                return Some(p);
            }
            Some(end_at(
                EndReason::InsufficientBalance,
                l.block_end_ms,
                l.limit,
            ))
        }
        Op::Boundary => {
            let b_s = (l.block_end_ms / 1000) as u64;
            let coins = terms.cost(b_s);
            let captured = coins - l.coins;
            let available_after = available + l.hold - captured;
            let hp = size_hold(terms, block_s, b_s, coins, available_after);
            if hp.limit.is_some() && hp.block_end_ms <= l.block_end_ms {
                // Nothing more is funded: the cut falls on the boundary.
                return Some(end_at(
                    EndReason::InsufficientBalance,
                    l.block_end_ms,
                    hp.limit,
                ));
            }
            Some(Plan {
                coins,
                next: Some(hp),
                end: None,
            })
        }
    }
}

/// What a committed settle changed.
pub(crate) struct Applied {
    pub wallet: WalletSnap,
    pub ledgered: Ledgered,
    pub summary: Option<SessionSummary>,
    pub entered_last_stretch: bool,
}

/// Writes `p` for the session inside `tx` (the wallet already locked).
/// Fails with `Fenced` when the row moved on (ended elsewhere or another
/// writer settled first): the caller rolls back.
pub(crate) async fn apply(
    tx: &mut Tx,
    core: &Core,
    l: &Ledgered,
    p: &Plan,
    paused_ms: i64,
    now_ms: i64,
    webhooks: bool,
) -> Result<Applied, SettleError> {
    let delta = p.coins - l.coins;
    let new_hold = p.next.map_or(0, |h| h.hold);
    if delta < 0 || delta > l.hold {
        return Err(SettleError::Meter(MeterError::Internal(format!(
            "session {}: capture of {delta} coins with {} held",
            core.id, l.hold
        ))));
    }
    let split = core.terms.split(p.coins, core.payee.is_some());
    let payee_delta = split.payee - l.payee_coins;
    let platform_delta = split.platform - l.platform_coins;
    let seq = l.captures + 1;
    let next = p.next.unwrap_or(HoldPlan {
        hold: 0,
        limit: l.limit,
        block_start_ms: l.block_start_ms,
        block_end_ms: l.block_end_ms,
    });

    // The fence: this row, still open, at the counter we read.
    let fenced = match p.end {
        None => {
            sqlx::query(
                "UPDATE sessions SET captures = $3, coins = $4, payee_coins = $5, \
                 platform_coins = $6, block_start_ms = $7, block_end_ms = $8, limit_coins = $9, \
                 checkpoint_ms = CASE WHEN checkpoint_ms < $10 THEN $10 ELSE checkpoint_ms END \
                 WHERE id = $1 AND state = 'open' AND captures = $2",
            )
            .bind(&core.id)
            .bind(l.captures)
            .bind(seq)
            .bind(p.coins)
            .bind(split.payee)
            .bind(split.platform)
            .bind(next.block_start_ms)
            .bind(next.block_end_ms)
            .bind(next.limit)
            .bind(core.started_ms + next.block_start_ms + paused_ms)
            .execute(&mut **tx)
            .await
        }
        Some((reason, duration, billed)) => {
            sqlx::query(
                "UPDATE sessions SET captures = $3, coins = $4, payee_coins = $5, \
                 platform_coins = $6, state = 'ended', ended_ms = $7, duration_ms = $8, \
                 billed_seconds = $9, end_reason = $10, \
                 checkpoint_ms = CASE WHEN checkpoint_ms < $7 THEN $7 ELSE checkpoint_ms END \
                 WHERE id = $1 AND state = 'open' AND captures = $2",
            )
            .bind(&core.id)
            .bind(l.captures)
            .bind(seq)
            .bind(p.coins)
            .bind(split.payee)
            .bind(split.platform)
            .bind(core.started_ms + duration + paused_ms)
            .bind(duration)
            .bind(billed)
            .bind(reason.as_str())
            .execute(&mut **tx)
            .await
        }
    }
    .map_err(MeterError::from)?;
    if fenced.rows_affected() != 1 {
        return Err(SettleError::Fenced);
    }

    let key = |part: &str| format!("{}/{seq}/{part}", core.id);
    if payee_delta > 0 {
        let earnings = core.earnings.as_deref().ok_or_else(|| {
            MeterError::Internal(format!("session {} pays a payee it has not", core.id))
        })?;
        ledger::insert_posting(
            tx,
            &Posting {
                at_ms: now_ms,
                debit: &core.wallet,
                credit: earnings,
                coins: payee_delta,
                kind: "charge",
                session: Some(&core.id),
                reference: None,
                key: key("charge"),
            },
        )
        .await?;
    }
    if platform_delta > 0 {
        ledger::insert_posting(
            tx,
            &Posting {
                at_ms: now_ms,
                debit: &core.wallet,
                credit: ledger::PLATFORM,
                coins: platform_delta,
                kind: "commission",
                session: Some(&core.id),
                reference: None,
                key: key("commission"),
            },
        )
        .await?;
    }
    let wallet = ledger::change_wallet(tx, &core.wallet, -delta, new_hold - l.hold).await?;
    if p.end.is_some() {
        sqlx::query("DELETE FROM holds WHERE session_id = $1")
            .bind(&core.id)
            .execute(&mut **tx)
            .await
            .map_err(MeterError::from)?;
    } else {
        sqlx::query("UPDATE holds SET coins = $2, placed_ms = $3 WHERE session_id = $1")
            .bind(&core.id)
            .bind(new_hold)
            .bind(now_ms)
            .execute(&mut **tx)
            .await
            .map_err(MeterError::from)?;
    }
    let entered_last_stretch = l.limit.is_none() && p.end.is_none() && next.limit.is_some();
    let summary = p.end.map(|(reason, duration, billed)| SessionSummary {
        id: core.id.clone(),
        room: core.room.clone(),
        payer: core.payer.clone(),
        payee: core.payee.clone(),
        call_type: core.call_type,
        terms: core.terms,
        started_ms: core.started_ms,
        ended_ms: core.started_ms + duration + paused_ms,
        duration_ms: duration,
        billed_seconds: billed,
        coins: p.coins,
        payee_coins: split.payee,
        platform_coins: split.platform,
        end_reason: reason,
    });
    if webhooks {
        if let Some(s) = &summary {
            webhook::enqueue(tx, events::SESSION_ENDED, s.webhook_data(), now_ms).await?;
        }
        if entered_last_stretch {
            let deadline = core.started_ms + next.block_end_ms;
            webhook::enqueue(
                tx,
                events::WALLET_LOW_BALANCE,
                low_balance_data(core, &wallet, deadline, now_ms),
                now_ms,
            )
            .await?;
        }
    }
    if let Some(earnings) = &core.earnings {
        ledger::change_balance(tx, earnings, payee_delta).await?;
    }
    ledger::change_platform_balance(tx, &core.id, platform_delta).await?;
    Ok(Applied {
        wallet,
        ledgered: Ledgered {
            captures: seq,
            coins: p.coins,
            payee_coins: split.payee,
            platform_coins: split.platform,
            block_start_ms: next.block_start_ms,
            block_end_ms: next.block_end_ms,
            limit: next.limit,
            hold: new_hold,
        },
        summary,
        entered_last_stretch,
    })
}

fn low_balance_data(
    core: &Core,
    wallet: &WalletSnap,
    deadline_ms: i64,
    now_ms: i64,
) -> serde_json::Value {
    json!({
        "user": core.payer,
        "session": core.id,
        "room": core.room,
        "balance": wallet.balance,
        "held": wallet.held,
        "available": wallet.available(),
        "cut_at_ms": deadline_ms,
        "seconds_left": ((deadline_ms - now_ms).max(0) as u64).div_ceil(1000),
    })
}

pub(crate) enum SettleError {
    /// The session row moved on without us (recovered elsewhere).
    Fenced,
    Meter(MeterError),
}

impl From<MeterError> for SettleError {
    fn from(e: MeterError) -> Self {
        SettleError::Meter(e)
    }
}

impl From<sqlx::Error> for SettleError {
    fn from(e: sqlx::Error) -> Self {
        SettleError::Meter(e.into())
    }
}

// ---------------------------------------------------------------------------
// Starting.

pub(crate) fn new_session_id() -> String {
    format!("ses_{:024x}", rand::random::<u128>() >> 32)
}

/// The start transaction: locks the wallet, holds the first block, writes
/// the session and its hold. Returns the hold plan and the wallet after.
pub(crate) async fn start_tx(
    inner: &Inner,
    core: &Core,
    call_id: Option<&str>,
) -> Result<(HoldPlan, WalletSnap), MeterError> {
    let now = inner.clock.now_ms();
    let mut tx = inner.db.begin().await?;
    let Some(mut w) = ledger::lock_wallet(&mut tx, &core.wallet).await? else {
        return Err(MeterError::InsufficientBalance(format!(
            "{} has no wallet",
            core.payer
        )));
    };
    // The call's hold of its first increment becomes part of this
    // session's: released here, in the transaction that holds the block.
    if let Some(call_id) = call_id
        && let Some(released) = call_log::take_call_hold(&mut tx, call_id).await?
        && released.wallet == core.wallet
    {
        w = released.after;
    }
    // Coins a refund could not take back are owed first: a wallet in debt
    // funds no new call (its next credit repays the debt).
    let debt: i64 = sqlx::query_scalar("SELECT debt FROM accounts WHERE id = $1")
        .bind(&core.wallet)
        .fetch_one(&mut *tx)
        .await?;
    if debt > 0 {
        return Err(MeterError::InsufficientBalance(format!(
            "{} owes {debt} coins of a refund",
            core.payer
        )));
    }
    if w.available() <= 0 {
        return Err(MeterError::InsufficientBalance(format!(
            "{} has {} coins, all of them held",
            core.payer, w.balance
        )));
    }
    let hp = size_hold(&core.terms, core.block_s, 0, 0, w.available());
    if let Some(earnings) = &core.earnings {
        ledger::ensure_account(&mut tx, earnings, "earnings", now).await?;
    }
    sqlx::query(
        "INSERT INTO sessions (id, node, instance, room, payer, payee, call_type, rate_per_minute, \
         incr_initial, incr_next, commission_bps, state, started_ms, checkpoint_ms, block_start_ms, \
         block_end_ms, limit_coins, call_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $12, 0, $13, $14, $15)",
    )
    .bind(&core.id)
    .bind(&inner.config.node_id)
    .bind(&inner.instance)
    .bind(&core.room)
    .bind(&core.payer)
    .bind(core.payee.as_deref())
    .bind(core.call_type.as_str())
    .bind(core.terms.rate_per_minute)
    .bind(i64::from(core.terms.initial_increment))
    .bind(i64::from(core.terms.increment))
    .bind(i64::from(core.terms.commission_bps))
    .bind(core.started_ms)
    .bind(hp.block_end_ms)
    .bind(hp.limit)
    .bind(call_id)
    .execute(&mut *tx)
    .await?;
    if let Some(call_id) = call_id {
        sqlx::query("UPDATE calls SET session_id = $1 WHERE id = $2 AND session_id IS NULL")
            .bind(&core.id)
            .bind(call_id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO holds (session_id, wallet, coins, placed_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&core.id)
    .bind(&core.wallet)
    .bind(hp.hold)
    .bind(now)
    .bind(now + inner.config.hold_expiry.as_millis() as i64)
    .execute(&mut *tx)
    .await?;
    let w = ledger::change_wallet(&mut tx, &core.wallet, 0, hp.hold).await?;
    if inner.webhooks_on() {
        let deadline = core.started_ms + core.terms.ms_funded_by(hp.hold + w.available());
        webhook::enqueue(
            &mut tx,
            events::SESSION_STARTED,
            json!({
                "session": core.id,
                "room": core.room,
                "payer": core.payer,
                "payee": core.payee,
                "call_type": core.call_type.as_str(),
                "rate_per_minute": core.terms.rate_per_minute,
                "initial_increment": core.terms.initial_increment,
                "increment": core.terms.increment,
                "commission_bps": core.terms.commission_bps,
                "started_at_ms": core.started_ms,
                "seconds_left": ((deadline - now).max(0) as u64).div_ceil(1000),
            }),
            now,
        )
        .await?;
        if hp.limit.is_some() {
            webhook::enqueue(
                &mut tx,
                events::WALLET_LOW_BALANCE,
                low_balance_data(core, &w, core.started_ms + hp.block_end_ms, now),
                now,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok((hp, w))
}

// ---------------------------------------------------------------------------
// Recovery: closing a session whose actor is gone.

/// Closes an open session at its last checkpoint: captures the rating of
/// the checkpointed duration (never beyond what its hold covered), releases
/// the hold. Ok(None) when it was not open any more.
pub(crate) async fn recover(inner: &Inner, id: &str) -> Result<Option<SessionSummary>, MeterError> {
    let now = inner.clock.now_ms();
    let mut tx = inner.db.begin().await?;
    let payer: Option<String> =
        sqlx::query_scalar("SELECT payer FROM sessions WHERE id = $1 AND state = 'open'")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(payer) = payer else {
        return Ok(None);
    };
    let wallet = ledger::wallet_id(&payer);
    ledger::lock_wallet(&mut tx, &wallet).await?;
    let row = sqlx::query(&format!(
        "UPDATE sessions SET captures = captures WHERE id = $1 AND state = 'open' \
         RETURNING {SESSION_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let hold: i64 = sqlx::query_scalar("SELECT coins FROM holds WHERE session_id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
    let (core, l) = core_of(&row, hold, inner.config.block_secs())?;
    let checkpoint: i64 = get(&row, "checkpoint_ms")?;
    // Time paused while a participant was reconnecting is not charged: the
    // billed clock stood still from `paused_at_ms` and for `paused_ms`
    // before it.
    let paused_ms: i64 = get(&row, "paused_ms")?;
    let paused_at_ms: Option<i64> = get(&row, "paused_at_ms")?;
    let last = paused_at_ms.map_or(checkpoint, |at| at.min(checkpoint));
    let duration = (last - core.started_ms - paused_ms).clamp(l.block_start_ms, l.block_end_ms);
    let p = plan(
        &core.terms,
        core.block_s,
        &l,
        0,
        Op::End(EndReason::Recovered),
        duration,
    )
    .ok_or_else(|| MeterError::Internal("no recovery plan".into()))?;
    let applied = match apply(&mut tx, &core, &l, &p, paused_ms, now, inner.webhooks_on()).await {
        Ok(a) => a,
        Err(SettleError::Fenced) => return Ok(None),
        Err(SettleError::Meter(e)) => return Err(e),
    };
    tx.commit().await?;
    inner.wallet_changed(&core.payer, applied.wallet, None);
    inner.outbox_written();
    info!(session = %id, duration_ms = duration, coins = p.coins, "session recovered at its checkpoint");
    Ok(applied.summary)
}

pub(crate) fn core_of(
    row: &AnyRow,
    hold: i64,
    block_s: u64,
) -> Result<(Core, Ledgered), MeterError> {
    let payer: String = get(row, "payer")?;
    let payee: Option<String> = get(row, "payee")?;
    let call_type: String = get(row, "call_type")?;
    let core = Core {
        id: get(row, "id")?,
        room: get(row, "room")?,
        wallet: ledger::wallet_id(&payer),
        earnings: payee.as_deref().map(ledger::earnings_id),
        payer,
        payee,
        call_type: call_type.parse()?,
        terms: terms_of(row)?,
        started_ms: get(row, "started_ms")?,
        block_s,
    };
    let l = Ledgered {
        captures: get(row, "captures")?,
        coins: get(row, "coins")?,
        payee_coins: get(row, "payee_coins")?,
        platform_coins: get(row, "platform_coins")?,
        block_start_ms: get(row, "block_start_ms")?,
        block_end_ms: get(row, "block_end_ms")?,
        limit: get(row, "limit_coins")?,
        hold,
    };
    Ok((core, l))
}

// ---------------------------------------------------------------------------
// The handle and the actor.

pub(crate) enum Msg {
    End {
        reason: EndReason,
        reply: oneshot::Sender<Result<SessionSummary, MeterError>>,
    },
    Abandon,
    Wallet {
        snap: WalletSnap,
        ack: Option<oneshot::Sender<()>>,
    },
    /// A new session of the same payer at `rate` coins a minute needs a
    /// share of the wallet this one holds.
    Yield {
        rate: i64,
        ack: oneshot::Sender<()>,
    },
    /// Stop the billed clock at `at` (a participant is reconnecting).
    Pause {
        at: Instant,
        ack: oneshot::Sender<()>,
    },
    /// Start the billed clock again at `at`.
    Resume {
        at: Instant,
        ack: oneshot::Sender<()>,
    },
}

/// The billed clock: the session's time ("ms of call") is the time since
/// `Shared::start` less the time it was paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BilledClock {
    /// Time spent paused before the current pause, ms.
    pub paused_ms: i64,
    /// Ms of call where the current pause began; None while running.
    pub paused_at: Option<i64>,
}

/// What the handle reads without asking the actor.
pub(crate) struct Shared {
    pub start: Instant,
    pub clock: std::sync::Mutex<BilledClock>,
    /// The projected cut, ms of call; `ENDED` once over.
    pub deadline_ms: AtomicI64,
    pub summary: std::sync::Mutex<Option<SessionSummary>>,
}

impl Shared {
    pub(crate) fn new(start: Instant, deadline_ms: i64) -> Shared {
        Shared {
            start,
            clock: std::sync::Mutex::new(BilledClock::default()),
            deadline_ms: AtomicI64::new(deadline_ms),
            summary: std::sync::Mutex::new(None),
        }
    }

    fn billed_clock(&self) -> BilledClock {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_billed_clock(&self, clock: BilledClock) {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    /// Ms since the start at `at` (0 before it), paused or not.
    fn since_start(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.start).as_millis() as i64
    }

    /// Ms of call now: frozen at the pause point while paused.
    fn billed_ms(&self) -> i64 {
        let clock = self.billed_clock();
        match clock.paused_at {
            Some(at) => at,
            None => (self.since_start(Instant::now()) - clock.paused_ms).max(0),
        }
    }
}

const ENDED: i64 = i64::MIN;

/// One billed session. Not `Clone`: `end` consumes it. Dropping it without
/// `end` ends the session with reason `abandoned`.
pub struct SessionHandle {
    pub(crate) id: String,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) meter: Meter,
    pub(crate) ended: bool,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("seconds_left", &self.seconds_left())
            .finish()
    }
}

impl SessionHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seconds until the projected cut (rounded up), None once ended. The
    /// projection assumes this session alone draws on what the wallet has
    /// beyond its hold; it moves (and `MeterEvent::SecondsLeft` goes out)
    /// when a credit, another session of the payer or a boundary changes it.
    pub fn seconds_left(&self) -> Option<u64> {
        let deadline = self.shared.deadline_ms.load(Ordering::Acquire);
        if deadline == ENDED {
            return None;
        }
        let now = self.shared.billed_ms();
        Some(((deadline - now).max(0) as u64).div_ceil(1000))
    }

    /// Stops the billed clock (docs/metering.md "Reconnecting"): from the
    /// pause point no time is charged, no boundary or cut fires and the
    /// projected cut moves later by the time paused; the hold stays. `at`
    /// backdates the pause to when media stopped; it is clamped to not
    /// before the last boundary, cut or share of the hold (time already
    /// settled) nor the last resume, and not after now. Pausing a paused
    /// session changes nothing. Returns once the session has taken it in;
    /// false when the session is over (nothing to pause).
    pub async fn pause(&self, at: Instant) -> bool {
        let (ack, done) = oneshot::channel();
        self.tx.send(Msg::Pause { at, ack }).is_ok() && done.await.is_ok()
    }

    /// Starts the billed clock again at `at` (clamped to not before the
    /// pause began and not after now), and announces the projected cut,
    /// later by the time paused. Resuming a running session changes
    /// nothing. False when the session is over.
    pub async fn resume(&self, at: Instant) -> bool {
        let (ack, done) = oneshot::channel();
        self.tx.send(Msg::Resume { at, ack }).is_ok() && done.await.is_ok()
    }

    /// True while the billed clock is stopped.
    pub fn is_paused(&self) -> bool {
        self.shared.billed_clock().paused_at.is_some()
    }

    /// The billed duration so far, ms: the time since the start less the
    /// time paused (frozen while paused).
    pub fn billed_ms(&self) -> i64 {
        self.shared.billed_ms()
    }

    /// Ends the session now: captures the used part of the hold, releases
    /// the rest. A session the meter already ended (cut, recovered) returns
    /// its summary as it ended, whatever `reason` says.
    pub async fn end(mut self, reason: EndReason) -> Result<SessionSummary, MeterError> {
        self.ended = true;
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::End { reason, reply }).is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The actor is gone: it ended the session (or the meter stopped).
        if let Some(s) = self.shared.summary.lock().unwrap().clone() {
            return Ok(s);
        }
        self.meter
            .session(&self.id)
            .await?
            .ok_or(MeterError::ShuttingDown)
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.tx.send(Msg::Abandon);
        }
    }
}

pub(crate) struct Actor {
    pub inner: Arc<Inner>,
    pub core: Core,
    pub l: Ledgered,
    pub wallet: WalletSnap,
    pub shared: Arc<Shared>,
    pub rx: mpsc::UnboundedReceiver<Msg>,
    /// Last deadline announced (ms of call).
    pub announced: Option<i64>,
    /// Warning thresholds (ms, descending) and whether each has fired for
    /// the current deadline.
    pub warnings: Vec<(i64, bool)>,
    /// Set by `finish`: nothing more happens here.
    pub over: bool,
    /// Ms of call a pause cannot be backdated before: the last boundary,
    /// cut or share of the hold settled time up to here.
    pub settled_ms: i64,
}

/// How long the actor retries a failing settle before giving up.
const RETRIES: [u64; 5] = [50, 100, 200, 400, 800];

impl Actor {
    /// Ms of call now (the billed clock: frozen while paused).
    fn elapsed_ms(&self) -> i64 {
        self.shared.billed_ms()
    }

    /// The instant the billed clock reaches `ms`, if it keeps running.
    fn at(&self, ms: i64) -> Instant {
        let paused = self.shared.billed_clock().paused_ms;
        self.shared.start + Duration::from_millis((ms + paused).max(0) as u64)
    }

    fn paused(&self) -> bool {
        self.shared.billed_clock().paused_at.is_some()
    }

    /// The projected cut: what captured + held + available funds, pro rata.
    fn deadline(&self) -> i64 {
        match self.l.limit {
            Some(_) if self.wallet.available() <= 0 => self.l.block_end_ms,
            _ => self
                .core
                .terms
                .ms_funded_by(self.l.coins + self.l.hold + self.wallet.available().max(0))
                .max(self.l.block_end_ms),
        }
    }

    /// Announces a changed deadline and re-arms or fires warnings.
    fn announce(&mut self) {
        let deadline = self.deadline();
        self.shared.deadline_ms.store(deadline, Ordering::Release);
        let now = self.elapsed_ms();
        let left_ms = (deadline - now).max(0);
        let seconds_left = (left_ms as u64).div_ceil(1000);
        if self.announced != Some(deadline) {
            self.announced = Some(deadline);
            self.inner.emit(MeterEvent::SecondsLeft {
                session: self.core.id.clone(),
                room: self.core.room.clone(),
                payer: self.core.payer.clone(),
                payee: self.core.payee.clone(),
                seconds_left,
            });
            for (w, fired) in &mut self.warnings {
                if left_ms > *w {
                    *fired = false;
                }
            }
        }
        // Thresholds already crossed and not yet said: one warning now.
        let crossed = self
            .warnings
            .iter()
            .any(|(w, fired)| !fired && left_ms <= *w);
        if crossed {
            for (w, fired) in &mut self.warnings {
                if left_ms <= *w {
                    *fired = true;
                }
            }
            self.inner.emit(MeterEvent::Warning {
                session: self.core.id.clone(),
                room: self.core.room.clone(),
                payer: self.core.payer.clone(),
                payee: self.core.payee.clone(),
                seconds_left,
            });
        }
    }

    /// The next instant a timer must fire, ms of call.
    fn next_wake(&self) -> i64 {
        let deadline = self.deadline();
        let warn = self
            .warnings
            .iter()
            .filter(|(_, fired)| !fired)
            .map(|(w, _)| deadline - w)
            .min();
        match warn {
            Some(w) => w.min(self.l.block_end_ms),
            None => self.l.block_end_ms,
        }
    }

    pub async fn run(mut self) {
        self.announce();
        loop {
            let wake = self.next_wake();
            // While paused no timer runs: the billed clock stands still.
            let paused = self.paused();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(self.at(wake)), if !paused => {
                    if self.on_wake().await {
                        return;
                    }
                }
                msg = self.rx.recv() => {
                    let done = match msg {
                        Some(Msg::End { reason, reply }) => {
                            let result = self.end(reason).await;
                            let _ = reply.send(result);
                            true
                        }
                        Some(Msg::Abandon) | None => {
                            let _ = self.end(EndReason::Abandoned).await;
                            true
                        }
                        Some(Msg::Yield { rate, ack }) => {
                            let own = self.core.terms.rate_per_minute;
                            let op = Op::Yield { keep_num: own, keep_den: own + rate };
                            let done = match self.settle(op).await {
                                Ok(done) => done,
                                Err(e) => {
                                    warn!(session = %self.core.id, error = %e, "could not share the hold");
                                    false
                                }
                            };
                            let _ = ack.send(());
                            done
                        }
                        Some(Msg::Wallet { snap, ack }) => {
                            let done = self.on_wallet(snap).await;
                            if let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                            done
                        }
                        Some(Msg::Pause { at, ack }) => {
                            let done = self.pause(at).await;
                            if !done {
                                let _ = ack.send(());
                            }
                            done
                        }
                        Some(Msg::Resume { at, ack }) => {
                            let done = self.resume(at).await;
                            if !done {
                                let _ = ack.send(());
                            }
                            done
                        }
                    };
                    if done {
                        return;
                    }
                }
            }
        }
    }

    /// What the end of the held block is: the cut of a last stretch, or a
    /// boundary before the next block.
    fn block_end_op(&self) -> Op {
        if self.l.limit.is_some() {
            Op::Cut
        } else {
            Op::Boundary
        }
    }

    /// Timers: the end of the held block (boundary or cut), warnings.
    /// Returns true when the session is over.
    async fn on_wake(&mut self) -> bool {
        if self.elapsed_ms() >= self.l.block_end_ms
            && self.settle_retrying(self.block_end_op()).await
        {
            return true;
        }
        self.announce();
        false
    }

    /// Stops the billed clock at `at`, clamped to [the last settled time
    /// or resume, now]. Returns true when the session is over.
    async fn pause(&mut self, at: Instant) -> bool {
        if self.paused() {
            return false;
        }
        // A block that ran out while the request was on its way settles
        // first (a pause cannot reach back before a settle).
        while !self.over && self.elapsed_ms() >= self.l.block_end_ms {
            if self.settle_retrying(self.block_end_op()).await {
                return true;
            }
        }
        if self.over {
            return true;
        }
        let mut clock = self.shared.billed_clock();
        let now = self.elapsed_ms();
        let asked = self.shared.since_start(at) - clock.paused_ms;
        let floor = self.settled_ms.max(self.l.block_start_ms);
        let point = asked.max(floor).min(now);
        clock.paused_at = Some(point);
        self.shared.set_billed_clock(clock);
        info!(session = %self.core.id, at_ms = point, backdated_ms = now - point, "billed clock paused");
        self.write_pause(clock).await
    }

    /// Starts the billed clock again at `at`, clamped to [the pause's
    /// instant, now]. Returns true when the session is over.
    async fn resume(&mut self, at: Instant) -> bool {
        let mut clock = self.shared.billed_clock();
        let Some(point) = clock.paused_at else {
            return false;
        };
        let paused_from = point + clock.paused_ms;
        let now = self.shared.since_start(Instant::now());
        let resumed = self.shared.since_start(at).max(paused_from).min(now);
        clock.paused_ms = resumed - point;
        clock.paused_at = None;
        self.shared.set_billed_clock(clock);
        self.settled_ms = self.settled_ms.max(point);
        info!(session = %self.core.id, paused_ms = resumed - paused_from, "billed clock resumed");
        if self.write_pause(clock).await {
            return true;
        }
        // The projected cut is as far in call time as before, later in
        // time of day: say it again.
        self.announced = None;
        self.announce();
        false
    }

    /// Mirrors the billed clock in the session's row, so that recovery
    /// charges no paused time either. A failed write leaves the clock as it
    /// is here (recovery would then charge paused time up to the last
    /// checkpoint, never beyond the hold). Returns true when the row was
    /// closed elsewhere.
    async fn write_pause(&mut self, clock: BilledClock) -> bool {
        let paused_at_ms = clock
            .paused_at
            .map(|at| self.core.started_ms + at + clock.paused_ms);
        let inner = self.inner.clone();
        let _io = inner.clock.io_guard();
        let written = sqlx::query(
            "UPDATE sessions SET paused_ms = $3, paused_at_ms = $4              WHERE id = $1 AND state = 'open' AND captures = $2",
        )
        .bind(&self.core.id)
        .bind(self.l.captures)
        .bind(clock.paused_ms)
        .bind(paused_at_ms)
        .execute(&inner.db.write)
        .await;
        drop(_io);
        match written {
            Ok(r) if r.rows_affected() == 1 => false,
            Ok(_) => {
                self.fenced().await;
                true
            }
            Err(e) => {
                warn!(session = %self.core.id, error = %e, "could not record the pause; recovery may charge paused time");
                false
            }
        }
    }

    async fn on_wallet(&mut self, snap: WalletSnap) -> bool {
        if snap.version > self.wallet.version {
            self.wallet = snap;
        }
        if self.l.limit.is_some() && self.wallet.available() > 0 {
            match self.settle(Op::Extend).await {
                Ok(done) => {
                    if done {
                        return true;
                    }
                }
                Err(e) => {
                    warn!(session = %self.core.id, error = %e, "could not extend the hold; the cut will retry")
                }
            }
        }
        self.announce();
        false
    }

    async fn end(&mut self, reason: EndReason) -> Result<SessionSummary, MeterError> {
        // A block that ran out while the request was on its way settles first.
        while !self.over && self.elapsed_ms() >= self.l.block_end_ms {
            let op = if self.l.limit.is_some() {
                Op::Cut
            } else {
                Op::Boundary
            };
            self.settle_retrying(op).await;
        }
        if self.over {
            return self.summary().ok_or_else(|| {
                MeterError::Internal(
                    "the meter could not reach its database; the session is left to recovery"
                        .into(),
                )
            });
        }
        let mut last = None;
        for delay in RETRIES.iter().copied().chain([0]) {
            match self.settle(Op::End(reason)).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(session = %self.core.id, error = %e, "ending the session failed");
                    self.inner
                        .metrics
                        .ledger_errors
                        .with_label_values(&["end"])
                        .inc();
                    last = Some(e);
                    if delay == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    self.reload().await;
                    if self.over {
                        break;
                    }
                }
            }
        }
        match self.summary() {
            Some(s) => Ok(s),
            None => {
                // Left open for recovery, which closes it at its checkpoint.
                self.finish(None);
                Err(last.unwrap_or_else(|| MeterError::Internal("session did not end".into())))
            }
        }
    }

    fn summary(&self) -> Option<SessionSummary> {
        self.shared.summary.lock().unwrap().clone()
    }

    /// A settle that must happen (boundary, cut): retried; on lasting
    /// failure the call is stopped and the row left to recovery.
    async fn settle_retrying(&mut self, op: Op) -> bool {
        for delay in RETRIES.iter().copied().chain([0]) {
            match self.settle(op).await {
                Ok(done) => return done,
                Err(e) => {
                    warn!(session = %self.core.id, error = %e, ?op, "settling failed");
                    self.inner
                        .metrics
                        .ledger_errors
                        .with_label_values(&["settle"])
                        .inc();
                    if delay == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    self.reload().await;
                    if self.over {
                        return true;
                    }
                }
            }
        }
        self.inner.emit(MeterEvent::Cut {
            session: self.core.id.clone(),
            room: self.core.room.clone(),
            payer: self.core.payer.clone(),
            payee: self.core.payee.clone(),
            reason: EndReason::MeterError,
        });
        self.finish(None);
        true
    }

    /// One settle transaction. Ok(true) when the session is over.
    async fn settle(&mut self, op: Op) -> Result<bool, MeterError> {
        let t = match op {
            Op::End(_) | Op::Yield { .. } => self.elapsed_ms().min(self.l.block_end_ms),
            _ => self.l.block_end_ms,
        };
        let inner = self.inner.clone();
        let _io = inner.clock.io_guard();
        let now = inner.clock.now_ms();
        let mut tx = inner.db.begin().await?;
        let Some(w) = ledger::lock_wallet(&mut tx, &self.core.wallet).await? else {
            return Err(MeterError::Internal(format!(
                "wallet {} is gone",
                self.core.wallet
            )));
        };
        // Our own hold is part of `held`: available is what is beyond all holds.
        let Some(p) = plan(
            &self.core.terms,
            self.core.block_s,
            &self.l,
            w.available(),
            op,
            t,
        ) else {
            return Ok(false);
        };
        let paused_ms = self.shared.billed_clock().paused_ms;
        let applied = match apply(
            &mut tx,
            &self.core,
            &self.l,
            &p,
            paused_ms,
            now,
            inner.webhooks_on(),
        )
        .await
        {
            Ok(a) => a,
            Err(SettleError::Fenced) => {
                drop(tx);
                self.fenced().await;
                return Ok(true);
            }
            Err(SettleError::Meter(e)) => return Err(e),
        };
        tx.commit().await?;
        drop(_io);
        debug!(session = %self.core.id, ?op, coins = applied.ledgered.coins, hold = applied.ledgered.hold, "settled");
        if matches!(op, Op::Boundary | Op::Cut | Op::Yield { .. }) {
            self.settled_ms = self.settled_ms.max(t.min(self.elapsed_ms()));
        }
        self.l = applied.ledgered;
        self.wallet = applied.wallet;
        inner.wallet_changed(&self.core.payer, applied.wallet, Some(&self.core.id));
        inner.outbox_written();
        match applied.summary {
            Some(summary) => {
                if summary.end_reason.is_cut() {
                    self.inner.emit(MeterEvent::Cut {
                        session: self.core.id.clone(),
                        room: self.core.room.clone(),
                        payer: self.core.payer.clone(),
                        payee: self.core.payee.clone(),
                        reason: summary.end_reason,
                    });
                }
                self.finish(Some(summary));
                Ok(true)
            }
            None => {
                if applied.entered_last_stretch {
                    info!(session = %self.core.id, payer = %self.core.payer, limit = ?self.l.limit, "last stretch: the wallet cannot fund a full block");
                }
                self.announce();
                Ok(false)
            }
        }
    }

    /// The row was closed by someone else (recovery): stop, say so.
    async fn fenced(&mut self) {
        warn!(session = %self.core.id, "session was closed by recovery; stopping it here");
        let summary = self.inner.session_row(&self.core.id).await.ok().flatten();
        let reason = summary
            .as_ref()
            .map_or(EndReason::Recovered, |s| s.end_reason);
        self.inner.emit(MeterEvent::Cut {
            session: self.core.id.clone(),
            room: self.core.room.clone(),
            payer: self.core.payer.clone(),
            payee: self.core.payee.clone(),
            reason: if reason.is_cut() {
                reason
            } else {
                EndReason::Recovered
            },
        });
        self.finish(summary);
    }

    /// Re-reads the row after a failed write whose fate is unknown.
    async fn reload(&mut self) {
        let _io = self.inner.clock.io_guard();
        match self.inner.load_open(&self.core.id, self.core.block_s).await {
            Ok(Some((l, w))) => {
                self.l = l;
                self.wallet = w;
            }
            Ok(None) => {
                let summary = self.inner.session_row(&self.core.id).await.ok().flatten();
                if let Some(s) = summary {
                    self.finish(Some(s));
                }
            }
            Err(e) => warn!(session = %self.core.id, error = %e, "reloading the session failed"),
        }
    }

    /// The session is over here: publish the summary, leave the registry.
    fn finish(&mut self, summary: Option<SessionSummary>) {
        self.over = true;
        self.shared.deadline_ms.store(ENDED, Ordering::Release);
        if let Some(s) = &summary {
            let metrics = &self.inner.metrics;
            metrics
                .sessions_ended
                .with_label_values(&[s.end_reason.as_str()])
                .inc();
            metrics.coins_billed.inc_by(s.coins.max(0) as u64);
            *self.shared.summary.lock().unwrap() = Some(s.clone());
            self.inner.emit(MeterEvent::Ended { summary: s.clone() });
        }
        self.inner.unregister(&self.core.payer, &self.core.id);
    }
}
