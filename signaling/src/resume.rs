//! The sessions a client may take back with `resume` (docs/protocol.md,
//! "Staying connected"): each participant's resume secret, kept as a
//! digest, and where to hand the new WebSocket.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::ws::WebSocket;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;

struct Slot {
    digest: Vec<u8>,
    to_session: mpsc::UnboundedSender<WebSocket>,
}

/// Resumable sessions by participant sid.
#[derive(Default)]
pub struct Resumes {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A new resume secret: 32 random bytes, base64url (43 characters).
/// `None` only if the system's random source fails.
fn new_secret() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

impl Resumes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes session `sid` resumable: its secret, and the receiver its
    /// session task reads new WebSockets from.
    pub(crate) fn register(
        &self,
        sid: &str,
    ) -> Option<(String, mpsc::UnboundedReceiver<WebSocket>)> {
        let secret = new_secret()?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(
            sid.to_owned(),
            Slot {
                digest: digest(&SHA256, secret.as_bytes()).as_ref().to_vec(),
                to_session: tx,
            },
        );
        Some((secret, rx))
    }

    pub(crate) fn unregister(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Hands `socket` to session `sid` if `secret` is its secret; gives the
    /// socket back when there is no such session or the secret is wrong.
    /// Digests are compared, so the time taken says nothing about the secret.
    pub(crate) fn hand_over(
        &self,
        sid: &str,
        secret: &str,
        socket: WebSocket,
    ) -> Result<(), Box<WebSocket>> {
        let offered = digest(&SHA256, secret.as_bytes());
        let slots = self.lock();
        match slots.get(sid) {
            Some(slot) if slot.digest == offered.as_ref() => {
                slot.to_session.send(socket).map_err(|e| Box::new(e.0))
            }
            _ => Err(Box::new(socket)),
        }
    }

    /// Sessions that may be resumed now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_43_url_safe_characters_and_differ() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
