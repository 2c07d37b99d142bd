//! The meter: a cheap, clonable handle on the ledger and its sessions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::db::{Db, get, is_unique_violation};
use crate::error::MeterError;
use crate::ledger::{self, AuditReport, MAX_COINS, Posting, WalletSnap};
use crate::metrics::MeterMetrics;
use crate::razorpay::{PaidOrder, RazorpayConfig};
use crate::session::{
    self, Actor, Core, EndReason, Ledgered, Msg, SESSION_COLUMNS, SessionHandle, SessionStart,
    SessionSummary, Shared,
};
use crate::terms::BillingTerms;
use crate::webhook::{self, WebhookConfig, events};

/// How the meter runs. `MeterConfig::new(url)` has the defaults.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// `sqlite://<file>` (see [`crate::sqlite_url`]) or `postgres://…`.
    pub database_url: String,
    /// How often open sessions' progress is persisted (a crash loses at
    /// most this much charge per call). Default 5 s.
    pub checkpoint_interval: Duration,
    /// Warn this long before the cut. Default 60 s and 10 s.
    pub warnings: Vec<Duration>,
    /// A hold not refreshed by a checkpoint for this long belongs to a dead
    /// process and is recovered by any node. Default 120 s; at least two
    /// checkpoint intervals.
    pub hold_expiry: Duration,
    /// Length of one hold block before rounding up to the increments.
    /// Default 60 s; whole seconds.
    pub block: Duration,
    /// This node's name. A node that starts recovers every session its
    /// previous run left open; nodes sharing PostgreSQL need distinct names.
    /// Default "local".
    pub node_id: String,
    /// Database connections (PostgreSQL pool; SQLite readers). Default 8.
    pub max_connections: u32,
    pub webhooks: Option<WebhookConfig>,
    pub razorpay: Option<RazorpayConfig>,
    /// Named rate plans (`Meter::plan`).
    pub plans: BTreeMap<String, BillingTerms>,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            database_url: String::new(),
            checkpoint_interval: Duration::from_secs(5),
            warnings: vec![Duration::from_secs(60), Duration::from_secs(10)],
            hold_expiry: Duration::from_secs(120),
            block: Duration::from_secs(60),
            node_id: "local".into(),
            max_connections: 8,
            webhooks: None,
            razorpay: None,
            plans: BTreeMap::new(),
        }
    }
}

impl MeterConfig {
    pub fn new(database_url: impl Into<String>) -> MeterConfig {
        MeterConfig {
            database_url: database_url.into(),
            ..MeterConfig::default()
        }
    }

    pub(crate) fn block_secs(&self) -> u64 {
        self.block.as_secs().max(1)
    }

    pub fn validate(&self) -> Result<(), MeterError> {
        let bad = |m: String| Err(MeterError::Config(m));
        if self.database_url.is_empty() {
            return bad("database_url is empty".into());
        }
        crate::db::Backend::of_url(&self.database_url)?;
        if self.checkpoint_interval < Duration::from_millis(100) {
            return bad("checkpoint_interval must be at least 100ms".into());
        }
        if self.hold_expiry < self.checkpoint_interval * 2 {
            return bad("hold_expiry must be at least twice checkpoint_interval".into());
        }
        if self.block.as_secs() == 0 || self.block.subsec_nanos() != 0 {
            return bad("block must be a whole number of seconds, at least 1".into());
        }
        if self.node_id.is_empty() {
            return bad("node_id is empty".into());
        }
        if let Some(w) = &self.webhooks {
            w.validate()?;
        }
        if let Some(r) = &self.razorpay {
            r.validate()?;
        }
        for (name, terms) in &self.plans {
            terms
                .validate()
                .map_err(|e| MeterError::Config(format!("plan `{name}`: {e}")))?;
        }
        Ok(())
    }
}

/// What the meter tells the rest of the server (`Meter::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterEvent {
    /// The projected seconds until the cut changed (also sent at start).
    SecondsLeft {
        session: String,
        room: String,
        payer: String,
        payee: Option<String>,
        seconds_left: u64,
    },
    /// A warning threshold was crossed (`seconds_left` is the threshold, or
    /// what is left when the session started or fell below it at once).
    Warning {
        session: String,
        room: String,
        payer: String,
        payee: Option<String>,
        seconds_left: u64,
    },
    /// The meter ended the session on its own: the call must stop.
    /// `reason` is `InsufficientBalance` (the cut), `Recovered` (closed by
    /// recovery while running here) or `MeterError` (no database).
    Cut {
        session: String,
        room: String,
        payer: String,
        payee: Option<String>,
        reason: EndReason,
    },
    /// A session ended (any reason), with its final figures.
    Ended { summary: SessionSummary },
}

/// A wallet as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletView {
    pub user: String,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    /// Coins a refund could not take back (docs/metering.md "Refunds"):
    /// the next credit repays them first; no paid call starts meanwhile.
    pub debt: i64,
}

