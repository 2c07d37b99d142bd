//! Resends our last DTLS handshake flight when the client retransmits its
//! own (RFC 6347 §4.2.4: "when a peer receives a retransmitted flight, it
//! retransmits its last flight").
//!
//! The server is always the DTLS server, so the client's timers drive the
//! handshake: if our flight is lost, the client sends its previous flight
//! again and expects ours in reply. rtc-dtls 0.21's handshaker does not do
//! that: on any handshake packet it clears its retransmission timer, finds
//! nothing new, and waits, so one lost server flight (ServerHello …
//! ServerHelloDone, or ChangeCipherSpec + Finished) leaves the transport
//! "connecting" for ever while the client retries. We cannot change rtc, so
//! this works on datagrams around it: it remembers the DTLS datagrams we
//! sent in answer to each new client flight, recognises a retransmitted
//! client flight by its handshake message sequence numbers, and sends the
//! remembered datagrams again. The client ignores duplicates of records it
//! already has (their record sequence numbers repeat), so a needless resend
//! costs only bandwidth.
//!
//! rtc's own timer retransmissions of our flights are held back: they carry
//! new record sequence numbers, so a client running rtc's handshaker takes
//! them as new, clears its timer, and never repeats a flight of its own
//! that was lost. Our resends are byte-identical copies, which such a
//! client drops as duplicates with its timer left running.
//!
//! It also keeps the timer RFC 6347 §4.2.4 gives every flight: when the
//! client sends nothing new for a while after our flight (1 s, doubling),
//! the flight goes out again. rtc's handshaker on the other side, when the
//! client runs it (the test clients, other webrtc-rs peers), has the same
//! flaw: a flight of ours that arrives in part clears its timer, and it
//! waits for ever without repeating its own; only our timer gets the
//! handshake going again then.
//!
//! It reads record headers only (RFC 6347 §4.1: type, version, epoch,
//! sequence number, length) and the handshake header of epoch-0 records
//! (type, length, message_seq); it never decrypts anything.

use std::time::{Duration, Instant};

use bytes::BytesMut;

/// Most datagrams kept for one flight (a certificate chain takes a few).
const MAX_FLIGHT_DATAGRAMS: usize = 8;
/// A retransmitted client flight of several datagrams gets one resend.
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(20);
/// RFC 6347 §4.2.4.1 starts at 1 s, doubled at each expiry, capped. Ours
/// starts later than the client's 1 s: while the client's own timer works,
/// it repeats its flight first and gets ours in answer. Ours only has to
/// act when the client has gone quiet (a client running rtc's handshaker
/// that got part of a flight of ours and cleared its timer).
const INITIAL_RTO: Duration = Duration::from_millis(2500);
const MAX_RTO: Duration = Duration::from_secs(8);
/// Timer resends of one flight before we leave it to the client.
const MAX_TIMER_RESENDS: u32 = 6;

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;

/// RFC 7983: a first byte of 20–63 is DTLS.
pub(crate) fn is_dtls(data: &[u8]) -> bool {
    matches!(data.first(), Some(20..=63))
}

/// RFC 7983: a first byte of 128–191 is RTP or RTCP.
fn is_rtp_or_rtcp(data: &[u8]) -> bool {
    matches!(data.first(), Some(128..=191))
}

/// What identifies a record's content regardless of its record sequence
/// number: an rtc retransmission of the same flight has the same keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordKey {
    content_type: u8,
    epoch: u16,
    /// Epoch-0 handshake: (message_seq, fragment offset); else the length.
    detail: (u16, u32),
}

/// The records of a DTLS datagram, as far as they are well-formed.
fn records(data: &[u8]) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    let mut rest = data;
    while rest.len() >= RECORD_HEADER {
        let content_type = rest[0];
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let length = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + length) else {
            break;
        };
        let detail = if content_type == CONTENT_HANDSHAKE
            && epoch == 0
            && fragment.len() >= HANDSHAKE_HEADER
        {
            let message_seq = u16::from_be_bytes([fragment[4], fragment[5]]);
            let offset = u32::from_be_bytes([0, fragment[6], fragment[7], fragment[8]]);
            (message_seq, offset)
        } else {
            (u16::MAX, length as u32)
        };
        keys.push(RecordKey {
            content_type,
            epoch,
            detail,
        });
        rest = &rest[RECORD_HEADER + length..];
    }
    keys
}

