//! Editing which packets the NACKs of an RTCP compound ask for, as an
//! interceptor of ours does on their way through a peer connection
//! (modules `nack_limit` and `superseded_nacks`).

use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

/// `nack` asking only for the packets `keep` accepts (`None` when it
/// accepts none), and how many it refused.
pub(crate) fn retain_packets(
    nack: &TransportLayerNack,
    mut keep: impl FnMut(u16) -> bool,
) -> (Option<TransportLayerNack>, u64) {
    let mut kept = Vec::new();
    let mut refused = 0;
    for pair in &nack.nacks {
        for seq in pair.packet_list() {
            if keep(seq) {
                kept.push(seq);
            } else {
                refused += 1;
            }
        }
    }
    let edited = (!kept.is_empty()).then(|| TransportLayerNack {
        sender_ssrc: nack.sender_ssrc,
        media_ssrc: nack.media_ssrc,
        nacks: nack_pairs_from_sequence_numbers(&kept),
    });
    (edited, refused)
}

/// The sequence numbers every NACK of `msg`'s RTCP compound asks for, and
/// how many RTCP packets the compound holds (tests of the interceptors).
#[cfg(test)]
pub(crate) fn nacked_in(msg: TaggedPacket) -> (Vec<u16>, usize) {
    let Packet::Rtcp(packets) = msg.message.packet else {
        panic!("not RTCP");
    };
    let seqs = packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
        .collect();
    (seqs, packets.len())
}

/// `msg` with each NACK of its RTCP compound replaced by what `edit` makes
/// of it (removed on `None`); other packets pass untouched. `None` when the
/// compound is left empty: rtc reads an empty RTCP list as something else
/// (an attribute carrier), so nothing goes on.
pub(crate) fn edit_nacks(
    mut msg: TaggedPacket,
    mut edit: impl FnMut(&TransportLayerNack) -> Option<TransportLayerNack>,
) -> Option<TaggedPacket> {
    if let Packet::Rtcp(packets) = &mut msg.message.packet
        && packets
            .iter()
            .any(|p| p.as_any().is::<TransportLayerNack>())
    {
        let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
        for p in packets.drain(..) {
            match p.as_any().downcast_ref::<TransportLayerNack>() {
                Some(nack) => {
                    if let Some(edited) = edit(nack) {
                        kept.push(Box::new(edited));
                    }
                }
                None => kept.push(p),
            }
        }
        if kept.is_empty() {
            return None;
        }
        *packets = kept;
    }
    Some(msg)
}
