//! Active speaker detection from the RFC 6464 audio level every audio
//! packet carries.
//!
//! Time is cut into update intervals (400 ms by default). In each interval
//! a producer is *speaking* when at least `percentile` % (40 %) of the level
//! samples it sent reach `active_level` (−35 dBov or louder): the interval's
//! loudness is then the amplitude of its ⌈n × 40 / 100⌉-th loudest sample,
//! otherwise 0. A producer that sent nothing in an interval was silent. Its
//! reported level is the mean loudness of its last `smoothing_intervals`
//! (2) intervals, and it is listed while that mean is above 0, i.e. while
//! any of those intervals was speech.
//!
//! The percentile is what keeps a click or a door slam (a few loud packets
//! among the twenty of an interval) from making a speaker; the smoothing is
//! what keeps a speaker listed through the pause between two sentences.
//!
//! Sans-I/O: the caller feeds samples with the instant they arrived, polls
//! at [`ActiveSpeakers::next_timeout`], and forwards what
//! [`ActiveSpeakers::poll`] returns.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;

/// RFC 6464's quietest level: −127 dBov, digital silence.
const SILENCE: u8 = 127;

#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerConfig {
    /// Quietest level that counts as speech, in −dBov (0 is loudest, 127
    /// silence): a sample with `level <= active_level` is loud enough.
    pub active_level: u8,
    /// Share of an interval's samples, in percent (1..=100), that must be
    /// loud enough for the interval to count as speech.
    pub percentile: u8,
    /// How often the speaker list is recomputed, and so the most often it
    /// is sent.
    pub update_interval: Duration,
    /// Intervals averaged into a producer's level; a speaker stays listed
    /// until this many intervals in a row were not speech.
    pub smoothing_intervals: usize,
    /// Change of a listed speaker's level, in dB, that is news by itself
    /// (when the list and its order stay the same). Speech ripples by a few
    /// dB from one interval to the next; resending the list for that would
    /// send it every interval.
    pub level_change_db: f32,
    /// Count a sample as speech only when the sender also set its
    /// voice-activity (V) bit. Off by default: not every sender runs a VAD
    /// or sets the bit (RFC 6464 lets the SDP declare it unused), and the
    /// level alone judges every sender by the same rule.
    pub require_voice_activity: bool,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            active_level: 35,
            percentile: 40,
            update_interval: Duration::from_millis(400),
            smoothing_intervals: 2,
            level_change_db: 6.0,
            require_voice_activity: false,
        }
    }
}

/// One entry of the active speaker list.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker<K> {
    pub producer: K,
    /// Smoothed amplitude relative to full scale, 0.0..=1.0 (−20 dBov is
    /// 0.1, −35 dBov about 0.018).
    pub level: f32,
}

/// Active speaker detection for the audio producers of one room, keyed by
/// whatever names a producer (`K`).
#[derive(Debug)]
pub struct ActiveSpeakers<K> {
    config: SpeakerConfig,
    producers: BTreeMap<K, ProducerLevels>,
    /// End of the interval being collected. `None` while the clock is
    /// stopped: before the first sample, and once nobody has been heard for
    /// a whole smoothing window and nobody is listed.
    interval_end: Option<Instant>,
    /// The list [`poll`](Self::poll) last returned: what listeners know.
    reported: Vec<Speaker<K>>,
    /// A list that differs from `reported`, computed when the interval
    /// ending at the given instant closed, not polled yet.
    pending: Option<(Instant, Vec<Speaker<K>>)>,
}

#[derive(Debug)]
struct ProducerLevels {
    /// The open interval's samples, counted per level (index = −dBov):
    /// fixed size whatever the sender's packet rate.
    counts: [u32; SILENCE as usize + 1],
    samples: u32,
    /// Loudness of the last `smoothing_intervals` closed intervals, oldest
    /// first; 0.0 for an interval that was not speech. Always full.
    recent: VecDeque<f32>,
}

impl<K: Ord + Clone> ActiveSpeakers<K> {
    pub fn new(config: SpeakerConfig) -> Self {
        // Normalised rather than refused: a bad value must not take down the
        // media worker, and these bounds are the only sane reading of it.
        let config = SpeakerConfig {
            active_level: config.active_level.min(SILENCE),
            percentile: config.percentile.clamp(1, 100),
            update_interval: config.update_interval.max(Duration::from_millis(1)),
            smoothing_intervals: config.smoothing_intervals.max(1),
            ..config
        };
        ActiveSpeakers {
            config,
            producers: BTreeMap::new(),
            interval_end: None,
            reported: Vec::new(),
            pending: None,
        }
    }