const CLIENT_HELLO: u8 = 1;

/// The handshake type of a datagram's first record, if it is an epoch-0
/// handshake record.
fn first_handshake_type(data: &[u8]) -> Option<u8> {
    let epoch = u16::from_be_bytes([*data.get(3)?, *data.get(4)?]);
    (*data.first()? == CONTENT_HANDSHAKE && epoch == 0)
        .then(|| data.get(RECORD_HEADER).copied())
        .flatten()
}

/// The highest handshake message_seq among a datagram's epoch-0 records.
fn highest_message_seq(keys: &[RecordKey]) -> Option<u16> {
    keys.iter()
        .filter(|k| k.content_type == CONTENT_HANDSHAKE && k.epoch == 0)
        .map(|k| k.detail.0)
        .max()
}

/// What an inbound datagram means for the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Not part of the handshake (or the handshake is over).
    Other,
    /// A client flight we had not seen.
    NewFlight,
    /// A client flight seen before: send our last flight again.
    Retransmission,
    /// A ClientHello older than one the client has sent since (a late copy,
    /// overtaken on the way): keep it from rtc, whose DTLS server would
    /// start the handshake over on it (back to HelloVerifyRequest) and
    /// refuse the flights of the handshake in progress.
    Stale,
}

/// Whether a DTLS datagram of ours goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outbound {
    Send,
    /// rtc sending a flight of ours again on its own timer: dropped (see
    /// `FlightReplay::outbound`).
    Suppress,
}

/// One transport's view of its DTLS handshake.
#[derive(Debug, Default)]
pub(crate) struct FlightReplay {
    /// Highest handshake message_seq the client has sent.
    client_seq: Option<u16>,
    /// The client flight (its `client_seq`) `flight` answers.
    answers: Option<u16>,
    /// Our DTLS datagrams in answer to it, and their record keys.
    flight: Vec<(BytesMut, Vec<RecordKey>)>,
    last_resend: Option<Instant>,
    /// When our flight last went out, while the client has sent nothing
    /// newer: the retransmission timer runs from here.
    sent_at: Option<Instant>,
    rto: Duration,
    timer_resends: u32,
    /// Our first flight was a ClientHello: we are the DTLS client (the peer
    /// answered `a=setup:passive`). Our flights then have rtc's own timer,
    /// and a resend of ours could clear the timer of a peer running rtc's
    /// DTLS server (its handshaker clears it on any packet), so ours stays off.
    dtls_client: bool,
    /// The client sent media: it has finished the handshake.
    over: bool,
}

impl FlightReplay {
    /// Classifies a datagram from the client.
    pub(crate) fn inbound(&mut self, data: &[u8]) -> Inbound {
        if self.over {
            return Inbound::Other;
        }
        if is_rtp_or_rtcp(data) {
            // SRTP needs the keys of a finished handshake.
            self.over = true;
            self.flight = Vec::new();
            return Inbound::Other;
        }
        if !is_dtls(data) {
            return Inbound::Other;
        }
        let Some(seq) = highest_message_seq(&records(data)) else {
            return Inbound::Other;
        };
        match self.client_seq {
            Some(seen) if seq < seen && first_handshake_type(data) == Some(CLIENT_HELLO) => {
                Inbound::Stale
            }
            Some(seen) if seq <= seen => Inbound::Retransmission,
            _ => {
                self.client_seq = Some(seq);
                // Our flight was answered: no timer until we send the next.
                self.sent_at = None;
                Inbound::NewFlight
            }
        }
    }

