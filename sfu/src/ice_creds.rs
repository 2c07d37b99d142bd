//! A transport's ICE credentials, and new ones for an ICE restart the
//! server offers. rtc 0.21 builds its agent with the credentials of its
//! `SettingEngine` and restarts with the same ones (`stage_ice_restart`
//! reads them again), so an offer it makes for a restart carries the old
//! ufrag and password and browsers do not restart (a restart is a change of
//! the offerer's credentials, RFC 8445 §9). So the client is given new
//! credentials ("presented"), and checks signed with them are signed again
//! with the agent's ("internal") before the agent reads them; the agent's
//! answers are signed again with the presented password on the way out.

use std::collections::VecDeque;

use crate::stun::{self, Rename};

/// An ICE username fragment and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub ufrag: String,
    pub pwd: String,
}

/// Requests signed again whose answers are not out yet; a client has few
/// checks in flight, more means they were never answered.
const MAX_PENDING: usize = 32;

#[derive(Debug)]
pub(crate) struct IceCreds {
    /// What rtc's agent was built with and keeps.
    internal: Credentials,
    /// What the client was given last.
    current: Credentials,
    /// What it was given before, good until it answers the restart.
    previous: Option<Credentials>,
    /// Transaction ids of requests signed again, with the password their
    /// answer must be signed with.
    pending: VecDeque<([u8; 12], String)>,
    /// The client's ICE password (from its last SDP): the agent's own
    /// checks are signed with it.
    remote_pwd: Option<String>,
}

/// A binding request as the agent may read it.
pub(crate) enum Checked {
    /// Signed with the agent's own credentials: pass it on as it is.
    AsIs,
    /// Signed with presented credentials: this is the same request signed
    /// with the agent's.
    Resigned(Vec<u8>),
}

impl IceCreds {
    pub(crate) fn new(ufrag: String, pwd: String) -> IceCreds {
        let internal = Credentials { ufrag, pwd };
        IceCreds {
            current: internal.clone(),
            internal,
            previous: None,
            pending: VecDeque::new(),
            remote_pwd: None,
        }
    }

    pub(crate) fn internal(&self) -> &Credentials {
        &self.internal
    }

    /// Every ufrag a client may name now (to route its checks).
    pub(crate) fn ufrags(&self) -> impl Iterator<Item = &str> {
        let mut all = vec![self.internal.ufrag.as_str(), self.current.ufrag.as_str()];
        if let Some(p) = &self.previous {
            all.push(p.ufrag.as_str());
        }
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// Whether anything presented differs from the agent's credentials.
    pub(crate) fn translating(&self) -> bool {
        self.current != self.internal || self.previous.is_some()
    }

    /// New presented credentials; returns the ufrag that no longer routes.
    pub(crate) fn rotate(&mut self, fresh: Credentials) -> Option<String> {
        let retired = self.previous.take().map(|p| p.ufrag);
        self.previous = Some(std::mem::replace(&mut self.current, fresh));
        retired.filter(|u| !self.ufrags().any(|known| known == u))
    }

    /// Checks a binding request against every set of credentials the client
    /// may use; `None` when none authenticates it.
    pub(crate) fn check_request(&mut self, data: &[u8]) -> Option<Checked> {
        if stun::authenticates(data, &self.internal.ufrag, &self.internal.pwd) {
            return Some(Checked::AsIs);
        }
        let presented = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|c| *c != &self.internal && stun::authenticates(data, &c.ufrag, &c.pwd))?
            .pwd
            .clone();
        let resigned = stun::resign(
            data,
            Rename::First(&self.internal.ufrag),
            &self.internal.pwd,
        )?;
        if let Some(id) = stun::transaction_id(data) {
            if self.pending.len() == MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((id, presented));
        }
        Some(Checked::Resigned(resigned))
    }

    /// Remembers the client's ICE password from SDP it sent.
    pub(crate) fn learn_remote(&mut self, sdp: &str) {
        if let Some(pwd) = sdp
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-pwd:"))
        {
            self.remote_pwd = Some(pwd.to_owned());
        }
    }

    /// What the agent sends, as the client must get it: answers to requests
    /// signed again are signed with the presented password, and the agent's
    /// own checks name the presented ufrag (the client refuses the old one
    /// once it has restarted; an ICE-lite agent needs those checks answered
    /// before it takes a nomination). `None`: drop it.
    pub(crate) fn outbound(&mut self, data: &[u8]) -> Option<Option<Vec<u8>>> {
        if stun::is_binding_request(data) {
            if self.current == self.internal {
                return Some(None);
            }
            let pwd = self.remote_pwd.as_deref()?;
            return stun::resign(data, Rename::Second(&self.current.ufrag), pwd).map(Some);
        }
        if !stun::is_response(data) {
            return Some(None);
        }
        let Some(id) = stun::transaction_id(data) else {
            return Some(None);
        };
        let Some(at) = self.pending.iter().position(|(t, _)| *t == id) else {
            return Some(None);
        };
        let (_, pwd) = self.pending.remove(at)?;
        Some(stun::resign(data, Rename::Keep, &pwd))
    }

    /// `sdp` as the client must see it: the presented credentials in place
    /// of the agent's.
    pub(crate) fn present(&self, sdp: &str) -> String {
        if self.current == self.internal {
            return sdp.to_owned();
        }
        sdp.replace(
            &format!("a=ice-ufrag:{}", self.internal.ufrag),
            &format!("a=ice-ufrag:{}", self.current.ufrag),
        )
        .replace(
            &format!("a=ice-pwd:{}", self.internal.pwd),
            &format!("a=ice-pwd:{}", self.current.pwd),
        )
    }
}
