//! Open signaling connections, counted so that a shutdown can wait until
//! every client has been told why its session ended.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    none_open: Notify,
}

/// Held by a connection task while it runs.
pub(crate) struct Open<'a>(&'a Connections);

impl Connections {
    pub(crate) fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.none_open.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_open.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_last_connection_closes() {
        let c = std::sync::Arc::new(Connections::default());
        c.all_closed().await;
        let first = c.open();
        let second = c.open();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.all_closed().await })
        };
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        waiter.await.unwrap();
    }
}