    /// Notes a datagram we are about to send the client, and says whether
    /// it should go.
    pub(crate) fn outbound(&mut self, now: Instant, data: &BytesMut) -> Outbound {
        if self.over || !is_dtls(data) {
            return Outbound::Send;
        }
        if self.client_seq.is_none() && first_handshake_type(data) == Some(CLIENT_HELLO) {
            self.dtls_client = true;
        }
        if self.answers != self.client_seq || self.flight.is_empty() {
            self.answers = self.client_seq;
            self.flight.clear();
            self.sent_at = Some(now);
            self.rto = INITIAL_RTO;
            self.timer_resends = 0;
        }
        let keys = records(data);
        let known = self.flight.iter().any(|(_, k)| *k == keys);
        if known && !self.dtls_client {
            // rtc's own timer sending a flight again, under new record
            // sequence numbers: to a client running rtc's handshaker these
            // are new records, which clear its retransmission timer even
            // though they change nothing. If the client's next flight was
            // lost, it then never sends it again, and the handshake sits
            // for ever (seen in client logs under 5% loss: flight 5 lost,
            // our flight 4 again 1 s later, the client silent until the
            // deadline). Byte-identical resends of ours (on the client's
            // retransmission, or our timer) are duplicates to it and leave
            // its timer alone; they are the only resends that go out.
            return Outbound::Suppress;
        }
        if !known && self.flight.len() < MAX_FLIGHT_DATAGRAMS {
            self.flight.push((data.clone(), keys));
        }
        Outbound::Send
    }

    /// Where the handshake stands, for a log line.
    pub(crate) fn describe(&self) -> String {
        format!(
            "client_seq={:?} answers={:?} kept={} timer_resends={} dtls_client={}",
            self.client_seq,
            self.answers,
            self.flight.len(),
            self.timer_resends,
            self.dtls_client
        )
    }

