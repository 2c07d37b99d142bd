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

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtp;

use crate::packet_filter::{Filtered, PacketFilter};

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
    pub fn interceptor(&self) -> Filtered<RecoverForgottenLayers> {
        Filtered::new(RecoverForgottenLayers {
            layers: self.clone(),
        })
    }
}

/// Takes the RTP packets of forgotten SSRCs out of the read chain into
/// [`ForgottenLayers`]; passes everything else on.
pub struct RecoverForgottenLayers {
    layers: ForgottenLayers,
}

impl PacketFilter for RecoverForgottenLayers {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && self.layers.shared.any.load(Ordering::Relaxed)
        {
            let mut state = self.layers.state();
            if state.ssrcs.contains(&packet.header.ssrc) {
                if let Packet::Rtp(packet) = msg.message.packet {
                    state.packets.push(packet);
                }
                return None;
            }
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::sansio::Protocol;
    use rtc::shared::{TransportContext, TransportMessage};
    use std::time::Instant;

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
