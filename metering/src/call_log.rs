//! The call log (docs/calls.md): every call as a row, its members with
//! their ring states, and its billed seconds and coins from its metering
//! session. The driver of a call (module `callgate_calls`) writes the whole
//! row each time the call changes; the database's checks keep the names
//! to the lists in migration 0004.

use sqlx::Row;

use crate::db::get;
use crate::error::MeterError;
use crate::ledger::{self, Tx, WalletSnap};
use crate::meter::{Inner, Meter, check_id};
use crate::terms::CallType;
use crate::webhook;

/// The most calls one page of a history holds.
pub const MAX_PAGE: u32 = 100;

/// One member of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMember {
    pub identity: String,
    /// Its ring (`ringing`, `accepted`, `rejected`, `busy`, `missed`,
    /// `cancelled`); `None` for the caller.
    pub ring: Option<String>,
}

/// A call as its log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// `CA_…`.
    pub id: String,
    pub room: String,
    pub caller: String,
    pub callees: Vec<CallMember>,
    pub call_type: CallType,
    /// `ringing`, `accepted` or `ended`.
    pub state: String,
    /// Once ended: `completed`, `missed`, `rejected`, `cancelled`, `busy`,
    /// `failed` or `insufficient_balance`.
    pub outcome: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub answered_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// The member whose action ended it, if one did.
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    /// Its metering session, once billing started.
    pub session_id: Option<String>,
    /// Read from the session (ignored when writing): its billed seconds
    /// and the coins charged, once the session ended.
    pub billed_seconds: Option<i64>,
    pub coins: Option<i64>,
}

/// Where a page of a history ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCursor {
    pub created_ms: i64,
    pub id: String,
}

/// A call's row with its billed seconds and coins, as every reader of the
/// log reads it (`Meter::call`, `Meter::calls_of`, the `calls` export):
/// each appends its own joins, conditions and order, or wraps it whole.
/// Billed seconds and coins are the sums over the call's ended sessions
/// (NULL when none has ended).
pub(crate) const SELECT: &str = "SELECT c.id, c.room, c.caller, c.call_type, c.state, c.outcome, \
     c.created_ms, c.answered_ms, c.ended_ms, c.ended_by, c.end_reason, c.session_id, \
     CAST((SELECT SUM(s.billed_seconds) FROM sessions s \
           WHERE s.call_id = c.id AND s.state = 'ended') AS BIGINT) AS billed_seconds, \
     CAST((SELECT SUM(s.coins) FROM sessions s \
           WHERE s.call_id = c.id AND s.state = 'ended') AS BIGINT) AS coins \
     FROM calls c";

/// The payer's first increment, held for a paid call before it rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHold {
    pub payer: String,
    pub coins: i64,
    /// Unix ms after which recovery releases it, if the call has not.
    pub expires_ms: i64,
}

/// A webhook event to queue with a change of a call (`call.started`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct CallWebhook {
    pub event_type: &'static str,
    pub data: serde_json::Value,
}

/// A call hold released: from which wallet, and the wallet after.
pub(crate) struct ReleasedHold {
    pub wallet: String,
    pub after: WalletSnap,
}

fn check_call(call: &CallRecord) -> Result<(), MeterError> {
    check_id("call id", &call.id)?;
    check_id("room", &call.room)?;
    check_id("caller", &call.caller)?;
    for member in &call.callees {
        check_id("callee", &member.identity)?;
    }
    if let Some(session_id) = &call.session_id {
        check_id("session id", session_id)?;
    }
    Ok(())
}

