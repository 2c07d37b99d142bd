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
//! On SQLite (a ledger of one node) there is no feed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::db::Backend;
use crate::ledger::WalletSnap;
use crate::meter::Inner;

/// The notification channel; a payload is `<instance> <payer>`.
pub(crate) const CHANNEL: &str = "callgate_wallets";

/// How long the listener waits before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Announces that this instance changed the wallet of `payer` (PostgreSQL
/// only; in a task, so that no caller waits for it).
pub(crate) fn announce(inner: &Inner, payer: &str) {
    if inner.db.backend != Backend::Postgres {
        return;
    }
    let pool = inner.db.write.clone();
    let payload = format!("{} {payer}", inner.instance);
    tokio::spawn(async move {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&payload)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            debug!(error = %e, "wallet change not announced");
        }
    });
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
                Ok(Some(n)) => changed_elsewhere(&inner, n.payload()).await,
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

/// Another instance changed a payer's wallet: if this one bills sessions
/// of that payer, they learn the wallet as it is now.
async fn changed_elsewhere(inner: &Inner, payload: &str) {
    let Some((instance, payer)) = payload.split_once(' ') else {
        return;
    };
    if instance == inner.instance || !inner.bills(payer) {
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
