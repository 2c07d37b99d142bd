//! Exports for finance: `sessions`, `ledger`, `usage` and `calls` as RFC
//! 4180 CSV or JSON lines, streamed from the database row by row (constant
//! memory for any range). Columns are documented in docs/metering.md and
//! stable.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::any::AnyRow;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::call_log::{self, CallMember, CallRecord};
use crate::db::get;
use crate::error::MeterError;
use crate::ledger;
use crate::meter::{Inner, check_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// One row per ended billed session.
    Sessions,
    /// One row per posting.
    Ledger,
    /// One row per participant's connected time.
    Usage,
    /// One row per call of the call log.
    Calls,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Sessions => "sessions",
            ExportKind::Ledger => "ledger",
            ExportKind::Usage => "usage",
            ExportKind::Calls => "calls",
        }
    }

    /// The columns, in order (the CSV header; the JSON keys).
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            ExportKind::Sessions => &[
                "session_id",
                "room",
                "payer",
                "payee",
                "call_type",
                "started_at",
                "ended_at",
                "duration_ms",
                "billed_seconds",
                "rate_per_minute",
                "initial_increment",
                "increment",
                "commission_bps",
                "coins",
                "payee_coins",
                "platform_coins",
                "end_reason",
            ],
            ExportKind::Ledger => &[
                "posting_id",
                "at",
                "debit",
                "credit",
                "coins",
                "kind",
                "session_id",
                "reference",
            ],
            ExportKind::Usage => &[
                "usage_id",
                "room",
                "identity",
                "kind",
                "started_at",
                "ended_at",
                "duration_ms",
                "seconds",
            ],
            ExportKind::Calls => &[
                "call_id",
                "room",
                "caller",
                "callees",
                "call_type",
                "state",
                "outcome",
                "created_at",
                "answered_at",
                "ended_at",
                "ended_by",
                "end_reason",
                "duration_s",
                "session_id",
                "billed_seconds",
                "coins",
            ],
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportKind {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        match s {
            "sessions" => Ok(ExportKind::Sessions),
            "ledger" => Ok(ExportKind::Ledger),
            "usage" => Ok(ExportKind::Usage),
            "calls" => Ok(ExportKind::Calls),
            other => Err(MeterError::Malformed(format!(
                "export `{other}` is not sessions, ledger, usage or calls"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// RFC 4180: a header line, CRLF line ends, quoted when needed.
    Csv,
    /// One JSON object per line (`\n`), no header.
    JsonLines,
}

impl FromStr for ExportFormat {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" | "json-lines" | "ndjson" => Ok(ExportFormat::JsonLines),
            other => Err(MeterError::Malformed(format!(
                "format `{other}` is not csv or jsonl"
            ))),
        }
    }
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::JsonLines => "application/x-ndjson",
        }
    }
}

/// [from, to) in unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    /// Refuses a range whose `from` is not before its `to`.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<TimeRange, MeterError> {
        let r = TimeRange { from_ms, to_ms };
        r.validate()?;
        Ok(r)
    }

    /// Everything.
    pub fn all() -> TimeRange {
        TimeRange {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        }
    }

    pub fn validate(&self) -> Result<(), MeterError> {
        if self.from_ms >= self.to_ms {
            return Err(MeterError::InvalidRange(format!(
                "from ({}) must be before to ({})",
                self.from_ms, self.to_ms
            )));
        }
        Ok(())
    }

    /// Reads `from`/`to`, each optional (open-ended when missing), as
    /// RFC 3339 (`2026-01-31T18:30:00Z`, `2026-01-31 18:30:00`), a date
    /// (`2026-01-31`, midnight UTC) or unix milliseconds.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, MeterError> {
        let from = from.map(parse_time).transpose()?.unwrap_or(i64::MIN);
        let to = to.map(parse_time).transpose()?.unwrap_or(i64::MAX);
        TimeRange::new(from, to)
    }
}

