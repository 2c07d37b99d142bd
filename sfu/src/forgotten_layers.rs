//! Simulcast layers `rtc` forgets on renegotiation, and their packets
//! recovered.
//!
//! A simulcast publisher declares no SSRCs: `rtc` learns which SSRC carries
//! which layer from the mid and rid header extensions on its first packets.
//! rtc 0.21 forgets that on every renegotiation (`start_rtp` gives each
//! receiver a fresh track whose layers have no SSRC), and a browser labels a
//! layer's packets with mid and rid only until our receiver reports
//! acknowledge its SSRC. So after the publisher's next offer (an ICE restart
//! on a network change, a second track) `rtc` drops every packet of every
//! layer: the subscribers' video freezes for good.
//!
//! The shard knows those SSRCs (it routes by SSRC): after each publisher
//! renegotiation it marks the layers `rtc` no longer knows as forgotten, and
//! [`RecoverForgottenLayers`], an interceptor at the application end of the
//! chain (rtc's NACK, report and TWCC interceptors have seen the packet),
//! takes their packets out of the chain before `rtc`'s endpoint would drop
//! them, for the shard to forward. A layer `rtc` binds again (a packet with
//! its rid came) is remembered again and goes `rtc`'s way.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// The SSRCs one publisher transport's `rtc` has forgotten, and their
/// packets taken since the shard last looked. Shared by the transport and
/// its peer connection's interceptor.
#[derive(Clone, Default)]
pub struct ForgottenLayers {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Whether any SSRC is forgotten: the interceptor's test on every
    /// packet, so that a transport with none never takes the lock.
    any: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ssrcs: HashSet<u32>,
    packets: Vec<rtp::Packet>,
}

impl ForgottenLayers {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds sets.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `rtc` no longer knows `ssrc`: its packets come to the shard.
    pub(crate) fn forget(&self, ssrc: u32) {
        let mut state = self.state();
        state.ssrcs.insert(ssrc);
        self.shared.any.store(true, Ordering::Relaxed);
    }

    /// `rtc` knows `ssrc` again: its packets go `rtc`'s way.
    pub(crate) fn remember(&self, ssrc: u32) {
        let mut state = self.state();
        state.ssrcs.remove(&ssrc);
        self.shared
            .any
            .store(!state.ssrcs.is_empty(), Ordering::Relaxed);
    }

    /// Whether `ssrc` is forgotten.
    #[cfg(test)]
    pub(crate) fn is_forgotten(&self, ssrc: u32) -> bool {
        self.shared.any.load(Ordering::Relaxed) && self.state().ssrcs.contains(&ssrc)
    }

    /// Moves the packets taken since the last call into `into`.
    pub(crate) fn take_packets(&self, into: &mut Vec<rtp::Packet>) {
        if self.shared.any.load(Ordering::Relaxed) {
            into.append(&mut self.state().packets);
        }
    }

    /// The interceptor that takes forgotten layers' packets.
    pub fn interceptor(&self) -> RecoverForgottenLayers {
        RecoverForgottenLayers {
            layers: self.clone(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }
}

/// Takes the RTP packets of forgotten SSRCs out of the read chain into
/// [`ForgottenLayers`]; passes everything else on.
pub struct RecoverForgottenLayers {
    layers: ForgottenLayers,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RecoverForgottenLayers {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && self.layers.shared.any.load(Ordering::Relaxed)
        {
            let mut state = self.layers.state();
            if state.ssrcs.contains(&packet.header.ssrc) {
                if let Packet::Rtp(packet) = msg.message.packet {
                    state.packets.push(packet);
                }
                return Ok(());
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
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

impl Interceptor for RecoverForgottenLayers {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::{TransportContext, TransportMessage};

    fn rtp(ssrc: u32) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp::Packet {
                header: rtp::header::Header {
                    ssrc,
                    ..Default::default()
                },
                payload: Default::default(),
            })),
        }
    }

    #[test]
    fn packets_of_a_forgotten_ssrc_are_taken_and_others_pass_until_it_is_remembered() {
        let layers = ForgottenLayers::default();
        let mut interceptor = layers.interceptor();
        layers.forget(7);
        interceptor.handle_read(rtp(7)).unwrap();
        interceptor.handle_read(rtp(8)).unwrap();
        let passed: Vec<u32> = std::iter::from_fn(|| interceptor.poll_read())
            .filter_map(|m| match m.message.packet {
                Packet::Rtp(p) => Some(p.header.ssrc),
                _ => None,
            })
            .collect();
        assert_eq!(passed, vec![8]);
        let mut taken = Vec::new();
        layers.take_packets(&mut taken);
        assert_eq!(
            taken.iter().map(|p| p.header.ssrc).collect::<Vec<_>>(),
            vec![7]
        );

        layers.remember(7);
        assert!(!layers.is_forgotten(7));
        interceptor.handle_read(rtp(7)).unwrap();
        assert!(interceptor.poll_read().is_some());
        let mut taken = Vec::new();
        layers.take_packets(&mut taken);
        assert!(taken.is_empty());
    }
}
