//! Interceptors that only look at, change or hold back packets on their way
//! through an `rtc` peer connection's chain, one at a time: what they do
//! with a packet read from the wire and with one written to it. The queues,
//! timers and stream bindings every such interceptor needs are here once.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What a [`Filtered`] interceptor does with each packet.
pub trait PacketFilter: Send + Sync + 'static {
    /// A packet read from the wire: what goes on toward the application
    /// (`None`: nothing).
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }

    /// A packet written toward the wire: what goes on (`None`: nothing).
    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }

    /// A stream we send was bound (its SSRC, extensions …).
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    /// A stream we send was unbound.
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    /// A stream we receive was bound (its SSRC, codec …).
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    /// A stream we receive was unbound.
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The interceptor running a [`PacketFilter`].
pub struct Filtered<F> {
    filter: F,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl<F: PacketFilter> Filtered<F> {
    pub fn new(filter: F) -> Self {
        Filtered {
            filter,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }
}

impl<F: PacketFilter> Protocol<TaggedPacket, TaggedPacket, ()> for Filtered<F> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Some(msg) = self.filter.read(msg) {
            self.reads.push_back(msg);
        }
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Some(msg) = self.filter.write(msg) {
            self.writes.push_back(msg);
        }
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl<F: PacketFilter> Interceptor for Filtered<F> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.filter.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.filter.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.filter.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.filter.unbind_remote_stream(info);
    }
}