/// One time as [`TimeRange::parse`] reads it.
pub fn parse_time(text: &str) -> Result<i64, MeterError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let bad = |e: String| MeterError::InvalidRange(format!("`{text}` is not a time: {e}"));
    let st = if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        humantime::parse_rfc3339_weak(&format!("{t} 00:00:00"))
    } else if t.ends_with('Z') || t.ends_with('z') {
        humantime::parse_rfc3339(t)
    } else {
        humantime::parse_rfc3339_weak(t)
    }
    .map_err(|e| bad(e.to_string()))?;
    let ms = st
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad("before 1970".into()))?
        .as_millis();
    i64::try_from(ms).map_err(|_| bad("too late".into()))
}

/// RFC 3339 UTC with milliseconds; a time before 1970 or after 9999
/// (which RFC 3339 cannot write) as its number of milliseconds.
pub fn format_time(ms: i64) -> String {
    let Ok(since_epoch) = u64::try_from(ms) else {
        return ms.to_string();
    };
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(since_epoch));
    // humantime's Display fails past 9999, and `to_string` would panic on it.
    let mut text = String::new();
    match fmt::write(&mut text, format_args!("{time}")) {
        Ok(()) => text,
        Err(_) => ms.to_string(),
    }
}

#[derive(Serialize)]
struct SessionRow {
    session_id: String,
    room: String,
    payer: String,
    payee: Option<String>,
    call_type: String,
    started_at: String,
    ended_at: String,
    duration_ms: i64,
    billed_seconds: i64,
    rate_per_minute: i64,
    initial_increment: i64,
    increment: i64,
    commission_bps: i64,
    coins: i64,
    payee_coins: i64,
    platform_coins: i64,
    end_reason: String,
}

#[derive(Serialize)]
struct LedgerRow {
    posting_id: i64,
    at: String,
    debit: String,
    credit: String,
    coins: i64,
    kind: String,
    session_id: Option<String>,
    reference: Option<String>,
}

#[derive(Serialize)]
struct UsageRow {
    usage_id: i64,
    room: String,
    identity: String,
    kind: String,
    started_at: String,
    ended_at: String,
    duration_ms: i64,
    seconds: i64,
}

/// A call; `callees` is `identity:ring;…` in CSV, an array of
/// [`CalleeRow`] in JSON lines.
#[derive(Serialize)]
struct CallRow<C> {
    call_id: String,
    room: String,
    caller: String,
    callees: C,
    call_type: &'static str,
    state: String,
    outcome: Option<String>,
    created_at: String,
    answered_at: Option<String>,
    ended_at: Option<String>,
    ended_by: Option<String>,
    end_reason: Option<String>,
    duration_s: Option<i64>,
    session_id: Option<String>,
    billed_seconds: Option<i64>,
    coins: Option<i64>,
}

#[derive(Serialize)]
struct CalleeRow {
    identity: String,
    ring: Option<String>,
}

/// Writes rows in one format, flushing to the async writer in chunks.
struct Sink<W> {
    out: W,
    format: ExportFormat,
    csv: csv::Writer<Vec<u8>>,
    json: Vec<u8>,
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK * 2))
}

const CHUNK: usize = 64 * 1024;

impl<W: AsyncWrite + Unpin + Send> Sink<W> {
    fn new(out: W, format: ExportFormat) -> Sink<W> {
        Sink {
            out,
            format,
            csv: csv_writer(),
            json: Vec::with_capacity(CHUNK * 2),
        }
    }

    fn header(&mut self, columns: &[&str]) -> Result<(), MeterError> {
        if self.format == ExportFormat::Csv {
            self.csv.write_record(columns).map_err(csv_error)?;
        }
        Ok(())
    }