    /// Records the audio level extension of one packet from `producer`,
    /// which arrived at `at`. An unknown producer is added.
    pub fn observe(&mut self, producer: &K, sample: AudioLevelExtension, at: Instant) {
        match self.interval_end {
            // The first sound after a quiet spell starts a full interval,
            // rather than ending one in the middle of the first word.
            None => self.interval_end = Some(at + self.config.update_interval),
            // A sample that arrives after the deadline belongs to the next
            // interval: close the one that ended first.
            Some(_) => self.advance(at),
        }
        let level = if self.config.require_voice_activity && !sample.voice {
            SILENCE
        } else {
            sample.level.min(SILENCE)
        };
        // Looked up before inserting so a known producer's key is not cloned
        // for every packet.
        if !self.producers.contains_key(producer) {
            let levels = ProducerLevels::new(self.config.smoothing_intervals);
            self.producers.insert(producer.clone(), levels);
        }
        if let Some(levels) = self.producers.get_mut(producer) {
            levels.record(level);
        }
    }

    /// Forgets `producer` (unpublished, or its participant left). If it was
    /// listed, the list without it is returned at the end of the interval.
    pub fn remove(&mut self, producer: &K) {
        self.producers.remove(producer);
    }

    /// Closes the intervals that ended by `now`. Returns the speaker list,
    /// loudest first, when it differs from the one returned last: another
    /// set or order, or a speaker's level moved by `level_change_db` or
    /// more. At most one list per interval; an empty list means nobody
    /// speaks any more.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Speaker<K>>> {
        self.advance(now);
        let (_, speakers) = self.pending.take()?;
        self.reported.clone_from(&speakers);
        self.stop_clock_if_quiet();
        Some(speakers)
    }

    /// When to call [`poll`](Self::poll) next: the end of the open interval,
    /// or an instant already past when a list is waiting. `None` while
    /// nobody has been heard for a whole smoothing window and nobody is
    /// listed: then there is nothing to time until the next sample.
    pub fn next_timeout(&self) -> Option<Instant> {
        match &self.pending {
            Some((closed_at, _)) => Some(*closed_at),
            None => self.interval_end,
        }
    }

    /// Checked when an interval closes, not per packet: a room of muted
    /// microphones needs no timer.
    fn stop_clock_if_quiet(&mut self) {
        let quiet = self.pending.is_none()
            && self.reported.is_empty()
            && self.producers.values().all(ProducerLevels::is_quiet);
        if quiet {
            self.interval_end = None;
        }
    }

    fn advance(&mut self, now: Instant) {
        let Some(end) = self.interval_end else {
            return;
        };
        if now < end {
            return;
        }
        let interval = self.config.update_interval;
        let late = now - end;
        // The open interval ended, and so did every whole interval since
        // (the caller may poll late). Those had no samples: after
        // `smoothing_intervals` of them every producer is all silence, so
        // closing more would change nothing.
        let ended = 1 + late.as_nanos() / interval.as_nanos();
        let to_close = ended.min(self.config.smoothing_intervals as u128 + 1);
        for _ in 0..to_close {
            for levels in self.producers.values_mut() {
                levels.close_interval(&self.config);
            }
        }
        let into_open = Duration::from_nanos((late.as_nanos() % interval.as_nanos()) as u64);
        let closed_at = now - into_open;
        self.interval_end = Some(closed_at + interval);

        let speakers = self.ranked();
        self.pending = self
            .differs_from_reported(&speakers)
            .then_some((closed_at, speakers));
        self.stop_clock_if_quiet();
    }

    /// Every producer whose smoothed level is above 0, loudest first (ties
    /// in key order, so the list is the same every time).
    fn ranked(&self) -> Vec<Speaker<K>> {
        let mut speakers: Vec<Speaker<K>> = self
            .producers
            .iter()
            .filter_map(|(producer, levels)| {
                let level = levels.smoothed();
                (level > 0.0).then(|| Speaker {
                    producer: producer.clone(),
                    level,
                })
            })
            .collect();
        speakers.sort_by(|a, b| b.level.total_cmp(&a.level));
        speakers
    }

    fn differs_from_reported(&self, speakers: &[Speaker<K>]) -> bool {
        let material = 10f32.powf(self.config.level_change_db / 20.0);
        speakers.len() != self.reported.len()
            || speakers.iter().zip(&self.reported).any(|(now, before)| {
                let ratio = now.level.max(before.level) / now.level.min(before.level);
                now.producer != before.producer || ratio >= material
            })
    }
}

