//! The call log (docs/calls.md): every call as a row, its members with
//! their ring states, and its billed seconds and coins from its metering
//! session. The driver of a call (module `callgate_calls`) writes the whole
//! row each time the call changes; the database's checks keep the names
//! to the lists in migration 0004.

use sqlx::Row;

use crate::db::get;
use crate::error::MeterError;
use crate::meter::{Meter, check_id};
use crate::terms::CallType;

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
pub(crate) const SELECT: &str = "SELECT c.id, c.room, c.caller, c.call_type, c.state, c.outcome, \
     c.created_ms, c.answered_ms, c.ended_ms, c.ended_by, c.end_reason, c.session_id, \
     s.billed_seconds, CASE WHEN s.state = 'ended' THEN s.coins END AS coins \
     FROM calls c LEFT JOIN sessions s ON s.id = c.session_id";

impl Meter {
    /// Writes `call` (its members included) as it stands now: a new call,
    /// or a change of one already logged.
    pub async fn log_call(&self, call: &CallRecord) -> Result<(), MeterError> {
        check_id("call id", &call.id)?;
        check_id("room", &call.room)?;
        check_id("caller", &call.caller)?;
        for member in &call.callees {
            check_id("callee", &member.identity)?;
        }
        let _io = self.inner.clock.io_guard();
        let mut tx = self.inner.db.begin().await?;
        sqlx::query(
            "INSERT INTO calls (id, node, room, caller, call_type, state, outcome, created_ms, \
             answered_ms, ended_ms, ended_by, end_reason, session_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             outcome = excluded.outcome, answered_ms = excluded.answered_ms, \
             ended_ms = excluded.ended_ms, ended_by = excluded.ended_by, \
             end_reason = excluded.end_reason, session_id = excluded.session_id",
        )
        .bind(&call.id)
        .bind(&self.inner.config.node_id)
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
        .execute(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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

    /// Ends as `failed` every call this node left unended (it restarted):
    /// a call never stays ringing. Returns how many.
    pub async fn fail_unended_calls(&self) -> Result<u64, MeterError> {
        let now = self.inner.clock.now_ms();
        let _io = self.inner.clock.io_guard();
        let mut tx = self.inner.db.begin().await?;
        sqlx::query(
            "UPDATE call_members SET ring = 'cancelled' WHERE ring = 'ringing' AND call_id IN \
             (SELECT id FROM calls WHERE node = $1 AND state <> 'ended')",
        )
        .bind(&self.inner.config.node_id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE calls SET state = 'ended', \
             outcome = CASE WHEN answered_ms IS NULL THEN 'failed' ELSE 'completed' END, \
             ended_ms = $2, end_reason = 'failed' WHERE node = $1 AND state <> 'ended'",
        )
        .bind(&self.inner.config.node_id)
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