    async fn row<T: Serialize>(&mut self, row: &T) -> Result<(), MeterError> {
        match self.format {
            ExportFormat::Csv => {
                self.csv.serialize(row).map_err(csv_error)?;
                if self.csv.get_ref().len() >= CHUNK {
                    self.drain().await?;
                }
            }
            ExportFormat::JsonLines => {
                serde_json::to_writer(&mut self.json, row)
                    .map_err(|e| MeterError::Internal(e.to_string()))?;
                self.json.push(b'\n');
                if self.json.len() >= CHUNK {
                    self.drain().await?;
                }
            }
        }
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), MeterError> {
        match self.format {
            ExportFormat::Csv => {
                let full = std::mem::replace(&mut self.csv, csv_writer());
                let buf = full
                    .into_inner()
                    .map_err(|e| MeterError::Io(std::io::Error::other(e.to_string())))?;
                self.out.write_all(&buf).await?;
            }
            ExportFormat::JsonLines => {
                self.out.write_all(&self.json).await?;
                self.json.clear();
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), MeterError> {
        self.drain().await?;
        self.out.flush().await?;
        self.out.shutdown().await?;
        Ok(())
    }
}

fn csv_error(e: csv::Error) -> MeterError {
    MeterError::Io(std::io::Error::other(e.to_string()))
}

pub(crate) async fn export<W>(
    inner: &Inner,
    kind: ExportKind,
    range: TimeRange,
    format: ExportFormat,
    user: Option<&str>,
    out: W,
) -> Result<u64, MeterError>
where
    W: AsyncWrite + Unpin + Send,
{
    range.validate()?;
    let pool = &inner.db.read;
    if let Some(user) = user {
        check_id("user", user)?;
        let _io = inner.clock.io_guard();
        let known: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM accounts WHERE id = $1 OR id = $2",
        )
        .bind(ledger::wallet_id(user))
        .bind(ledger::earnings_id(user))
        .fetch_one(pool)
        .await?;
        let used: Option<i64> =
            sqlx::query_scalar("SELECT id FROM participant_usage WHERE identity = $1 LIMIT 1")
                .bind(user)
                .fetch_optional(pool)
                .await?;
        let member: Option<String> =
            sqlx::query_scalar("SELECT call_id FROM call_members WHERE identity = $1 LIMIT 1")
                .bind(user)
                .fetch_optional(pool)
                .await?;
        if known == 0 && used.is_none() && member.is_none() {
            return Err(MeterError::UnknownAccount(format!(
                "no wallet, earnings, usage or call for user `{user}`"
            )));
        }
    }
    let (sql, user_binds): (String, Vec<String>) = match (kind, user) {
        (ExportKind::Sessions, u) => (
            format!(
                "SELECT id, room, payer, payee, call_type, started_ms, ended_ms, duration_ms, \
                 billed_seconds, rate_per_minute, incr_initial, incr_next, commission_bps, coins, \
                 payee_coins, platform_coins, end_reason FROM sessions \
                 WHERE state = 'ended' AND ended_ms >= $1 AND ended_ms < $2{} \
                 ORDER BY ended_ms, id",
                if u.is_some() {
                    " AND (payer = $3 OR payee = $3)"
                } else {
                    ""
                }
            ),
            u.map(|u| vec![u.to_owned()]).unwrap_or_default(),
        ),
        (ExportKind::Ledger, u) => (
            format!(
                "SELECT id, at_ms, debit, credit, coins, kind, session_id, reference FROM postings \
                 WHERE at_ms >= $1 AND at_ms < $2{} ORDER BY at_ms, id",
                if u.is_some() {
                    " AND (debit = $3 OR credit = $3 OR debit = $4 OR credit = $4)"
                } else {
                    ""
                }
            ),
            u.map(|u| vec![ledger::wallet_id(u), ledger::earnings_id(u)])
                .unwrap_or_default(),
        ),
        (ExportKind::Usage, u) => (
            format!(
                "SELECT id, room, identity, kind, started_ms, ended_ms FROM participant_usage \
                 WHERE ended_ms >= $1 AND ended_ms < $2{} ORDER BY ended_ms, id",
                if u.is_some() {
                    " AND identity = $3"
                } else {
                    ""
                }
            ),
            u.map(|u| vec![u.to_owned()]).unwrap_or_default(),
        ),
        // The call log's own query, wrapped whole (so the two never disagree
        // on a call's figures), one row per callee: a call's rows are
        // consecutive and are written as one.
        (ExportKind::Calls, u) => (
            format!(
                "SELECT x.*, m.identity AS callee, m.ring AS callee_ring FROM ({}) x \
                 LEFT JOIN call_members m ON m.call_id = x.id AND m.role = 'callee' \
                 WHERE x.created_ms >= $1 AND x.created_ms < $2{} \
                 ORDER BY x.created_ms, x.id",
                call_log::SELECT,
                if u.is_some() {
                    " AND EXISTS (SELECT 1 FROM call_members u \
                     WHERE u.call_id = x.id AND u.identity = $3)"
                } else {
                    ""
                }
            ),
            u.map(|u| vec![u.to_owned()]).unwrap_or_default(),
        ),
    };
    let mut query = sqlx::query(&sql).bind(range.from_ms).bind(range.to_ms);
    for b in &user_binds {
        query = query.bind(b.as_str());
    }
    let mut sink = Sink::new(out, format);
    sink.header(kind.columns())?;
    let mut rows = 0u64;
    {
        let _io = inner.clock.io_guard();
        let mut stream = query.fetch(pool);
        // The call whose callees are still being read.
        let mut call: Option<CallRecord> = None;
        while let Some(row) = stream.try_next().await? {
            match kind {
                ExportKind::Sessions => sink.row(&session_row(&row)?).await?,
                ExportKind::Ledger => sink.row(&ledger_row(&row)?).await?,
                ExportKind::Usage => sink.row(&usage_row(&row)?).await?,
                ExportKind::Calls => {
                    let id: String = get(&row, "id")?;
                    if call.as_ref().is_none_or(|c| c.id != id) {
                        if let Some(done) = call.take() {
                            write_call(&mut sink, done).await?;
                            rows += 1;
                        }
                        call = Some(call_log::record(&row)?);
                    }
                    let current = call.as_mut().expect("just set");
                    if let Some(identity) = get::<Option<String>>(&row, "callee")? {
                        current.callees.push(CallMember {
                            identity,
                            ring: get(&row, "callee_ring")?,
                        });
                    }
                    continue;
                }
            }
            rows += 1;
        }
        if let Some(done) = call {
            write_call(&mut sink, done).await?;
            rows += 1;
        }
    }
    sink.finish().await?;
    Ok(rows)
}

/// Writes one call, its callees in identity order (bytes, the same on
/// both databases).
async fn write_call<W: AsyncWrite + Unpin + Send>(
    sink: &mut Sink<W>,
    mut call: CallRecord,
) -> Result<(), MeterError> {
    call.callees.sort_by(|a, b| a.identity.cmp(&b.identity));
    let callees = std::mem::take(&mut call.callees);
    match sink.format {
        ExportFormat::Csv => {
            let pairs: Vec<String> = callees
                .into_iter()
                .map(|m| format!("{}:{}", m.identity, m.ring.unwrap_or_default()))
                .collect();
            sink.row(&call_row(call, pairs.join(";"))).await
        }
        ExportFormat::JsonLines => {
            let list: Vec<CalleeRow> = callees
                .into_iter()
                .map(|m| CalleeRow {
                    identity: m.identity,
                    ring: m.ring,
                })
                .collect();
            sink.row(&call_row(call, list)).await
        }
    }
}

fn call_row<C>(call: CallRecord, callees: C) -> CallRow<C> {
    let duration_s = match (call.answered_ms, call.ended_ms) {
        (Some(answered), Some(ended)) => Some((ended - answered).div_euclid(1000)),
        _ => None,
    };
    CallRow {
        call_id: call.id,
        room: call.room,
        caller: call.caller,
        callees,
        call_type: call.call_type.as_str(),
        state: call.state,
        outcome: call.outcome,
        created_at: format_time(call.created_ms),
        answered_at: call.answered_ms.map(format_time),
        ended_at: call.ended_ms.map(format_time),
        ended_by: call.ended_by,
        end_reason: call.end_reason,
        duration_s,
        session_id: call.session_id,
        billed_seconds: call.billed_seconds,
        coins: call.coins,
    }
}

fn session_row(row: &AnyRow) -> Result<SessionRow, MeterError> {
    Ok(SessionRow {
        session_id: get(row, "id")?,
        room: get(row, "room")?,
        payer: get(row, "payer")?,
        payee: get(row, "payee")?,
        call_type: get(row, "call_type")?,
        started_at: format_time(get(row, "started_ms")?),
        ended_at: format_time(get(row, "ended_ms")?),
        duration_ms: get(row, "duration_ms")?,
        billed_seconds: get(row, "billed_seconds")?,
        rate_per_minute: get(row, "rate_per_minute")?,
        initial_increment: get(row, "incr_initial")?,
        increment: get(row, "incr_next")?,
        commission_bps: get(row, "commission_bps")?,
        coins: get(row, "coins")?,
        payee_coins: get(row, "payee_coins")?,
        platform_coins: get(row, "platform_coins")?,
        end_reason: get(row, "end_reason")?,
    })
}

fn ledger_row(row: &AnyRow) -> Result<LedgerRow, MeterError> {
    Ok(LedgerRow {
        posting_id: get(row, "id")?,
        at: format_time(get(row, "at_ms")?),
        debit: get(row, "debit")?,
        credit: get(row, "credit")?,
        coins: get(row, "coins")?,
        kind: get(row, "kind")?,
        session_id: get(row, "session_id")?,
        reference: get(row, "reference")?,
    })
}

fn usage_row(row: &AnyRow) -> Result<UsageRow, MeterError> {
    let started: i64 = get(row, "started_ms")?;
    let ended: i64 = get(row, "ended_ms")?;
    let duration = ended - started;
    Ok(UsageRow {
        usage_id: get(row, "id")?,
        room: get(row, "room")?,
        identity: get(row, "identity")?,
        kind: get(row, "kind")?,
        started_at: format_time(started),
        ended_at: format_time(ended),
        duration_ms: duration,
        seconds: (duration.max(0) as u64).div_ceil(1000) as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ranges() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(parse_time("2023-11-14").unwrap(), 1_699_920_000_000);
        assert_eq!(
            parse_time("2023-11-14 22:13:20").unwrap(),
            1_700_000_000_000
        );
        for bad in ["yesterday", "2023-13-01", "", "2023-11-14T25:00:00Z"] {
            assert_eq!(
                parse_time(bad).unwrap_err().code(),
                "invalid_range",
                "{bad}"
            );
        }
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(format_time(-5), "-5");
        assert_eq!(format_time(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Past 9999 this panicked ("a Display implementation returned an
        // error unexpectedly").
        assert_eq!(format_time(253_402_300_800_000), "253402300800000");
        assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
        assert!(TimeRange::new(5, 5).is_err());
        assert!(TimeRange::new(6, 5).is_err());
        TimeRange::new(5, 6).unwrap();
        let r = TimeRange::parse(Some("2023-11-14"), None).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (1_699_920_000_000, i64::MAX));
        assert_eq!(
            TimeRange::parse(Some("2023-11-15"), Some("2023-11-14"))
                .unwrap_err()
                .code(),
            "invalid_range"
        );
        assert_eq!(
            "jsonl".parse::<ExportFormat>().unwrap(),
            ExportFormat::JsonLines
        );
        assert_eq!("usage".parse::<ExportKind>().unwrap(), ExportKind::Usage);
        assert_eq!("calls".parse::<ExportKind>().unwrap(), ExportKind::Calls);
        assert!("xml".parse::<ExportFormat>().is_err());
    }
}
