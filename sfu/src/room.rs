//! A room and its participants as the media plane keeps them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::RTCRtpSenderId;

use crate::outbox::Outbox;
use crate::producer::Producer;
use crate::quality::QualityTracker;
use crate::session::{ParticipantEvent, ParticipantInfo, RoomInfo, SfuError, TrackInfo};
use crate::speaker::ActiveSpeakers;
use crate::timers::Scheduled;
use crate::transport::TransportId;

/// The node's room settings, for rooms that do not set their own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomDefaults {
    pub(crate) max_participants: usize,
    pub(crate) empty_timeout: Duration,
}

pub(crate) struct Participant {
    pub(crate) sid: String,
    pub(crate) identity: String,
    pub(crate) name: String,
    pub(crate) can_publish: bool,
    pub(crate) can_subscribe: bool,
    pub(crate) can_publish_data: bool,
    pub(crate) metadata: String,
    pub(crate) attributes: std::collections::BTreeMap<String, String>,
    pub(crate) publisher: Option<TransportId>,
    pub(crate) subscriber: Option<TransportId>,
    /// A subscribe offer is out and its answer not yet in.
    pub(crate) offer_pending: bool,
    /// Subscriptions changed while an offer was pending.
    pub(crate) needs_offer: bool,
    /// Producer sid → the consumer's sender on this participant's subscriber transport.
    pub(crate) subscriptions: HashMap<String, RTCRtpSenderId>,
    /// One of its transports has connected.
    pub(crate) media_connected: bool,
    /// Nothing is forwarded from or to it until the control plane releases
    /// it (a paid call waiting for its first hold in the ledger).
    pub(crate) media_held: bool,
    /// Its signaling connection is gone and not yet resumed.
    pub(crate) detached: bool,
    pub(crate) reconnecting: Option<Reconnecting>,
    /// Its connection quality, judged window by window.
    pub(crate) quality: QualityTracker,
    /// Its streams' cumulative counters at the last window's end, by SSRC.
    pub(crate) stream_counters: HashMap<u32, StreamCounters>,
}

/// A stream's cumulative counters: packets received (what it publishes) or
/// sent (what it receives), and packets lost.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamCounters {
    pub(crate) packets: u64,
    pub(crate) lost: i64,
}

/// A participant whose connection is lost, waiting to resume.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reconnecting {
    /// When it was declared: the grace runs from here.
    pub(crate) declared: Instant,
    /// When its traffic (or its signaling) stopped: traffic after this
    /// means it is back.
    pub(crate) stopped_at: Instant,
}

pub(crate) struct Room {
    pub(crate) name: String,
    pub(crate) sid: String,
    /// Its own limits and metadata (`RoomOptions`); `None`: the node's.
    pub(crate) max_participants: Option<usize>,
    pub(crate) empty_timeout: Option<Duration>,
    pub(crate) metadata: String,
    pub(crate) allow_remote_unmute: bool,
    pub(crate) participants: HashMap<String, Participant>,
    pub(crate) producers: HashMap<String, Producer>,
    pub(crate) empty_since: Option<Instant>,
    /// Who is speaking, from its audio producers' levels (by producer sid).
    pub(crate) speakers: ActiveSpeakers<String>,
    /// Its speakers' entry in the shard's timer heap.
    pub(crate) speakers_scheduled: Scheduled,
}

impl Participant {
    pub(crate) fn info(&self, room: &Room) -> ParticipantInfo {
        let mut tracks: Vec<TrackInfo> = room
            .producers
            .values()
            .filter(|p| p.owner_sid == self.sid)
            .map(Producer::info)
            .collect();
        tracks.sort_by(|a, b| a.sid.cmp(&b.sid));
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            can_publish: self.can_publish,
            can_subscribe: self.can_subscribe,
            can_publish_data: self.can_publish_data,
            tracks,
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
        }
    }
}

impl Room {
    /// The room's info, with the node's defaults for what it does not set.
    pub(crate) fn info(&self, defaults: &RoomDefaults) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            sid: self.sid.clone(),
            max_participants: self.max_participants(defaults),
            num_participants: self.participants.len(),
            num_tracks: self.producers.len(),
            empty_timeout_s: self.empty_timeout(defaults).as_secs(),
            metadata: self.metadata.clone(),
        }
    }

    /// The participant of `identity` (an identity is in a room once).
    pub(crate) fn by_identity(&self, identity: &str) -> Result<&Participant, SfuError> {
        self.participants
            .values()
            .find(|p| p.identity == identity)
            .ok_or(SfuError::ParticipantNotFound)
    }

    /// The sids of the tracks (producers) participant `sid` publishes.
    pub(crate) fn producers_of(&self, sid: &str) -> Vec<String> {
        self.producers
            .values()
            .filter(|p| p.owner_sid == sid)
            .map(|p| p.sid.clone())
            .collect()
    }

    pub(crate) fn max_participants(&self, defaults: &RoomDefaults) -> usize {
        self.max_participants.unwrap_or(defaults.max_participants)
    }

    pub(crate) fn empty_timeout(&self, defaults: &RoomDefaults) -> Duration {
        self.empty_timeout.unwrap_or(defaults.empty_timeout)
    }

    pub(crate) fn broadcast(
        &self,
        outbox: &mut Outbox,
        except: Option<&str>,
        event: &ParticipantEvent,
    ) {
        for p in self.participants.values() {
            if Some(p.sid.as_str()) != except {
                outbox.send(&p.sid, event.clone());
            }
        }
    }
}