/// What `credit` did. `applied` is false when the reference was already
/// credited (same user, same coins): nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credited {
    pub user: String,
    pub coins: i64,
    pub reference: String,
    pub applied: bool,
    pub posting_id: i64,
    /// Of `coins`, what went straight to repaying the wallet's debt (a
    /// `refund` posting in the same transaction).
    pub debt_repaid: i64,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
}

/// Media kind of a participant's time (the `usage` export).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageKind {
    Audio,
    Video,
}

impl UsageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Audio => "audio",
            UsageKind::Video => "video",
        }
    }
}

/// One participant's connected time in a room, paid or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub room: String,
    pub identity: String,
    pub kind: UsageKind,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
}

/// The meter. Cloning is cheap; every clone is the same meter.
#[derive(Clone)]
pub struct Meter {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("backend", &self.inner.db.backend)
            .field("node", &self.inner.config.node_id)
            .field("instance", &self.inner.instance)
            .finish()
    }
}

struct Entry {
    tx: mpsc::UnboundedSender<Msg>,
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct Registry {
    /// payer → session id → actor.
    by_payer: HashMap<String, HashMap<String, Entry>>,
}

pub(crate) struct Inner {
    pub db: Db,
    pub config: MeterConfig,
    pub clock: Clock,
    /// This run of this node (sessions it owns carry it).
    pub instance: String,
    events: broadcast::Sender<MeterEvent>,
    registry: Mutex<Registry>,
    closing: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    outbox_wake: Arc<Notify>,
    /// Checkpoints written (for tests and metrics).
    pub checkpoints: AtomicI64,
    pub metrics: MeterMetrics,
    /// Starting sessions waiting for other nodes' sessions to yield, by
    /// request id (module `feed`): told the instance of each answer.
    yield_waiters: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
}

/// The prefix of the credits the Razorpay intake makes.
pub(crate) const RAZORPAY_REFERENCE: &str = "razorpay:";

/// Refuses empty, over-long or unprintable identifiers.
pub(crate) fn check_id(what: &str, value: &str) -> Result<(), MeterError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(MeterError::InvalidIdentifier(format!(
            "{what} must be 1..=256 bytes of printable text"
        )));
    }
    Ok(())
}

impl SessionStart {
    /// Everything `Meter::start_session` checks before it touches the
    /// ledger: identifiers, payer ≠ payee, and the terms. Signaling runs it
    /// when a participant joins, so terms the meter would refuse are refused
    /// at the door (4007 `billing_invalid`) rather than when the call starts.
    pub fn validate(&self) -> Result<(), MeterError> {
        check_id("room", &self.room)?;
        check_id("payer", &self.payer)?;
        if let Some(call_id) = &self.call_id {
            check_id("call id", call_id)?;
        }
        if let Some(payee) = &self.payee {
            check_id("payee", payee)?;
            if payee == &self.payer {
                return Err(MeterError::InvalidIdentifier(
                    "payer and payee are the same user".into(),
                ));
            }
        }
        self.terms.validate()
    }
}

impl Inner {
    pub fn webhooks_on(&self) -> bool {
        self.config.webhooks.is_some()
    }

    pub fn emit(&self, event: MeterEvent) {
        let _ = self.events.send(event);
    }

    pub fn outbox_written(&self) {
        if self.webhooks_on() {
            self.outbox_wake.notify_one();
        }
    }