/// Releases the hold of `call_id`, if it has one, inside `tx`.
pub(crate) async fn take_call_hold(
    tx: &mut Tx,
    call_id: &str,
) -> Result<Option<ReleasedHold>, MeterError> {
    let row = sqlx::query("DELETE FROM call_holds WHERE call_id = $1 RETURNING wallet, coins")
        .bind(call_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let wallet: String = get(&row, "wallet")?;
    let coins: i64 = get(&row, "coins")?;
    let after = ledger::change_wallet(tx, &wallet, 0, -coins).await?;
    Ok(Some(ReleasedHold { wallet, after }))
}

/// Writes `call` and its members as they stand now.
async fn write_call(tx: &mut Tx, node: &str, call: &CallRecord) -> Result<(), MeterError> {
    // `session_id` is the call's first billed session, which the meter
    // sets when that session starts: a write of the call never clears it.
    sqlx::query(
        "INSERT INTO calls (id, node, room, caller, call_type, state, outcome, created_ms, \
         answered_ms, ended_ms, ended_by, end_reason, session_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
         outcome = excluded.outcome, answered_ms = excluded.answered_ms, \
         ended_ms = excluded.ended_ms, ended_by = excluded.ended_by, \
         end_reason = excluded.end_reason, \
         session_id = COALESCE(calls.session_id, excluded.session_id)",
    )
    .bind(&call.id)
    .bind(node)
    .bind(&call.room)
    .bind(&call.caller)
    .bind(call.call_type.as_str())
    .bind(&call.state)
    .bind(&call.outcome)
    .bind(call.created_ms)
    .bind(call.answered_ms)
    .bind(call.ended_ms)
    .bind(&call.ended_by)
    .bind(&call.end_reason)
    .bind(&call.session_id)
    .execute(&mut **tx)
    .await?;
    let members = std::iter::once((&call.caller, "caller", None)).chain(
        call.callees
            .iter()
            .map(|m| (&m.identity, "callee", m.ring.as_deref())),
    );
    for (identity, role, ring) in members {
        sqlx::query(
            "INSERT INTO call_members (call_id, identity, role, ring) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (call_id, identity) DO UPDATE SET ring = excluded.ring",
        )
        .bind(&call.id)
        .bind(identity)
        .bind(role)
        .bind(ring)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Meter {
    /// Logs a new call and, for a paid call, holds its payer's first
    /// increment, with its webhooks, in one transaction: all of it or
    /// nothing. `InsufficientBalance` (nothing written) when the payer's
    /// wallet cannot cover `hold.coins` or is in debt.
    pub async fn open_call(
        &self,
        call: &CallRecord,
        hold: Option<&CallHold>,
        webhooks: &[CallWebhook],
    ) -> Result<(), MeterError> {
        check_call(call)?;
        if let Some(hold) = hold {
            check_id("payer", &hold.payer)?;
            if hold.coins <= 0 || hold.coins > crate::ledger::MAX_COINS {
                return Err(MeterError::InvalidAmount(format!(
                    "a call hold of {} coins",
                    hold.coins
                )));
            }
        }
        let now = self.inner.clock.now_ms();
        let _io = self.inner.clock.io_guard();
        let mut tx = self.inner.db.begin().await?;
        let mut held = None;
        if let Some(hold) = hold {
            let wallet = ledger::wallet_id(&hold.payer);
            let short = |why: String| Err(MeterError::InsufficientBalance(why));
            let Some(w) = ledger::lock_wallet(&mut tx, &wallet).await? else {
                return short(format!("{} has no wallet", hold.payer));
            };
            let debt: i64 = sqlx::query_scalar("SELECT debt FROM accounts WHERE id = $1")
                .bind(&wallet)
                .fetch_one(&mut *tx)
                .await?;
            if debt > 0 {
                return short(format!("{} owes {debt} coins of a refund", hold.payer));
            }
            if w.available() < hold.coins {
                return short(format!(
                    "{} has {} coins available; the call's first increment costs {}",
                    hold.payer,
                    w.available(),
                    hold.coins
                ));
            }
            write_call(&mut tx, &self.inner.config.node_id, call).await?;
            sqlx::query(
                "INSERT INTO call_holds (call_id, wallet, coins, placed_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&call.id)
            .bind(&wallet)
            .bind(hold.coins)
            .bind(now)
            .bind(hold.expires_ms)
            .execute(&mut *tx)
            .await?;
            held = Some(ledger::change_wallet(&mut tx, &wallet, 0, hold.coins).await?);
        } else {
            write_call(&mut tx, &self.inner.config.node_id, call).await?;
        }
        self.enqueue_call_webhooks(&mut tx, webhooks, now).await?;
        tx.commit().await?;
        if let (Some(hold), Some(snap)) = (hold, held) {
            self.inner.wallet_changed(&hold.payer, snap, None);
        }
        self.inner.outbox_written();
        Ok(())
    }

    /// Writes `call` (its members included) as it stands now, with its
    /// webhooks, in one transaction. A call that has ended releases its
    /// hold, if billing never took it over.
    pub async fn log_call(
        &self,
        call: &CallRecord,
        webhooks: &[CallWebhook],
    ) -> Result<(), MeterError> {
        check_call(call)?;
        let now = self.inner.clock.now_ms();
        let _io = self.inner.clock.io_guard();
        let mut tx = self.inner.db.begin().await?;
        write_call(&mut tx, &self.inner.config.node_id, call).await?;
        let released = match call.state.as_str() {
            "ended" => take_call_hold(&mut tx, &call.id).await?,
            _ => None,
        };
        self.enqueue_call_webhooks(&mut tx, webhooks, now).await?;
        tx.commit().await?;
        if let Some(released) = released
            && let Some(payer) = released.wallet.strip_prefix("wallet:")
        {
            self.inner.wallet_changed(payer, released.after, None);
        }
        self.inner.outbox_written();
        Ok(())
    }

    async fn enqueue_call_webhooks(
        &self,
        tx: &mut Tx,
        webhooks: &[CallWebhook],
        now: i64,
    ) -> Result<(), MeterError> {
        if self.inner.webhooks_on() {
            for w in webhooks {
                webhook::enqueue(tx, w.event_type, w.data.clone(), now).await?;
            }
        }
        Ok(())
    }

    /// The call `id`, if logged.
    pub async fn call(&self, id: &str) -> Result<Option<CallRecord>, MeterError> {
        check_id("call id", id)?;
        let _io = self.inner.clock.io_guard();
        let row = sqlx::query(&format!("{SELECT} WHERE c.id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.db.read)
            .await?;
        match row {
            Some(row) => Ok(Some(self.with_callees(record(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// The calls `identity` was a member of, newest first: at most `limit`
    /// (1..=`MAX_PAGE`), after `after` (the last of the previous page).
    pub async fn calls_of(
        &self,
        identity: &str,
        after: Option<&CallCursor>,
        limit: u32,
    ) -> Result<Vec<CallRecord>, MeterError> {
        check_id("identity", identity)?;
        let limit = i64::from(limit.clamp(1, MAX_PAGE));
        let (after_ms, after_id) = match after {
            Some(cursor) => (cursor.created_ms, cursor.id.as_str()),
            None => (i64::MAX, ""),
        };
        let _io = self.inner.clock.io_guard();
        let rows = sqlx::query(&format!(
            "{SELECT} JOIN call_members m ON m.call_id = c.id AND m.identity = $1 \
             WHERE c.created_ms < $2 OR (c.created_ms = $2 AND c.id < $3) \
             ORDER BY c.created_ms DESC, c.id DESC LIMIT $4"
        ))
        .bind(identity)
        .bind(after_ms)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.inner.db.read)
        .await?;
        let mut calls = Vec::with_capacity(rows.len());
        for row in &rows {
            calls.push(self.with_callees(record(row)?).await?);
        }
        Ok(calls)
    }

    /// Ends as `failed` every call this node left unended (it restarted),
    /// releasing their holds: a call never stays ringing. Returns how many.
    pub async fn fail_unended_calls(&self) -> Result<u64, MeterError> {
        let node = self.inner.config.node_id.clone();
        self.fail_unended_calls_of(&node).await
    }

    /// Ends as `failed` every call node `node` left unended (it is gone),
    /// as [`Meter::fail_unended_calls`] does for this node.
    pub async fn fail_unended_calls_of(&self, node: &str) -> Result<u64, MeterError> {
        let now = self.inner.clock.now_ms();
        let _io = self.inner.clock.io_guard();
        let mut tx = self.inner.db.begin().await?;
        let held: Vec<String> = sqlx::query_scalar(
            "SELECT h.call_id FROM call_holds h JOIN calls c ON c.id = h.call_id \
             WHERE c.node = $1 AND c.state <> 'ended'",
        )
        .bind(node)
        .fetch_all(&mut *tx)
        .await?;
        for call_id in held {
            take_call_hold(&mut tx, &call_id).await?;
        }
        sqlx::query(
            "UPDATE call_members SET ring = 'cancelled' WHERE ring = 'ringing' AND call_id IN \
             (SELECT id FROM calls WHERE node = $1 AND state <> 'ended')",
        )
        .bind(node)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE calls SET state = 'ended', \
             outcome = CASE WHEN answered_ms IS NULL THEN 'failed' ELSE 'completed' END, \
             ended_ms = $2, end_reason = 'failed' WHERE node = $1 AND state <> 'ended'",
        )
        .bind(node)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn with_callees(&self, mut call: CallRecord) -> Result<CallRecord, MeterError> {
        let rows = sqlx::query(
            "SELECT identity, ring FROM call_members WHERE call_id = $1 AND role = 'callee' \
             ORDER BY identity",
        )
        .bind(&call.id)
        .fetch_all(&self.inner.db.read)
        .await?;
        call.callees = rows
            .iter()
            .map(|r| {
                Ok(CallMember {
                    identity: get(r, "identity")?,
                    ring: r.try_get("ring")?,
                })
            })
            .collect::<Result<_, MeterError>>()?;
        Ok(call)
    }
}

/// One row of [`SELECT`] as a call, without its callees.
pub(crate) fn record(row: &sqlx::any::AnyRow) -> Result<CallRecord, MeterError> {
    let call_type: String = get(row, "call_type")?;
    Ok(CallRecord {
        id: get(row, "id")?,
        room: get(row, "room")?,
        caller: get(row, "caller")?,
        callees: Vec::new(),
        call_type: call_type.parse()?,
        state: get(row, "state")?,
        outcome: row.try_get("outcome")?,
        created_ms: get(row, "created_ms")?,
        answered_ms: row.try_get("answered_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        ended_by: row.try_get("ended_by")?,
        end_reason: row.try_get("end_reason")?,
        session_id: row.try_get("session_id")?,
        billed_seconds: row.try_get("billed_seconds")?,
        coins: row.try_get("coins")?,
    })
}

/// Releases every call hold past its expiry: the call's node died before
/// it ended or billed the call. Returns how many.
pub(crate) async fn release_expired_call_holds(inner: &Inner, now: i64) -> Result<u64, MeterError> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT call_id FROM call_holds WHERE expires_ms < $1")
            .bind(now)
            .fetch_all(&inner.db.write)
            .await?;
    let mut n = 0;
    for call_id in ids {
        let mut tx = inner.db.begin().await?;
        let released = take_call_hold(&mut tx, &call_id).await?;
        tx.commit().await?;
        if let Some(released) = released {
            n += 1;
            if let Some(payer) = released.wallet.strip_prefix("wallet:") {
                inner.wallet_changed(payer, released.after, None);
            }
        }
    }
    Ok(n)
}