impl ProducerLevels {
    fn new(smoothing_intervals: usize) -> Self {
        ProducerLevels {
            counts: [0; SILENCE as usize + 1],
            samples: 0,
            recent: std::iter::repeat_n(0.0, smoothing_intervals).collect(),
        }
    }

    fn record(&mut self, level: u8) {
        let count = &mut self.counts[usize::from(level)];
        *count = count.saturating_add(1);
        self.samples = self.samples.saturating_add(1);
    }

    fn is_quiet(&self) -> bool {
        self.samples == 0 && self.recent.iter().all(|&loudness| loudness == 0.0)
    }

    fn smoothed(&self) -> f32 {
        self.recent.iter().sum::<f32>() / self.recent.len() as f32
    }

    fn close_interval(&mut self, config: &SpeakerConfig) {
        let loudness = self.interval_loudness(config);
        self.recent.pop_front();
        self.recent.push_back(loudness);
        self.counts = [0; SILENCE as usize + 1];
        self.samples = 0;
    }

    /// The amplitude of the open interval's k-th loudest sample, k =
    /// ⌈samples × percentile / 100⌉ (so at least `percentile` % of the
    /// samples are that loud or louder), or 0 when that sample is quieter
    /// than `active_level` or there were no samples.
    fn interval_loudness(&self, config: &SpeakerConfig) -> f32 {
        if self.samples == 0 {
            return 0.0;
        }
        let k = (u64::from(self.samples) * u64::from(config.percentile)).div_ceil(100);
        let mut seen = 0u64;
        let kth_loudest = self
            .counts
            .iter()
            .position(|&count| {
                seen += u64::from(count);
                seen >= k
            })
            .map_or(SILENCE, |level| level as u8);
        if kth_loudest <= config.active_level {
            amplitude(kth_loudest)
        } else {
            0.0
        }
    }
}

