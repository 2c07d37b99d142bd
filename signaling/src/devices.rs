//! The open signaling connections of each identity, its **devices**: a
//! phone's presence connection, a tab in a room. The call desk rings and
//! tells call states through them, and counts them for presence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::protocol::ServerMessage;

/// One open connection, unique for the life of the process.
pub type DeviceId = u64;

#[derive(Default)]
struct Registry {
    next: DeviceId,
    by_identity: HashMap<String, Vec<(DeviceId, mpsc::UnboundedSender<ServerMessage>)>>,
    identity_of: HashMap<DeviceId, String>,
}

/// Every identity's open connections.
#[derive(Clone, Default)]
pub struct Devices {
    inner: Arc<Mutex<Registry>>,
}

impl Devices {
    /// Adds a connection of `identity`; its messages arrive on the receiver.
    pub fn register(&self, identity: &str) -> (DeviceId, mpsc::UnboundedReceiver<ServerMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = self.lock();
        r.next += 1;
        let id = r.next;
        r.by_identity
            .entry(identity.to_owned())
            .or_default()
            .push((id, tx));
        r.identity_of.insert(id, identity.to_owned());
        (id, rx)
    }

    /// Removes a connection; unknown ones are ignored.
    pub fn unregister(&self, device: DeviceId) {
        let mut r = self.lock();
        let Some(identity) = r.identity_of.remove(&device) else {
            return;
        };
        if let Some(list) = r.by_identity.get_mut(&identity) {
            list.retain(|(id, _)| *id != device);
            if list.is_empty() {
                r.by_identity.remove(&identity);
            }
        }
    }

    /// Queues `message` for every connection of `identity`; how many.
    pub fn send_to_identity(&self, identity: &str, message: &ServerMessage) -> usize {
        self.lock().by_identity.get(identity).map_or(0, |list| {
            list.iter()
                .filter(|(_, tx)| tx.send(message.clone()).is_ok())
                .count()
        })
    }

    /// Queues `message` for one connection; false if it is gone.
    pub fn send_to_device(&self, device: DeviceId, message: ServerMessage) -> bool {
        let r = self.lock();
        let Some(identity) = r.identity_of.get(&device) else {
            return false;
        };
        r.by_identity
            .get(identity)
            .and_then(|list| list.iter().find(|(id, _)| *id == device))
            .is_some_and(|(_, tx)| tx.send(message).is_ok())
    }

    /// How many connections `identity` has open.
    pub fn count(&self, identity: &str) -> usize {
        self.lock().by_identity.get(identity).map_or(0, Vec::len)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u32) -> ServerMessage {
        ServerMessage::Balance {
            seconds_left: n.into(),
        }
    }

    #[test]
    fn a_message_reaches_every_device_of_an_identity_and_only_those() {
        let devices = Devices::default();
        let (a1, mut rx_a1) = devices.register("alice");
        let (_a2, mut rx_a2) = devices.register("alice");
        let (_b, mut rx_b) = devices.register("bob");
        assert_eq!(devices.count("alice"), 2);
        assert_eq!(devices.send_to_identity("alice", &message(1)), 2);
        assert_eq!(rx_a1.try_recv().unwrap(), message(1));
        assert_eq!(rx_a2.try_recv().unwrap(), message(1));
        assert!(rx_b.try_recv().is_err());
        assert!(devices.send_to_device(a1, message(2)));
        assert_eq!(rx_a1.try_recv().unwrap(), message(2));
        assert!(rx_a2.try_recv().is_err());
        devices.unregister(a1);
        assert_eq!(devices.count("alice"), 1);
        assert!(!devices.send_to_device(a1, message(3)));
        assert_eq!(devices.send_to_identity("nobody", &message(4)), 0);
    }
}
