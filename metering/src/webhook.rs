//! Signed webhooks from a transactional outbox.
//!
//! An event is a row in `outbox`, inserted in the same transaction as the
//! ledger change it reports, so it exists if and only if the change does.
//! A delivery task posts due rows (at least once: a crash between the POST
//! and marking it delivered sends it again; receivers de-duplicate on the
//! event id), retrying failures with exponential backoff; rows survive
//! restarts in the database.
//!
//! Each POST carries `Callgate-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is HMAC-SHA256(secret, "<t>.<raw body>"); [`verify_signature`]
//! checks one.

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::db::Db;
use crate::error::MeterError;
use crate::ledger::Tx;
use crate::metrics::MeterMetrics;

/// Where and how events are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The app backend's endpoint (`https://…`).
    pub url: String,
    /// The shared secret the signature is made with.
    pub secret: String,
    /// One POST's time limit.
    pub timeout: Duration,
    /// First retry delay; doubles each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before an event is marked `dead` (kept in the outbox).
    pub max_attempts: u32,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 30,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MeterError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(MeterError::Config(format!(
                "webhook url `{}` is not http(s)://…",
                self.url
            )));
        }
        if self.secret.len() < 16 {
            return Err(MeterError::Config(
                "webhook secret must be at least 16 bytes".into(),
            ));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(MeterError::Config(
                "webhook backoff must be > 0 and max_backoff >= initial_backoff".into(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(MeterError::Config(
                "webhook max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The event types.
pub mod events {
    pub const SESSION_STARTED: &str = "session.started";
    pub const SESSION_ENDED: &str = "session.ended";
    pub const WALLET_CREDITED: &str = "wallet.credited";
    pub const WALLET_REFUNDED: &str = "wallet.refunded";
    pub const WALLET_LOW_BALANCE: &str = "wallet.low_balance";
    /// The call lifecycle (docs/calls.md), queued by the call desk.
    pub const CALL_STARTED: &str = "call.started";
    pub const CALL_RING: &str = "call.ring";
    pub const CALL_ANSWERED: &str = "call.answered";
    pub const CALL_ENDED: &str = "call.ended";
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

/// An event id that sorts in the order events were made: the outbox
/// delivers due events by id, so events of one change (a call's
/// `call.started` and `call.ring`) go out in the order they were queued.
/// Milliseconds, then a sequence number of this process, then randomness
/// (32 hex digits in all, as before).
fn event_id(now_ms: i64) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "evt_{:012x}{seq:04x}{:016x}",
        now_ms.clamp(0, 0xffff_ffff_ffff),
        rand::random::<u64>()
    )
}

/// Inserts an event into the outbox inside `tx`. Returns its id.
pub(crate) async fn enqueue(
    tx: &mut Tx,
    event_type: &str,
    data: Value,
    now_ms: i64,
) -> Result<String, MeterError> {
    let id = event_id(now_ms);
    let body = json!({
        "id": id,
        "type": event_type,
        "created_at_ms": now_ms,
        "data": data,
    })
    .to_string();
    sqlx::query(
        "INSERT INTO outbox (id, event_type, body, created_ms, status, attempts, next_attempt_ms) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $4)",
    )
    .bind(&id)
    .bind(event_type)
    .bind(&body)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn hmac_sha256_hex(secret: &[u8], message: &[&[u8]]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for part in message {
        ctx.update(part);
    }
    hex(ctx.sign().as_ref())
}

/// The `Callgate-Signature` header value for `body` sent at `unix_seconds`.
pub fn sign(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let t = unix_seconds.to_string();
    let v1 = hmac_sha256_hex(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={v1}")
}

/// Checks a `Callgate-Signature` header against the raw body: some `v1`
/// must be HMAC-SHA256(secret, "<t>.<body>") (compared in constant time)
/// and `t` within `tolerance_seconds` of `now_unix_seconds` (replays of old
/// deliveries are refused; pass `i64::MAX` to skip the age check).
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix_seconds: i64,
    tolerance_seconds: i64,
) -> Result<(), MeterError> {
    let mut t: Option<&str> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t_text = t.ok_or_else(|| MeterError::BadSignature("no t= in the signature".into()))?;
    let t: i64 = t_text
        .parse()
        .map_err(|_| MeterError::BadSignature("t= is not a unix time".into()))?;
    if now_unix_seconds.abs_diff(t) > tolerance_seconds.max(0) as u64 {
        return Err(MeterError::BadSignature(format!(
            "timestamp {t} is outside the {tolerance_seconds} s tolerance"
        )));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let message = [t_text.as_bytes(), b".", body].concat();
    for sig in sigs {
        if let Some(bytes) = unhex(sig)
            && hmac::verify(&key, &message, &bytes).is_ok()
        {
            return Ok(());
        }
    }
    Err(MeterError::BadSignature(
        "no v1 signature matches the body".into(),
    ))
}

/// Delivers due outbox rows until `stop` turns true.
pub(crate) async fn deliver_loop(
    db: Db,
    config: WebhookConfig,
    metrics: MeterMetrics,
    clock: Clock,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("callgate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "webhooks: cannot build an HTTP client; no deliveries");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let next = match deliver_due(&db, &config, &client, &clock, &metrics).await {
            Ok(next) => next,
            Err(e) => {
                warn!(error = %e, "webhooks: outbox unreadable; retrying");
                Some(clock.now_ms() + 1000)
            }
        };
        // Sleep until the next due row (at most 30 s: rows written by other
        // nodes wake no one here) or until a new row is written.
        let wait_ms = next
            .map(|at| (at - clock.now_ms()).clamp(0, 30_000))
            .unwrap_or(30_000);
        if wait_ms == 0 {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Posts every due row once; returns when the next row falls due.
async fn deliver_due(
    db: &Db,
    config: &WebhookConfig,
    client: &reqwest::Client,
    clock: &Clock,
    metrics: &MeterMetrics,
) -> Result<Option<i64>, MeterError> {
    loop {
        let now = clock.now_ms();
        let rows = {
            let _io = clock.io_guard();
            sqlx::query(
                "SELECT id, body, attempts, next_attempt_ms FROM outbox \
                 WHERE status = 'pending' AND next_attempt_ms <= $1 \
                 ORDER BY next_attempt_ms, id LIMIT 32",
            )
            .bind(now)
            .fetch_all(&db.read)
            .await?
        };
        if rows.is_empty() {
            let _io = clock.io_guard();
            let row = sqlx::query(
                "SELECT CAST(MIN(next_attempt_ms) AS BIGINT) AS next, \
                 CAST(MIN(created_ms) AS BIGINT) AS oldest, COUNT(*) AS pending \
                 FROM outbox WHERE status = 'pending'",
            )
            .fetch_one(&db.read)
            .await?;
            let next: Option<i64> = row.try_get("next")?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            let pending: i64 = row.try_get("pending")?;
            metrics.webhook_pending.set(pending);
            metrics
                .webhook_oldest_pending_seconds
                .set(oldest.map_or(0, |at| (now - at).max(0) / 1000));
            return Ok(next);
        }
        for row in rows {
            let id: String = row.try_get("id")?;
            let body: String = row.try_get("body")?;
            let attempts: i64 = row.try_get("attempts")?;
            let due: i64 = row.try_get("next_attempt_ms")?;
            let _io = clock.io_guard();
            // Claim the row for the time limit of one POST, so another node
            // sharing the database does not post it at the same time.
            let lease = now + config.timeout.as_millis() as i64 + 1000;
            let claimed = sqlx::query(
                "UPDATE outbox SET next_attempt_ms = $3 \
                 WHERE id = $1 AND status = 'pending' AND next_attempt_ms = $2",
            )
            .bind(&id)
            .bind(due)
            .bind(lease)
            .execute(&db.write)
            .await?;
            if claimed.rows_affected() != 1 {
                continue;
            }
            let t = clock.now_ms() / 1000;
            let result = client
                .post(&config.url)
                .header("content-type", "application/json")
                .header(
                    "callgate-signature",
                    sign(&config.secret, t, body.as_bytes()),
                )
                .header("callgate-event-id", &id)
                .body(body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("HTTP {}", response.status())),
                Err(e) => Some(e.to_string()),
            };
            let now = clock.now_ms();
            match failure {
                None => {
                    debug!(event = %id, "webhook delivered");
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["delivered"])
                        .inc();
                    sqlx::query(
                        "UPDATE outbox SET status = 'delivered', delivered_ms = $2, \
                         attempts = attempts + 1, last_error = NULL WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(now)
                    .execute(&db.write)
                    .await?;
                }
                Some(error) => {
                    let attempts = attempts + 1;
                    let dead = attempts >= i64::from(config.max_attempts);
                    let backoff = backoff(config, attempts);
                    warn!(event = %id, attempts, %error, dead, "webhook delivery failed");
                    metrics
                        .webhook_deliveries
                        .with_label_values(&[if dead { "dead" } else { "failed" }])
                        .inc();
                    sqlx::query(
                        "UPDATE outbox SET attempts = $2, next_attempt_ms = $3, last_error = $4, \
                         status = CASE WHEN $5 = 1 THEN 'dead' ELSE 'pending' END WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(attempts)
                    .bind(now + backoff.as_millis() as i64)
                    .bind(&error)
                    .bind(i64::from(dead))
                    .execute(&db.write)
                    .await?;
                }
            }
        }
    }
}

/// The delay after the `attempts`-th failure: initial × 2^(attempts−1),
/// capped at `max_backoff`.
pub(crate) fn backoff(config: &WebhookConfig, attempts: i64) -> Duration {
    let shift = (attempts - 1).clamp(0, 30) as u32;
    config
        .initial_backoff
        .saturating_mul(1u32 << shift)
        .min(config.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse() {
        let body = br#"{"id":"evt_1","type":"wallet.credited"}"#;
        let header = sign("whsec_0123456789abcdef", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        verify_signature("whsec_0123456789abcdef", &header, body, 1_700_000_100, 300).unwrap();
        // Several v1 (secret rotation): any one may match.
        let two = format!("{header},v1=00ff");
        verify_signature("whsec_0123456789abcdef", &two, body, 1_700_000_000, 300).unwrap();
        let bad = |h: &str, b: &[u8], now: i64| {
            verify_signature("whsec_0123456789abcdef", h, b, now, 300)
                .unwrap_err()
                .code()
        };
        assert_eq!(bad(&header, b"{}", 1_700_000_000), "bad_signature");
        assert_eq!(bad(&header, body, 1_700_001_000), "bad_signature");
        assert_eq!(bad("v1=abcd", body, 1_700_000_000), "bad_signature");
        assert_eq!(bad("t=x,v1=abcd", body, 1_700_000_000), "bad_signature");
        assert_eq!(
            bad("t=1700000000,v1=zz", body, 1_700_000_000),
            "bad_signature"
        );
        assert!(
            verify_signature("another-secret-0123", &header, body, 1_700_000_000, 300).is_err()
        );
        // Known answer (RFC 4231 test case 2 key/data, HMAC-SHA256).
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut c = WebhookConfig::new("http://127.0.0.1:1/", "0123456789abcdef");
        c.initial_backoff = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(10);
        let got: Vec<u64> = (1..=6).map(|a| backoff(&c, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&c, 1000).as_secs(), 10);
    }
}
