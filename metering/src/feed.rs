//! Wallet changes between the nodes of a cluster, which share one
//! PostgreSQL ledger. A node tells its own sessions of a payer when it
//! changes that payer's wallet (a credit, a hold, a release); the feed
//! tells every other node too: the change is announced with `NOTIFY` on
//! [`CHANNEL`] and every node `LISTEN`s, reads the wallet and tells its
//! sessions of that payer, as for a change of its own. So a credit made
//! through any node extends a running call on any other at once, not only
//! at its cut (which re-reads the wallet anyway: a lost notification
//! delays an update, it never cuts a call that has money).
//!
//! A session starting for a payer whose other sessions run on other nodes
//! asks them to yield part of their holds, as the payer's sessions on its
//! own node do (docs/metering.md, "Holds"), and waits (boundedly) until
//! each of those nodes says they have.
//!
//! On SQLite (a ledger of one node) there is no feed.
//!
//! Payloads, space-separated, first the sending instance, a payer last (it
//! may hold spaces): `<instance> changed <payer>`, `<instance> yield <rate>
//! <request> <payer>`, `<instance> yielded <request> <requester>`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::db::Backend;
use crate::ledger::WalletSnap;
use crate::meter::Inner;

pub(crate) const CHANNEL: &str = "callgate_wallets";

/// How long the listener waits before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// How long a starting session waits for other nodes' sessions to yield:
/// a node that does not answer (it died, its notification was lost) only
/// leaves the new session less to hold.
const YIELD_WAIT: Duration = Duration::from_secs(2);

fn notify(inner: &Inner, payload: String) {
    let pool = inner.db.write.clone();
    tokio::spawn(async move {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&payload)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            debug!(error = %e, "wallet feed notification not sent");
        }
    });
}

/// Announces that this instance changed the wallet of `payer` (PostgreSQL
/// only; in a task, so that no caller waits for it).
pub(crate) fn announce(inner: &Inner, payer: &str) {
    if inner.db.backend == Backend::Postgres {
        notify(inner, format!("{} changed {payer}", inner.instance));
    }
}

/// Asks the sessions of `payer` on other instances to yield for a new
/// session at `rate`, and waits until each instance that bills one has
/// said it did, for at most [`YIELD_WAIT`].
pub(crate) async fn make_room_elsewhere(inner: &Inner, payer: &str, rate: i64) {
    if inner.db.backend != Backend::Postgres {
        return;
    }
    let instances: Vec<String> = {
        let _io = inner.clock.io_guard();
        match sqlx::query_scalar(
            "SELECT DISTINCT instance FROM sessions WHERE state = 'open' AND payer = $1 AND instance <> $2",
        )
        .bind(payer)
        .bind(&inner.instance)
        .fetch_all(&inner.db.read)
        .await
        {
            Ok(instances) => instances,
            Err(e) => {
                warn!(error = %e, "could not ask other nodes' sessions to yield");
                return;
            }
        }
    };
    if instances.is_empty() {
        return;
    }
    let request = crate::webhook::new_id("yield");
    let (tx, mut answers) = mpsc::unbounded_channel();
    inner.yield_waiters().insert(request.clone(), tx);
    notify(
        inner,
        format!("{} yield {rate} {request} {payer}", inner.instance),
    );
    let mut waiting: std::collections::HashSet<String> = instances.into_iter().collect();
    let wait = async {
        while let Some(from) = answers.recv().await {
            waiting.remove(&from);
            if waiting.is_empty() {
                return;
            }
        }
    };
    if tokio::time::timeout(YIELD_WAIT, wait).await.is_err() {
        debug!(payer, "not every node's sessions yielded in time");
    }
    inner.yield_waiters().remove(&request);
}

/// Listens for other instances' wallet changes until `stop`, telling this
/// instance's sessions of each wallet; reconnects after a failure.
pub(crate) async fn listen(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = match connect(&inner).await {
            Ok(listener) => listener,
            Err(e) => {
                warn!(error = %e, "cannot listen for other nodes' wallet changes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            let notification = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.changed() => return,
            };
            match notification {
                Ok(Some(n)) => received(&inner, n.payload()).await,
                // The connection was lost (notifications meanwhile are
                // lost with it); the next receive reconnects.
                Ok(None) => debug!("wallet feed reconnecting"),
                Err(e) => {
                    warn!(error = %e, "wallet feed failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(inner: &Inner) -> Result<PgListener, sqlx::Error> {
    let _io = inner.clock.io_guard();
    let mut listener = PgListener::connect(&inner.config.database_url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn received(inner: &Arc<Inner>, payload: &str) {
    let Some((from, rest)) = payload.split_once(' ') else {
        return;
    };
    if from == inner.instance {
        return;
    }
    let Some((kind, rest)) = rest.split_once(' ') else {
        return;
    };
    match kind {
        "changed" => changed_elsewhere(inner, rest).await,
        "yield" => {
            let mut fields = rest.splitn(3, ' ');
            let (Some(Ok(rate)), Some(request), Some(payer)) = (
                fields.next().map(str::parse::<i64>),
                fields.next(),
                fields.next(),
            ) else {
                return;
            };
            if !inner.bills(payer) {
                return;
            }
            // Answered from a task: the sessions' yields write to the
            // ledger, and the listener goes on meanwhile.
            let (inner, payer, request, from) = (
                inner.clone(),
                payer.to_owned(),
                request.to_owned(),
                from.to_owned(),
            );
            tokio::spawn(async move {
                inner.yield_here(&payer, rate).await;
                notify(
                    &inner,
                    format!("{} yielded {request} {from}", inner.instance),
                );
            });
        }
        "yielded" => {
            if let Some((request, to)) = rest.split_once(' ')
                && to == inner.instance
                && let Some(waiter) = inner.yield_waiters().get(request)
            {
                let _ = waiter.send(from.to_owned());
            }
        }
        _ => {}
    }
}

/// Another instance changed a payer's wallet: if this one bills sessions
/// of that payer, they learn the wallet as it is now.
async fn changed_elsewhere(inner: &Inner, payer: &str) {
    if !inner.bills(payer) {
        return;
    }
    let snap = {
        let _io = inner.clock.io_guard();
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT balance, held, version FROM accounts WHERE id = $1 AND kind = 'wallet'",
        )
        .bind(crate::ledger::wallet_id(payer))
        .fetch_optional(&inner.db.read)
        .await
    };
    match snap {
        Ok(Some((balance, held, version))) => inner.tell_sessions_of(
            payer,
            WalletSnap {
                balance,
                held,
                version,
            },
            None,
        ),
        Ok(None) => {}
        Err(e) => warn!(error = %e, payer, "could not read a wallet another node changed"),
    }
}