    /// When our flight goes out again if the client sends nothing new.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        if self.over
            || self.dtls_client
            || self.flight.is_empty()
            || self.timer_resends >= MAX_TIMER_RESENDS
        {
            return None;
        }
        self.sent_at.map(|at| at + self.rto)
    }

    /// Our flight again if its timer has expired (and the timer doubled).
    pub(crate) fn resend_on_timer(&mut self, now: Instant) -> Vec<BytesMut> {
        if self.next_timer().is_none_or(|at| now < at) {
            return Vec::new();
        }
        self.timer_resends += 1;
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.sent_at = Some(now);
        self.last_resend = Some(now);
        self.flight.iter().map(|(d, _)| d.clone()).collect()
    }

    /// The datagrams to send again for a retransmitted client flight (none
    /// within `MIN_RESEND_INTERVAL` of the last resend).
    pub(crate) fn resend(&mut self, now: Instant) -> Vec<BytesMut> {
        // What we keep must answer the client's latest flight: a flight of
        // ours answering an older one (rtc has not answered the latest
        // yet) would only confuse the client (rtc's client handshaker
        // drops its timer on it).
        if self.answers != self.client_seq
            || self
                .last_resend
                .is_some_and(|at| now < at + MIN_RESEND_INTERVAL)
        {
            return Vec::new();
        }
        self.last_resend = Some(now);
        if self.sent_at.is_some() {
            // Just sent: the timer runs from here.
            self.sent_at = Some(now);
        }
        self.flight.iter().map(|(d, _)| d.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DTLS record: `content_type`, `epoch`, record `seq`, and for a
    /// handshake record a handshake header with `message_seq`.
    fn record(content_type: u8, epoch: u16, seq: u8, message_seq: Option<u16>) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(m) = message_seq {
            body.extend_from_slice(&[1, 0, 0, 4]);
            body.extend_from_slice(&m.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 0, 4, 9, 9, 9, 9]);
        } else {
            body.extend_from_slice(&[1]);
        }
        let mut r = vec![content_type, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, seq]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn a_repeated_client_flight_gets_our_last_flight_again() {
        let now = Instant::now();
        let mut replay = FlightReplay::default();
        let client_hello = record(22, 0, 0, Some(0));
        assert_eq!(replay.inbound(&client_hello), Inbound::NewFlight);
        let server_flight = BytesMut::from(&record(22, 0, 0, Some(0))[..]);
        assert_eq!(replay.outbound(now, &server_flight), Outbound::Send);
        // rtc's own retransmission of it (same content, new record number)
        // does not go out, and what is kept stays the first copy.
        assert_eq!(
            replay.outbound(now, &BytesMut::from(&record(22, 0, 7, Some(0))[..])),
            Outbound::Suppress
        );
        let again = record(22, 0, 1, Some(0));
        assert_eq!(replay.inbound(&again), Inbound::Retransmission);
        assert_eq!(replay.resend(now), vec![server_flight.clone()]);
        assert!(replay.resend(now + Duration::from_millis(5)).is_empty());

        // The next client flight replaces what is kept.
        let flight5 = [record(22, 0, 1, Some(1)), record(20, 0, 2, None)].concat();
        assert_eq!(replay.inbound(&flight5), Inbound::NewFlight);
        let flight6 =
            BytesMut::from(&[record(20, 0, 1, None), record(22, 1, 0, None)].concat()[..]);
        replay.outbound(now, &flight6);
        assert_eq!(replay.inbound(&flight5), Inbound::Retransmission);
        assert_eq!(replay.resend(now + Duration::from_secs(1)), vec![flight6]);

        // Media from the client ends it.
        assert_eq!(replay.inbound(&[0x80, 96, 0, 1]), Inbound::Other);
        assert_eq!(replay.inbound(&flight5), Inbound::Other);
        assert!(replay.flight.is_empty());
    }

    #[test]
    fn our_flight_goes_out_again_on_a_doubling_timer_until_the_client_answers() {
        let start = Instant::now();
        let mut replay = FlightReplay::default();
        assert_eq!(
            replay.inbound(&record(22, 0, 0, Some(0))),
            Inbound::NewFlight
        );
        let flight = BytesMut::from(&record(22, 0, 0, Some(1))[..]);
        replay.outbound(start, &flight);
        assert_eq!(replay.next_timer(), Some(start + INITIAL_RTO));
        assert!(replay.resend_on_timer(start + INITIAL_RTO / 2).is_empty());
        let mut at = start + INITIAL_RTO;
        let mut gaps = Vec::new();
        let mut last = start;
        while let Some(next) = replay.next_timer() {
            at = at.max(next);
            assert_eq!(replay.resend_on_timer(at), vec![flight.clone()]);
            gaps.push((at - last).as_millis());
            last = at;
        }
        assert_eq!(
            gaps,
            vec![2500, 5000, 8000, 8000, 8000, 8000],
            "then it is left to the client"
        );
        // A new client flight stops the timer.
        let mut replay = FlightReplay::default();
        replay.inbound(&record(22, 0, 0, Some(0)));
        replay.outbound(start, &flight);
        replay.inbound(&record(22, 0, 1, Some(2)));
        assert_eq!(replay.next_timer(), None);
    }

    #[test]
    fn a_client_hello_overtaken_by_a_later_one_is_stale() {
        let mut replay = FlightReplay::default();
        let mut first = record(22, 0, 0, Some(0));
        first[RECORD_HEADER] = CLIENT_HELLO;
        let mut with_cookie = record(22, 0, 1, Some(1));
        with_cookie[RECORD_HEADER] = CLIENT_HELLO;
        assert_eq!(replay.inbound(&first), Inbound::NewFlight);
        assert_eq!(replay.inbound(&with_cookie), Inbound::NewFlight);
        assert_eq!(replay.inbound(&first), Inbound::Stale);
        // The latest one repeated is a retransmission, as are older
        // messages of other types (parts of a multi-datagram flight).
        assert_eq!(replay.inbound(&with_cookie), Inbound::Retransmission);
        let mut certificate = record(22, 0, 2, Some(0));
        certificate[RECORD_HEADER] = 11;
        assert_eq!(replay.inbound(&certificate), Inbound::Retransmission);
    }

    #[test]
    fn as_the_dtls_client_we_leave_the_timer_to_rtc() {
        let now = Instant::now();
        let mut replay = FlightReplay::default();
        // Our first datagram is a ClientHello (handshake type 1).
        let mut hello = record(22, 0, 0, Some(0));
        hello[RECORD_HEADER] = CLIENT_HELLO;
        replay.outbound(now, &BytesMut::from(&hello[..]));
        assert_eq!(replay.next_timer(), None);
        assert!(replay.resend_on_timer(now + MAX_RTO).is_empty());
    }

    #[test]
    fn garbage_is_no_flight() {
        let mut replay = FlightReplay::default();
        assert_eq!(replay.inbound(&[22, 0xfe]), Inbound::Other);
        assert_eq!(replay.inbound(&[22; 40]), Inbound::Other);
        assert_eq!(replay.inbound(&[0, 1, 0, 0]), Inbound::Other);
        let mut truncated = record(22, 0, 0, Some(3));
        truncated.truncate(20);
        assert_eq!(replay.inbound(&truncated), Inbound::Other);
        assert!(replay.client_seq.is_none());
    }

    /// A publisher's handshake on simulated time over a link that loses
    /// the server's `lose`-th DTLS datagram (counting from 0): how long it
    /// took to connect, if it did within a minute.
    fn connect_losing(lose: Option<usize>) -> (Option<Duration>, usize) {
        use crate::bench_support::{ROOM, client, join_request, loopback, new_shard, video_track};
        use rtc::peer_connection::event::RTCPeerConnectionEvent;
        use rtc::peer_connection::sdp::RTCSessionDescription;
        use rtc::peer_connection::state::RTCPeerConnectionState;
        use rtc::sansio::Protocol;
        use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

        let start = Instant::now();
        let mut now = start;
        let (mut shard, server) = new_shard(Duration::from_millis(500));
        let addr = loopback(2, 10_000);
        let mut pc = client(addr, now);
        let sid = shard
            .join(now, join_request("publisher"))
            .unwrap()
            .participant
            .sid;
        pc.add_track(video_track(0x5eed)).unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(now, offer).unwrap();
        let sdp = pc.local_description().unwrap().sdp;
        let answer = shard.publish_offer(now, ROOM, &sid, sdp).unwrap();
        pc.set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        let mut server_dtls = 0;
        while now < start + Duration::from_secs(60) {
            let _ = pc.handle_timeout(now);
            while let Some(out) = pc.poll_write() {
                shard.handle_datagram(now, TransportProtocol::UDP, addr, &out.message);
            }
            while let Some(event) = pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) = event
                {
                    return (Some(now - start), server_dtls);
                }
            }
            shard.handle_timeout(now);
            let mut delivered = false;
            while let Some(t) = shard.poll_transmit() {
                if is_dtls(&t.payload) {
                    server_dtls += 1;
                    if lose == Some(server_dtls - 1) {
                        continue;
                    }
                }
                delivered = true;
                let _ = pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: addr,
                        peer_addr: server,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: t.payload,
                });
            }
            if !delivered {
                // Nothing in flight: on to the next timer of either side.
                let next = [pc.poll_timeout(), shard.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .filter(|at| *at > now)
                    .min()
                    .unwrap_or(now + Duration::from_millis(10));
                now = next.min(now + Duration::from_millis(100));
            }
        }
        (None, server_dtls)
    }

    #[test]
    fn the_handshake_completes_whichever_server_flight_is_lost() {
        let (clean, sent) = connect_losing(None);
        let clean = clean.expect("a lossless handshake connects");
        assert!(sent >= 2, "the server sent {sent} DTLS datagrams");
        for lose in 0..sent {
            let (took, _) = connect_losing(Some(lose));
            let took = took.unwrap_or_else(|| {
                panic!("no connection in 60 s after losing server DTLS datagram {lose} of {sent}")
            });
            // The client's retransmission timer (1 s, doubling) sets the pace.
            assert!(
                took <= clean + Duration::from_secs(10),
                "losing datagram {lose}: {took:?}"
            );
        }
    }
}