    fn closing(&self) -> Result<(), MeterError> {
        if self.closing.load(Ordering::Acquire) {
            Err(MeterError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Tells the payer's other sessions, here and on the other nodes of a
    /// cluster (module `feed`), that the wallet moved.
    pub fn wallet_changed(&self, payer: &str, snap: WalletSnap, except: Option<&str>) {
        self.tell_sessions_of(payer, snap, except);
        crate::feed::announce(self, payer);
    }

    /// Whether this instance bills a session paid by `payer`.
    pub(crate) fn bills(&self, payer: &str) -> bool {
        self.registry.lock().unwrap().by_payer.contains_key(payer)
    }

    /// Tells the payer's sessions here but `except` that the wallet moved.
    pub(crate) fn tell_sessions_of(&self, payer: &str, snap: WalletSnap, except: Option<&str>) {
        let registry = self.registry.lock().unwrap();
        if let Some(sessions) = registry.by_payer.get(payer) {
            for (id, entry) in sessions {
                if Some(id.as_str()) != except {
                    let _ = entry.tx.send(Msg::Wallet { snap, ack: None });
                }
            }
        }
    }

    /// Same, and waits until each session has taken it in (a credit
    /// extends running calls before `credit` returns; a new session
    /// shortens the others' projections before `start_session` returns).
    /// Sends every open session of `payer` but `except` the message `make`
    /// builds around an acknowledgement, and waits for all of them.
    async fn tell_sessions(
        &self,
        payer: &str,
        except: Option<&str>,
        make: impl Fn(oneshot::Sender<()>) -> Msg,
    ) {
        let acks: Vec<oneshot::Receiver<()>> = {
            let registry = self.registry.lock().unwrap();
            registry
                .by_payer
                .get(payer)
                .map(|sessions| {
                    sessions
                        .iter()
                        .filter(|(id, _)| Some(id.as_str()) != except)
                        .filter_map(|(_, entry)| {
                            let (ack, done) = oneshot::channel();
                            entry.tx.send(make(ack)).ok().map(|_| done)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for done in acks {
            let _ = done.await;
        }
    }

    /// Asks the payer's open sessions, here and on other nodes, to release
    /// part of their holds for a new session at `rate`, and waits until
    /// they have.
    async fn make_room(&self, payer: &str, rate: i64, except: &str) {
        self.tell_sessions(payer, Some(except), |ack| Msg::Yield { rate, ack })
            .await;
        crate::feed::make_room_elsewhere(self, payer, rate).await;
    }

    /// Another node starts a session of `payer` at `rate`: the payer's
    /// sessions here yield, as for one starting here.
    pub(crate) async fn yield_here(&self, payer: &str, rate: i64) {
        self.tell_sessions(payer, None, |ack| Msg::Yield { rate, ack })
            .await;
    }

    pub(crate) fn yield_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<String>>> {
        self.yield_waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn wallet_changed_acked(
        &self,
        payer: &str,
        snap: WalletSnap,
        except: Option<&str>,
    ) {
        self.tell_sessions(payer, except, |ack| Msg::Wallet {
            snap,
            ack: Some(ack),
        })
        .await;
        crate::feed::announce(self, payer);
    }

    pub fn unregister(&self, payer: &str, id: &str) {
        let mut registry = self.registry.lock().unwrap();
        if let Some(sessions) = registry.by_payer.get_mut(payer) {
            if sessions.remove(id).is_some() {
                self.metrics.sessions_open.dec();
            }
            if sessions.is_empty() {
                registry.by_payer.remove(payer);
            }
        }
    }

    fn is_registered(&self, id: &str) -> bool {
        let registry = self.registry.lock().unwrap();
        registry.by_payer.values().any(|s| s.contains_key(id))
    }

    /// An ended session's summary; None while open or unknown.
    pub async fn session_row(&self, id: &str) -> Result<Option<SessionSummary>, MeterError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND state = 'ended'"
        ))
        .bind(id)
        .fetch_optional(&self.db.write)
        .await?;
        row.as_ref().map(SessionSummary::from_row).transpose()
    }

    /// An open session's ledger side and its payer's wallet.
    pub async fn load_open(
        &self,
        id: &str,
        block_s: u64,
    ) -> Result<Option<(Ledgered, WalletSnap)>, MeterError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND state = 'open'"
        ))
        .bind(id)
        .fetch_optional(&self.db.write)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hold: i64 = sqlx::query_scalar("SELECT coins FROM holds WHERE session_id = $1")
            .bind(id)
            .fetch_optional(&self.db.write)
            .await?
            .unwrap_or(0);
        let (core, l) = session::core_of(&row, hold, block_s)?;
        let w = sqlx::query("SELECT balance, held, version FROM accounts WHERE id = $1")
            .bind(&core.wallet)
            .fetch_one(&self.db.write)
            .await?;
        Ok(Some((
            l,
            WalletSnap {
                balance: get(&w, "balance")?,
                held: get(&w, "held")?,
                version: get(&w, "version")?,
            },
        )))
    }

    /// Closes sessions whose actor is gone: this node's previous run's
    /// (at open), this run's orphans, and any node's expired holds.
    async fn recover_where(&self, at_open: bool) -> Result<u64, MeterError> {
        let now = self.clock.now_ms();
        let ids: Vec<String> = {
            let _io = self.clock.io_guard();
            let mut ids: Vec<String> = if at_open {
                sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE state = 'open' AND node = $1 AND instance <> $2",
                )
                .bind(&self.config.node_id)
                .bind(&self.instance)
                .fetch_all(&self.db.write)
                .await?
            } else {
                let mine: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE state = 'open' AND instance = $1",
                )
                .bind(&self.instance)
                .fetch_all(&self.db.write)
                .await?;
                mine.into_iter()
                    .filter(|id| !self.is_registered(id))
                    .collect()
            };
            let expired: Vec<String> = sqlx::query_scalar(
                "SELECT s.id FROM sessions s JOIN holds h ON h.session_id = s.id \
                 WHERE s.state = 'open' AND s.instance <> $1 AND h.expires_ms < $2",
            )
            .bind(&self.instance)
            .bind(now)
            .fetch_all(&self.db.write)
            .await?;
            ids.extend(expired);
            ids.sort();
            ids.dedup();
            ids
        };
        {
            let _io = self.clock.io_guard();
            crate::call_log::release_expired_call_holds(self, now).await?;
        }
        Ok(self.recover_ids(ids, !at_open).await)
    }

    /// Closes the open sessions of node `node`, whose process is gone (a
    /// cluster saw its registry entry expire), without waiting for their
    /// holds to expire.
    async fn recover_node(&self, node: &str) -> Result<u64, MeterError> {
        let ids: Vec<String> = {
            let _io = self.clock.io_guard();
            sqlx::query_scalar(
                "SELECT id FROM sessions WHERE state = 'open' AND node = $1 AND instance <> $2",
            )
            .bind(node)
            .bind(&self.instance)
            .fetch_all(&self.db.write)
            .await?
        };
        Ok(self.recover_ids(ids, true).await)
    }

    /// Recovers sessions `ids` (skipping those this run still bills when
    /// `skip_registered`); how many it closed.
    async fn recover_ids(&self, ids: Vec<String>, skip_registered: bool) -> u64 {
        let mut n = 0;
        for id in ids {
            if skip_registered && self.is_registered(&id) {
                continue;
            }
            let _io = self.clock.io_guard();
            match session::recover(self, &id).await {
                Ok(Some(summary)) => {
                    n += 1;
                    self.emit(MeterEvent::Ended { summary });
                }
                Ok(None) => {}
                Err(e) => warn!(session = %id, error = %e, "recovery failed; retrying later"),
            }
        }
        n
    }

    /// Persists the progress of every open session here and refreshes
    /// their holds' expiry: one transaction for all of them.
    async fn checkpoint(&self) -> Result<(), MeterError> {
        let _io = self.clock.io_guard();
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE sessions SET checkpoint_ms = CASE WHEN checkpoint_ms < $2 THEN $2 ELSE checkpoint_ms END \
             WHERE instance = $1 AND state = 'open'",
        )
        .bind(&self.instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE holds SET expires_ms = $2 WHERE session_id IN \
             (SELECT id FROM sessions WHERE instance = $1 AND state = 'open')",
        )
        .bind(&self.instance)
        .bind(now + self.config.hold_expiry.as_millis() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn ticker(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let period = inner.config.checkpoint_interval;
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        next += period;
        // Orphans first, so a dead actor's session is not checkpointed on.
        if let Err(e) = inner.recover_where(false).await {
            warn!(error = %e, "recovery sweep failed");
        }
        if let Err(e) = inner.checkpoint().await {
            warn!(error = %e, "checkpoint failed; the next one retries");
        }
    }
}

impl Meter {
    /// Opens (and creates) the database, runs the migrations, closes every
    /// session a dead run of this node left open (at its last checkpoint),
    /// then starts the checkpoint ticker and the webhook delivery task.
    /// The ledger for reading only (exports, balances from the command
    /// line): no recovery, no timers, no webhooks, so a server running on
    /// the same ledger is left alone.
    pub async fn open_reader(config: MeterConfig, clock: Clock) -> Result<Meter, MeterError> {
        let inner = Self::connect(config, clock).await?;
        Ok(Meter { inner })
    }

    async fn connect(config: MeterConfig, clock: Clock) -> Result<Arc<Inner>, MeterError> {
        config.validate()?;
        let db = Db::open(&config.database_url, config.max_connections, clock).await?;
        let (events, _) = broadcast::channel(4096);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            db,
            config,
            clock,
            instance: webhook::new_id("run"),
            events,
            registry: Mutex::new(Registry::default()),
            closing: AtomicBool::new(false),
            stop,
            tasks: Mutex::new(Vec::new()),
            outbox_wake: Arc::new(Notify::new()),
            checkpoints: AtomicI64::new(0),
            metrics: MeterMetrics::new()
                .map_err(|e| MeterError::Internal(format!("metrics: {e}")))?,
            yield_waiters: Mutex::new(HashMap::new()),
        });
        Ok(inner)
    }