/// −`level` dBov as an amplitude relative to full scale: 0 → 1.0, 20 → 0.1.
fn amplitude(level: u8) -> f32 {
    10f32.powf(-f32::from(level) / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(400);
    const PACKET: Duration = Duration::from_millis(20);
    /// 20 ms packets in a 400 ms interval.
    const PER_INTERVAL: usize = 20;

    fn sample(level: u8) -> AudioLevelExtension {
        AudioLevelExtension {
            level,
            voice: false,
        }
    }

    fn steady(level: u8) -> Vec<u8> {
        vec![level; PER_INTERVAL]
    }

    /// Interval `index` (counted from `t0`): each producer sends one packet
    /// every 20 ms with the given levels; then a poll at the interval's end.
    fn run_interval(
        speakers: &mut ActiveSpeakers<&'static str>,
        t0: Instant,
        index: u32,
        talkers: &[(&'static str, &[u8])],
    ) -> Option<Vec<Speaker<&'static str>>> {
        let start = t0 + INTERVAL * index;
        for slot in 0..PER_INTERVAL {
            for (producer, levels) in talkers {
                if let Some(&level) = levels.get(slot) {
                    speakers.observe(producer, sample(level), start + PACKET * slot as u32);
                }
            }
        }
        speakers.poll(start + INTERVAL)
    }

    fn names(list: &[Speaker<&'static str>]) -> Vec<&'static str> {
        list.iter().map(|s| s.producer).collect()
    }

    fn assert_level(actual: f32, expected: f32) {
        assert!(
            (actual - expected).abs() < 1e-6,
            "level {actual}, expected {expected}"
        );
    }

    #[test]
    fn steady_talker_at_minus_20_dbov_is_listed_after_the_first_interval() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();

        let first = run_interval(&mut speakers, t0, 0, &[("alice", &steady(20))]).unwrap();
        assert_eq!(names(&first), ["alice"]);
        // One speech interval (amplitude 0.1) averaged with the silence before.
        assert_level(first[0].level, 0.05);

        // The second interval fills the window: the level doubles, which is news.
        let second = run_interval(&mut speakers, t0, 1, &[("alice", &steady(20))]).unwrap();
        assert_eq!(names(&second), ["alice"]);
        assert_level(second[0].level, 0.1);
    }

    #[test]
    fn background_noise_at_minus_50_dbov_is_never_listed() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        for index in 0..10 {
            assert_eq!(
                run_interval(&mut speakers, t0, index, &[("fan", &steady(50))]),
                None
            );
        }
    }

    #[test]
    fn single_loud_click_in_silence_is_never_listed() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        let mut click = steady(SILENCE);
        click[7] = 0;
        assert_eq!(
            run_interval(&mut speakers, t0, 0, &[("desk", &click)]),
            None
        );
        for index in 1..4 {
            assert_eq!(
                run_interval(&mut speakers, t0, index, &[("desk", &steady(SILENCE))]),
                None
            );
        }
    }

    #[test]
    fn interval_is_speech_when_40_percent_of_samples_reach_minus_35_dbov() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        // 7 of 20 loud samples (35 %) is not speech; 36 dBov is not loud enough.
        let mut seven_loud = steady(SILENCE);
        seven_loud[..7].fill(35);
        let mut eight_too_quiet = steady(SILENCE);
        eight_too_quiet[..8].fill(36);
        // 8 of 20 (40 %) at exactly −35 dBov is.
        let mut eight_loud = steady(SILENCE);
        eight_loud[..8].fill(35);

        let talkers: [(&str, &[u8]); 3] = [
            ("seven", &seven_loud),
            ("quiet", &eight_too_quiet),
            ("eight", &eight_loud),
        ];
        let listed = run_interval(&mut speakers, t0, 0, &talkers).unwrap();
        assert_eq!(names(&listed), ["eight"]);
        assert_level(listed[0].level, amplitude(35) / 2.0);
    }

    #[test]
    fn speaker_who_stops_stays_listed_one_quiet_interval_and_is_dropped_after_the_second() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        run_interval(&mut speakers, t0, 0, &[("alice", &steady(20))]).unwrap();
        run_interval(&mut speakers, t0, 1, &[("alice", &steady(20))]).unwrap();

        // Alice sends nothing from here on.
        let one_quiet = run_interval(&mut speakers, t0, 2, &[]).unwrap();
        assert_eq!(names(&one_quiet), ["alice"]);
        assert_level(one_quiet[0].level, 0.05);

        let two_quiet = run_interval(&mut speakers, t0, 3, &[]).unwrap();
        assert!(two_quiet.is_empty());
    }

    #[test]
    fn two_talkers_are_listed_loudest_first() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        let listed = run_interval(
            &mut speakers,
            t0,
            0,
            &[("alice", &steady(30)), ("bob", &steady(15))],
        )
        .unwrap();
        assert_eq!(names(&listed), ["bob", "alice"]);
        assert_level(listed[0].level, amplitude(15) / 2.0);
        assert_level(listed[1].level, amplitude(30) / 2.0);

        // Alice raises her voice above Bob's: the order changes.
        let swapped = run_interval(
            &mut speakers,
            t0,
            1,
            &[("alice", &steady(5)), ("bob", &steady(15))],
        )
        .unwrap();
        assert_eq!(names(&swapped), ["alice", "bob"]);
    }

    #[test]
    fn unchanged_speakers_emit_no_event() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        let talking: [(&str, &[u8]); 1] = [("alice", &steady(20))];
        assert!(run_interval(&mut speakers, t0, 0, &talking).is_some());
        assert!(run_interval(&mut speakers, t0, 1, &talking).is_some());
        for index in 2..8 {
            assert_eq!(run_interval(&mut speakers, t0, index, &talking), None);
        }
    }

    #[test]
    fn level_ripple_under_6_db_emits_no_event() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        run_interval(&mut speakers, t0, 0, &[("alice", &steady(20))]).unwrap();
        run_interval(&mut speakers, t0, 1, &[("alice", &steady(20))]).unwrap();
        // −24 dBov: the mean moves about 2 dB, then back.
        for index in 2..8 {
            let level = if index % 2 == 0 { 24 } else { 20 };
            assert_eq!(
                run_interval(&mut speakers, t0, index, &[("alice", &steady(level))]),
                None
            );
        }
        // −40 dBov is no speech: the mean halves (−6 dB), which is news.
        let quieter = run_interval(&mut speakers, t0, 8, &[("alice", &steady(40))]).unwrap();
        assert_eq!(names(&quieter), ["alice"]);
    }

    #[test]
    fn removed_speaker_is_dropped_at_the_next_interval_end() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        let both: [(&str, &[u8]); 2] = [("alice", &steady(20)), ("bob", &steady(25))];
        run_interval(&mut speakers, t0, 0, &both).unwrap();
        run_interval(&mut speakers, t0, 1, &both).unwrap();

        speakers.remove(&"alice");
        let without_alice = run_interval(&mut speakers, t0, 2, &[("bob", &steady(25))]).unwrap();
        assert_eq!(names(&without_alice), ["bob"]);

        speakers.remove(&"bob");
        assert_eq!(
            speakers.next_timeout(),
            Some(t0 + INTERVAL * 4),
            "bob is still listed: the empty list is due at the interval end"
        );
        let nobody = speakers.poll(t0 + INTERVAL * 4).unwrap();
        assert!(nobody.is_empty());
        assert_eq!(speakers.next_timeout(), None);
    }

    #[test]
    fn next_timeout_is_the_interval_end_while_anyone_is_heard_and_none_once_all_is_quiet() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        assert_eq!(speakers.next_timeout(), None);

        // The first sample starts the first interval.
        speakers.observe(&"alice", sample(20), t0 + Duration::from_millis(50));
        assert_eq!(
            speakers.next_timeout(),
            Some(t0 + Duration::from_millis(450))
        );

        // Only noise, and nothing yet in the open interval: no timer until
        // the next sample, which starts a fresh interval.
        let mut noise = ActiveSpeakers::new(SpeakerConfig::default());
        run_interval(&mut noise, t0, 0, &[("fan", &steady(50))]);
        assert_eq!(noise.next_timeout(), None);
        noise.observe(&"fan", sample(50), t0 + Duration::from_millis(1234));
        assert_eq!(noise.next_timeout(), Some(t0 + Duration::from_millis(1634)));
    }

    #[test]
    fn sample_after_the_deadline_closes_the_interval_before_it_counts() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        for slot in 0..PER_INTERVAL {
            speakers.observe(&"alice", sample(20), t0 + PACKET * slot as u32);
        }
        // The caller is busy past the deadline and hands over a later packet first.
        let late = t0 + INTERVAL + Duration::from_millis(5);
        speakers.observe(&"alice", sample(SILENCE), late);
        assert_eq!(speakers.next_timeout(), Some(t0 + INTERVAL));

        let listed = speakers.poll(late).unwrap();
        assert_eq!(names(&listed), ["alice"]);
        assert_level(listed[0].level, 0.05);
        assert_eq!(speakers.next_timeout(), Some(t0 + INTERVAL * 2));
    }

    #[test]
    fn poll_many_intervals_late_returns_one_list() {
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        run_interval(&mut speakers, t0, 0, &[("alice", &steady(20))]).unwrap();
        // Ten intervals pass without a poll; alice stopped at once.
        let late = t0 + INTERVAL * 11 + Duration::from_millis(100);
        assert_eq!(speakers.poll(late), Some(Vec::new()));
        assert_eq!(speakers.poll(late), None);
    }

    #[test]
    fn voice_activity_bit_is_required_only_when_configured() {
        let config = SpeakerConfig {
            require_voice_activity: true,
            ..SpeakerConfig::default()
        };
        let mut speakers = ActiveSpeakers::new(config);
        let t0 = Instant::now();
        for slot in 0..PER_INTERVAL as u32 {
            let at = t0 + PACKET * slot;
            let loud = |voice| AudioLevelExtension { level: 20, voice };
            speakers.observe(&"no-vad", loud(false), at);
            speakers.observe(&"vad", loud(true), at);
        }
        let listed = speakers.poll(t0 + INTERVAL).unwrap();
        assert_eq!(names(&listed), ["vad"]);
    }
}
