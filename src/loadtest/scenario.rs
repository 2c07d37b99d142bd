//! Who joins which room and what they publish and receive, per scenario.

use serde::Serialize;

use super::media::MediaKind;
use super::stats::Recorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1 speaker (audio) and N listeners per room.
    AudioRoom,
    /// N 1:1 calls (`--rooms`), audio and video both ways.
    VideoCalls,
    /// R rooms of P participants; everyone publishes audio and video and
    /// receives everyone else.
    Meeting,
    /// 1 publisher (audio and video) and N subscribers per room.
    Livestream,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::AudioRoom => "audio-room",
            Scenario::VideoCalls => "video-calls",
            Scenario::Meeting => "meeting",
            Scenario::Livestream => "livestream",
        }
    }

    /// Rooms, publishing participants per room, receive-only participants
    /// per room, when not given.
    fn defaults(self) -> (usize, usize, usize) {
        match self {
            Scenario::AudioRoom => (1, 1, 20),
            Scenario::VideoCalls => (5, 2, 0),
            Scenario::Meeting => (2, 4, 0),
            Scenario::Livestream => (1, 1, 50),
        }
    }

    fn publishes(self) -> &'static [MediaKind] {
        match self {
            Scenario::AudioRoom => &[MediaKind::Audio],
            _ => &[MediaKind::Audio, MediaKind::Video],
        }
    }

    /// Whether publishing participants also receive the others.
    fn publishers_subscribe(self) -> bool {
        !matches!(self, Scenario::Livestream)
    }
}

/// Sizes asked on the command line; `None` takes the scenario's default.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sizes {
    pub rooms: Option<usize>,
    pub publishers: Option<usize>,
    pub subscribers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ParticipantPlan {
    pub index: usize,
    pub room: usize,
    pub identity: String,
    /// Publisher track ids (in the recorder) and their kinds.
    pub tracks: Vec<(u32, MediaKind)>,
    pub subscribe: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    /// Publishing participants first, then the receive-only ones.
    pub participants: Vec<ParticipantPlan>,
}

impl Plan {
    /// Lays the scenario out, registering every publisher track in `recorder`.
    pub fn new(scenario: Scenario, sizes: Sizes, recorder: &mut Recorder) -> Result<Plan, String> {
        let (rooms, publishers, subscribers) = scenario.defaults();
        let rooms = sizes.rooms.unwrap_or(rooms);
        let publishers = sizes.publishers.unwrap_or(publishers);
        let subscribers = sizes.subscribers.unwrap_or(subscribers);
        if rooms == 0 || publishers == 0 {
            return Err("--rooms and --publishers must be at least 1".into());
        }
        if scenario == Scenario::VideoCalls && (publishers != 2 || subscribers != 0) {
            return Err("video-calls are 1:1: set the number of calls with --rooms".into());
        }
        let mut participants = Vec::new();
        for room in 0..rooms {
            for p in 0..publishers {
                let tracks = scenario
                    .publishes()
                    .iter()
                    .map(|kind| (recorder.add_track(*kind), *kind))
                    .collect();
                participants.push(ParticipantPlan {
                    index: participants.len(),
                    room,
                    identity: format!("pub-{room}-{p}"),
                    tracks,
                    subscribe: scenario.publishers_subscribe(),
                });
            }
        }
        for room in 0..rooms {
            for s in 0..subscribers {
                participants.push(ParticipantPlan {
                    index: participants.len(),
                    room,
                    identity: format!("sub-{room}-{s}"),
                    tracks: Vec::new(),
                    subscribe: true,
                });
            }
        }
        Ok(Plan {
            scenario,
            rooms,
            publishers_per_room: publishers,
            subscribers_per_room: subscribers,
            participants,
        })
    }

    /// Every (receiving participant, publisher track) pair that should flow.
    pub fn expected(&self) -> Vec<(usize, u32)> {
        let mut pairs = Vec::new();
        for sub in self.participants.iter().filter(|p| p.subscribe) {
            for publ in &self.participants {
                if publ.room == sub.room && publ.index != sub.index {
                    pairs.extend(publ.tracks.iter().map(|(t, _)| (sub.index, *t)));
                }
            }
        }
        pairs
    }

    /// Participants in the largest room.
    pub fn room_size(&self) -> usize {
        self.publishers_per_room + self.subscribers_per_room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scenario: Scenario, sizes: Sizes) -> Plan {
        Plan::new(scenario, sizes, &mut Recorder::default()).unwrap()
    }

    #[test]
    fn each_scenario_expects_the_tracks_it_describes() {
        let sizes = |rooms, publishers, subscribers| Sizes {
            rooms: Some(rooms),
            publishers: Some(publishers),
            subscribers: Some(subscribers),
        };
        // 1 speaker, 10 listeners: 10 audio tracks (the speaker hears nobody).
        assert_eq!(
            plan(Scenario::AudioRoom, sizes(1, 1, 10)).expected().len(),
            10
        );
        // 3 calls, each side gets the other's audio and video.
        let calls = plan(
            Scenario::VideoCalls,
            Sizes {
                rooms: Some(3),
                ..Sizes::default()
            },
        );
        assert_eq!(calls.participants.len(), 6);
        assert_eq!(calls.expected().len(), 3 * 2 * 2);
        // 2 rooms of 4: each receives 3 others × 2 tracks.
        assert_eq!(
            plan(Scenario::Meeting, sizes(2, 4, 0)).expected().len(),
            2 * 4 * 3 * 2
        );
        // 1 publisher, 7 subscribers; the publisher receives nothing.
        let live = plan(Scenario::Livestream, sizes(1, 1, 7));
        assert_eq!(live.expected().len(), 14);
        assert!(!live.participants[0].subscribe);
        assert!(
            Plan::new(
                Scenario::VideoCalls,
                sizes(2, 3, 0),
                &mut Recorder::default()
            )
            .is_err()
        );
    }
}