    pub async fn open(config: MeterConfig, clock: Clock) -> Result<Meter, MeterError> {
        let inner = Self::connect(config, clock).await?;
        let recovered = inner.recover_where(true).await?;
        info!(
            backend = ?inner.db.backend,
            node = %inner.config.node_id,
            recovered,
            "meter open"
        );
        let mut tasks = vec![tokio::spawn(ticker(inner.clone(), inner.stop.subscribe()))];
        if inner.db.backend == crate::db::Backend::Postgres {
            tasks.push(tokio::spawn(crate::feed::listen(
                inner.clone(),
                inner.stop.subscribe(),
            )));
        }
        if let Some(w) = &inner.config.webhooks {
            tasks.push(tokio::spawn(webhook::deliver_loop(
                inner.db.clone(),
                w.clone(),
                inner.metrics.clone(),
                clock,
                inner.outbox_wake.clone(),
                inner.stop.subscribe(),
            )));
        }
        *inner.tasks.lock().unwrap() = tasks;
        Ok(Meter { inner })
    }

    /// The meter's time of day, unix ms (its `Clock`): what a caller turns
    /// a unix-ms moment into an `Instant` with, e.g. to backdate
    /// `SessionHandle::pause` to when media stopped.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Every meter event (seconds left, warnings, cuts, ends). A receiver
    /// that falls more than 4096 events behind loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<MeterEvent> {
        self.inner.events.subscribe()
    }

    /// A configured rate plan.
    pub fn plan(&self, name: &str) -> Result<BillingTerms, MeterError> {
        self.inner
            .config
            .plans
            .get(name)
            .copied()
            .ok_or_else(|| MeterError::UnknownPlan(name.into()))
    }

    pub fn config(&self) -> &MeterConfig {
        &self.inner.config
    }

    /// Adds `coins` to `user`'s wallet from `funding`, once per
    /// `reference` (a payment id): the same reference again with the same
    /// user and coins changes nothing (`applied: false`); with other coins
    /// or another user it is a `Conflict`. A wallet in debt (a refund of
    /// coins it had spent) repays the debt from the credit first. Sessions
    /// of the user running here are extended before this returns.
    pub async fn credit(
        &self,
        user: &str,
        coins: i64,
        reference: &str,
    ) -> Result<Credited, MeterError> {
        // `razorpay:<payment id>` credits come with their payment's row
        // (what its refunds reverse): only the intake writes them.
        if reference.starts_with(RAZORPAY_REFERENCE) {
            return Err(MeterError::InvalidIdentifier(format!(
                "references starting with `{RAZORPAY_REFERENCE}` belong to the Razorpay intake"
            )));
        }
        self.credit_once(user, coins, reference, None).await
    }

    /// A checked Razorpay order: the credit `razorpay:<payment id>` and the
    /// payment's row (what was paid, for its refunds), in one transaction.
    pub(crate) async fn credit_razorpay(&self, order: &PaidOrder) -> Result<Credited, MeterError> {
        let reference = format!("{RAZORPAY_REFERENCE}{}", order.payment_id);
        self.credit_once(&order.user, order.coins, &reference, Some(order))
            .await
    }

    async fn credit_once(
        &self,
        user: &str,
        coins: i64,
        reference: &str,
        order: Option<&PaidOrder>,
    ) -> Result<Credited, MeterError> {
        self.inner.closing()?;
        check_id("user", user)?;
        check_id("reference", reference)?;
        if coins <= 0 || coins > MAX_COINS {
            return Err(MeterError::InvalidAmount(format!(
                "coins must be 1..={MAX_COINS}, not {coins}"
            )));
        }
        let (credited, snap) = match self.credit_tx(user, coins, reference, order).await {
            Err(e) if is_unique_violation(&e) => {
                // A concurrent credit with this reference won: read it.
                self.credit_tx(user, coins, reference, order).await?
            }
            other => other?,
        };
        if credited.applied {
            self.inner.wallet_changed_acked(user, snap, None).await;
            self.inner.outbox_written();
        }
        Ok(credited)
    }

    async fn credit_tx(
        &self,
        user: &str,
        coins: i64,
        reference: &str,
        order: Option<&PaidOrder>,
    ) -> Result<(Credited, WalletSnap), MeterError> {
        let inner = &self.inner;
        let _io = inner.clock.io_guard();
        let now = inner.clock.now_ms();
        let wallet = ledger::wallet_id(user);
        let mut tx = inner.db.begin().await?;
        ledger::ensure_account(&mut tx, &wallet, "wallet", now).await?;
        let w = ledger::lock_wallet(&mut tx, &wallet)
            .await?
            .ok_or_else(|| MeterError::Internal(format!("{wallet} is not a wallet")))?;
        let existing = sqlx::query(
            "SELECT c.wallet, c.coins, c.posting_id FROM credits c WHERE c.reference = $1",
        )
        .bind(reference)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let was_wallet: String = get(&row, "wallet")?;
            let was_coins: i64 = get(&row, "coins")?;
            let posting_id: i64 = get(&row, "posting_id")?;
            tx.rollback().await?;
            if was_wallet != wallet || was_coins != coins {
                return Err(MeterError::Conflict {
                    reference: reference.into(),
                    existing: format!("for {was_coins} coins to {was_wallet}"),
                });
            }
            let credited = Credited {
                user: user.into(),
                coins,
                reference: reference.into(),
                applied: false,
                posting_id,
                debt_repaid: 0,
                balance: w.balance,
                held: w.held,
                available: w.available(),
            };
            return Ok((credited, w));
        }
        // `funding` holds minus every coin ever credited, and every other
        // balance is at most the sum of all of them: keeping it above
        // -i64::MAX keeps every balance and their sum in range. (SQLite
        // would otherwise turn an overflowing balance into a float.)
        let funding: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
            .bind(ledger::FUNDING)
            .fetch_one(&mut *tx)
            .await?;
        if funding.checked_sub(coins).is_none_or(|b| b == i64::MIN) {
            tx.rollback().await?;
            return Err(MeterError::InvalidAmount(format!(
                "{coins} coins would take the funding account's balance out of range"
            )));
        }
        if let Some(order) = order {
            let paid_by: Option<String> =
                sqlx::query_scalar("SELECT payment_id FROM razorpay_payments WHERE order_id = $1")
                    .bind(&order.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(paid_by) = paid_by {
                tx.rollback().await?;
                return Err(MeterError::Conflict {
                    reference: format!("order {}", order.order_id),
                    existing: format!("for payment {paid_by}"),
                });
            }
        }
        let posting_id = ledger::insert_posting(
            &mut tx,
            &Posting {
                at_ms: now,
                debit: ledger::FUNDING,
                credit: &wallet,
                coins,
                kind: "credit",
                session: None,
                reference: Some(reference),
                key: format!("credit/{reference}"),
            },
        )
        .await?;
        sqlx::query(
            "INSERT INTO credits (reference, wallet, coins, posting_id, at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(reference)
        .bind(&wallet)
        .bind(coins)
        .bind(posting_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut w = ledger::change_wallet(&mut tx, &wallet, coins, 0).await?;
        // A refund of coins the wallet had already spent left a debt: the
        // new coins repay it first.
        let debt: i64 = sqlx::query_scalar("SELECT debt FROM accounts WHERE id = $1")
            .bind(&wallet)
            .fetch_one(&mut *tx)
            .await?;
        let debt_repaid = debt.min(w.available()).max(0);
        if debt_repaid > 0 {
            ledger::insert_posting(
                &mut tx,
                &Posting {
                    at_ms: now,
                    debit: &wallet,
                    credit: ledger::FUNDING,
                    coins: debt_repaid,
                    kind: "refund",
                    session: None,
                    reference: Some(reference),
                    key: format!("credit/{reference}/debt"),
                },
            )
            .await?;
            w = ledger::change_wallet(&mut tx, &wallet, -debt_repaid, 0).await?;
            sqlx::query("UPDATE accounts SET debt = debt - $2 WHERE id = $1")
                .bind(&wallet)
                .bind(debt_repaid)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(order) = order {
            sqlx::query(
                "INSERT INTO razorpay_payments (payment_id, order_id, wallet, amount, currency, coins, credited_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&order.payment_id)
            .bind(&order.order_id)
            .bind(&wallet)
            .bind(order.amount)
            .bind(&order.currency)
            .bind(coins)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if inner.webhooks_on() {
            webhook::enqueue(
                &mut tx,
                events::WALLET_CREDITED,
                json!({
                    "user": user,
                    "coins": coins,
                    "reference": reference,
                    "posting_id": posting_id,
                    "debt_repaid": debt_repaid,
                    "balance": w.balance,
                    "held": w.held,
                    "available": w.available(),
                }),
                now,
            )
            .await?;
        }
        ledger::change_balance(&mut tx, ledger::FUNDING, debt_repaid - coins).await?;
        tx.commit().await?;
        let credited = Credited {
            user: user.into(),
            coins,
            reference: reference.into(),
            applied: true,
            posting_id,
            debt_repaid,
            balance: w.balance,
            held: w.held,
            available: w.available(),
        };
        Ok((credited, w))
    }

    /// A user's wallet (all zero for a user never credited).
    pub async fn wallet(&self, user: &str) -> Result<WalletView, MeterError> {
        check_id("user", user)?;
        let _io = self.inner.clock.io_guard();
        let row = sqlx::query("SELECT balance, held, debt FROM accounts WHERE id = $1")
            .bind(ledger::wallet_id(user))
            .fetch_optional(&self.inner.db.read)
            .await?;
        let (balance, held, debt) = match row {
            Some(r) => (get(&r, "balance")?, get(&r, "held")?, get(&r, "debt")?),
            None => (0, 0, 0),
        };
        Ok(WalletView {
            user: user.into(),
            balance,
            held,
            available: balance - held,
            debt,
        })
    }

    /// The balance of `wallet:<user>`, `earnings:<user>`, `platform` or
    /// `funding` (0 for an account not created yet).
    pub async fn account(&self, account: &str) -> Result<i64, MeterError> {
        ledger::check_account_name(account)?;
        let _io = self.inner.clock.io_guard();
        let balance: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT {} FROM accounts a WHERE a.id = $1",
            ledger::BALANCE_OF_A
        ))
        .bind(account)
        .fetch_optional(&self.inner.db.read)
        .await?;
        Ok(balance.unwrap_or(0))
    }

    /// Records a participant's connected time in a room (any participant,
    /// paid or not) for the `usage` export.
    pub async fn record_usage(&self, record: UsageRecord) -> Result<(), MeterError> {
        self.inner.closing()?;
        check_id("room", &record.room)?;
        check_id("identity", &record.identity)?;
        if record.ended_at_ms < record.started_at_ms || record.started_at_ms < 0 {
            return Err(MeterError::InvalidRange(format!(
                "usage from {} to {}",
                record.started_at_ms, record.ended_at_ms
            )));
        }
        let _io = self.inner.clock.io_guard();
        sqlx::query(
            "INSERT INTO participant_usage (room, identity, kind, started_ms, ended_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.room)
        .bind(&record.identity)
        .bind(record.kind.as_str())
        .bind(record.started_at_ms)
        .bind(record.ended_at_ms)
        .execute(&self.inner.db.write)
        .await?;
        Ok(())
    }

    /// Starts billing: holds the first block from the payer's wallet and
    /// starts the session's timers. `InsufficientBalance` when the wallet
    /// has nothing available (nothing is written then).
    pub async fn start_session(&self, start: SessionStart) -> Result<SessionHandle, MeterError> {
        self.inner.closing()?;
        start.validate()?;
        let inner = &self.inner;
        let id = session::new_session_id();
        let call_id = start.call_id;
        let started = Instant::now();
        let core = Core {
            id: id.clone(),
            room: start.room,
            wallet: ledger::wallet_id(&start.payer),
            earnings: start.payee.as_deref().map(ledger::earnings_id),
            payer: start.payer,
            payee: start.payee,
            call_type: start.call_type,
            terms: start.terms,
            started_ms: inner.clock.now_ms(),
            block_s: inner.config.block_secs(),
        };
        // Registered before the row exists, so the orphan sweep never sees
        // a session without its actor.
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut registry = inner.registry.lock().unwrap();
            let replaced = registry
                .by_payer
                .entry(core.payer.clone())
                .or_default()
                .insert(
                    id.clone(),
                    Entry {
                        tx: tx.clone(),
                        abort: None,
                    },
                );
            if replaced.is_none() {
                inner.metrics.sessions_open.inc();
            }
        }
        // Parallel calls of one payer share the wallet: the ones running
        // give up a share of what they hold, by rate, before this one holds.
        inner
            .make_room(&core.payer, core.terms.rate_per_minute, &id)
            .await;
        let started_tx = {
            let _io = inner.clock.io_guard();
            session::start_tx(inner, &core, call_id.as_deref()).await
        };
        let (hp, wallet) = match started_tx {
            Ok(x) => x,
            Err(e) => {
                inner.unregister(&core.payer, &id);
                return Err(e);
            }
        };
        // The projected cut (the actor keeps it current from now on).
        let deadline = match hp.limit {
            Some(_) => hp.block_end_ms,
            None => core
                .terms
                .ms_funded_by(hp.hold + wallet.available().max(0))
                .max(hp.block_end_ms),
        };
        let shared = Arc::new(Shared::new(started, deadline));
        let mut warnings: Vec<(i64, bool)> = inner
            .config
            .warnings
            .iter()
            .map(|w| (w.as_millis() as i64, false))
            .collect();
        warnings.sort_by_key(|w| std::cmp::Reverse(w.0));
        let payer = core.payer.clone();
        let actor = Actor {
            inner: inner.clone(),
            core,
            l: Ledgered {
                captures: 0,
                coins: 0,
                payee_coins: 0,
                platform_coins: 0,
                block_start_ms: 0,
                block_end_ms: hp.block_end_ms,
                limit: hp.limit,
                hold: hp.hold,
            },
            wallet,
            shared: shared.clone(),
            rx,
            announced: None,
            warnings,
            over: false,
            settled_ms: 0,
        };
        // Seconds left and warnings are computed before anyone can ask.
        let handle = tokio::spawn(actor.run());
        {
            let mut registry = inner.registry.lock().unwrap();
            // (Gone already when the session ended at once.)
            if let Some(entry) = registry
                .by_payer
                .get_mut(&payer)
                .and_then(|s| s.get_mut(&id))
            {
                entry.abort = Some(handle.abort_handle());
            }
        }
        // The payer's other sessions see the smaller wallet before this
        // returns (their seconds left shrink).
        inner.wallet_changed_acked(&payer, wallet, Some(&id)).await;
        inner.outbox_written();
        Ok(SessionHandle {
            id,
            tx,
            shared,
            meter: self.clone(),
            ended: false,
        })
    }

    /// An ended session's summary (None while it is open or unknown).
    pub async fn session(&self, id: &str) -> Result<Option<SessionSummary>, MeterError> {
        let _io = self.inner.clock.io_guard();
        self.inner.session_row(id).await
    }

    /// Sessions open on this meter (running here).
    pub fn open_sessions(&self) -> usize {
        let registry = self.inner.registry.lock().unwrap();
        registry.by_payer.values().map(|s| s.len()).sum()
    }

    /// Closes, now, every session whose actor is gone (this run's orphans
    /// and any node's expired holds). The checkpoint ticker does the same
    /// every interval. Returns how many it closed.
    pub async fn recover_now(&self) -> Result<u64, MeterError> {
        self.inner.recover_where(false).await
    }

    /// Closes every open session of node `node_id` at its last checkpoint,
    /// as that node's own restart would: for a cluster node that saw
    /// another's registry entry expire (the node died). A session already
    /// closed is left alone, so several nodes doing this at once close each
    /// session once. How many it closed.
    pub async fn recover_node(&self, node_id: &str) -> Result<u64, MeterError> {
        self.inner.recover_node(node_id).await
    }

    /// Persists every open session's progress now (the ticker does it
    /// every `checkpoint_interval`).
    pub async fn checkpoint_now(&self) -> Result<(), MeterError> {
        self.inner.checkpoint().await
    }

    /// Stops timers, the checkpoint ticker and webhook delivery, and closes
    /// the database. Settles nothing: sessions not ended by
    /// `SessionHandle::end` stay open in the database and the next `open`
    /// of this node closes them at their last checkpoint (as after a crash).
    pub async fn shutdown(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.inner.stop.send(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap());
        for t in &tasks {
            t.abort();
        }
        let registry = std::mem::take(&mut *self.inner.registry.lock().unwrap());
        for entry in registry
            .by_payer
            .into_values()
            .flat_map(|s| s.into_values())
        {
            if let Some(abort) = entry.abort {
                abort.abort();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        // Aborted actors drop their connections (rolling back any open
        // transaction) once the runtime polls them. An export still
        // streaming keeps its connection: closing does not wait for it.
        let _io = self.inner.clock.io_guard();
        tokio::select! {
            _ = self.inner.db.close() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                warn!("meter closed with database connections still in use");
            }
        }
    }

    /// Checks every money invariant against the database.
    pub async fn audit(&self) -> Result<AuditReport, MeterError> {
        let _io = self.inner.clock.io_guard();
        crate::audit::audit(&self.inner).await
    }

    /// Streams an export (see `docs/metering.md` "Exports") into `out`;
    /// returns the number of data rows.
    pub async fn export<W>(
        &self,
        kind: crate::ExportKind,
        range: crate::TimeRange,
        format: crate::ExportFormat,
        out: W,
    ) -> Result<u64, MeterError>
    where
        W: tokio::io::AsyncWrite + Unpin + Send,
    {
        crate::export::export(&self.inner, kind, range, format, None, out).await
    }

    /// The same, limited to one user's rows (`UnknownAccount` when the
    /// meter has never seen the user).
    pub async fn export_for_user<W>(
        &self,
        kind: crate::ExportKind,
        range: crate::TimeRange,
        format: crate::ExportFormat,
        user: &str,
        out: W,
    ) -> Result<u64, MeterError>
    where
        W: tokio::io::AsyncWrite + Unpin + Send,
    {
        crate::export::export(&self.inner, kind, range, format, Some(user), out).await
    }

    /// Razorpay's webhook (`POST /v1/hooks/razorpay`): checks
    /// `X-Razorpay-Signature` over the raw body, credits the wallet on
    /// `order.paid` (idempotent on the payment id), reverses it on
    /// `refund.created` / `payment.refunded` (idempotent on the refund id).
    /// A signed event that must not credit is `Ok(Refused)`, counted in
    /// `callgate_razorpay_refused_total`; only a bad signature, a missing
    /// config and failures are errors.
    pub async fn razorpay_webhook(
        &self,
        signature: &str,
        body: &[u8],
    ) -> Result<crate::RazorpayOutcome, MeterError> {
        self.inner.closing()?;
        let config = self
            .inner
            .config
            .razorpay
            .as_ref()
            .ok_or(MeterError::NotConfigured("razorpay"))?;
        crate::razorpay::handle(self, config, signature, body).await
    }

    /// Registers the meter's Prometheus series
    /// (`callgate_razorpay_refused_total{reason}`) in `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
    }

    /// Internal: counts of rows, for tests and the bench.
    #[doc(hidden)]
    pub async fn count(&self, table: &str) -> Result<i64, MeterError> {
        let allowed = [
            "accounts",
            "sessions",
            "holds",
            "postings",
            "credits",
            "participant_usage",
            "outbox",
            "razorpay_payments",
            "razorpay_refunds",
            "calls",
            "call_members",
            "call_holds",
            "account_shards",
        ];
        if !allowed.contains(&table) {
            return Err(MeterError::Malformed(format!("table {table}")));
        }
        let _io = self.inner.clock.io_guard();
        let n: i64 = sqlx::query(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table}"
        ))
        .fetch_one(&self.inner.db.read)
        .await?
        .try_get("n")?;
        Ok(n)
    }

    /// Ends every session running here with `reason` (a clean stop).
    pub async fn end_all(&self, reason: EndReason) -> Vec<Result<SessionSummary, MeterError>> {
        let senders: Vec<mpsc::UnboundedSender<Msg>> = {
            let registry = self.inner.registry.lock().unwrap();
            registry
                .by_payer
                .values()
                .flat_map(|s| s.values().map(|e| e.tx.clone()))
                .collect()
        };
        let mut out = Vec::new();
        for tx in senders {
            let (reply, answer) = oneshot::channel();
            if tx.send(Msg::End { reason, reply }).is_ok()
                && let Ok(r) = answer.await
            {
                out.push(r);
            }
        }
        out
    }
}
