//! Events the shard has for participants' signaling connections. The shard
//! queues them; the worker loop polls them out (`Shard::poll_event`) and
//! hands each to its participant's connection, so the core holds no
//! channels and a test reads them the same way.

use std::collections::VecDeque;

use crate::session::ParticipantEvent;

#[derive(Default)]
pub(crate) struct Outbox {
    queue: VecDeque<(String, ParticipantEvent)>,
}

impl Outbox {
    /// Queues `event` for participant `to` (its sid).
    pub(crate) fn send(&mut self, to: &str, event: ParticipantEvent) {
        self.queue.push_back((to.to_owned(), event));
    }

    pub(crate) fn poll(&mut self) -> Option<(String, ParticipantEvent)> {
        self.queue.pop_front()
    }
}
