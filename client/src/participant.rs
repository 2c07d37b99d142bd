//! A participant with real media: signaling plus a publisher and a
//! subscriber peer connection of the async `webrtc` crate, driven the way
//! docs/protocol.md describes (the server offers on the subscriber
//! transport, the client offers on the publisher one).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use callgate_sfu::{ParticipantEvent, TransportRole};
use callgate_signaling::protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage, Welcome};

use crate::ClientError;
use crate::peer::{Network, PeerObserver, PeerOptions, new_peer, passive_tcp_candidates};
use crate::signaling::{Receiver, Sender, Signaling};

/// Rewrites an SDP the server sent before it is applied (a NAT or proxy
/// between client and server changes the addresses the client must use).
pub type SdpRewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How a [`Participant`] joins.
#[derive(Clone)]
pub struct ParticipantOptions {
    pub peer: PeerOptions,
    pub server_sdp: Option<SdpRewrite>,
    /// Bound on each wait for the server (`joined`, `publish_answer`).
    pub wait: Duration,
}

impl Default for ParticipantOptions {
    fn default() -> ParticipantOptions {
        ParticipantOptions {
            peer: PeerOptions::default(),
            server_sdp: None,
            wait: Duration::from_secs(20),
        }
    }
}

/// What a participant hears from the server, besides what it answers itself
/// (publish answers; subscribe offers are answered and then passed on).
/// Most are messages, and a boxed one would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message(ServerMessage),
    /// The WebSocket closed: with the server's close code and reason, or
    /// 1006 when it broke without a close frame.
    Closed {
        code: u16,
        reason: String,
    },
}

/// A joined participant. Its transports connect as the server offers;
/// [`publish`](Participant::publish) adds tracks, [`next_event`](Participant::next_event)
/// reads the room.
pub struct Participant {
    welcome: Welcome,
    pub publisher: Arc<dyn PeerConnection>,
    pub subscriber: Arc<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<Event>,
    out: mpsc::UnboundedSender<ClientMessage>,
    publish_answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    /// The WebSocket's write half now (swapped by `resume`).
    sink: Arc<tokio::sync::Mutex<Option<Sender>>>,
    /// The task reading the WebSocket now.
    reader: Mutex<Option<JoinHandle<()>>>,
    writer: JoinHandle<()>,
    driver: Driver,
    wait: Duration,
}

/// What reading the server's messages needs, shared by every WebSocket a
/// participant has had.
#[derive(Clone)]
struct Driver {
    publisher: Arc<dyn PeerConnection>,
    subscriber: Arc<dyn PeerConnection>,
    out: mpsc::UnboundedSender<ClientMessage>,
    events: mpsc::UnboundedSender<Event>,
    answers: mpsc::UnboundedSender<String>,
    network: Network,
    /// Server TCP candidates already dialed, by transport and address.
    tcp_dialed: Arc<Mutex<HashSet<String>>>,
    server_sdp: Option<SdpRewrite>,
}

impl Participant {
    /// Joins the room `token` names through the server at `url`
    /// (`ws://host:port/rtc`), with both peer connections ready; what they
    /// receive goes to `observer`.
    pub async fn join(
        url: &str,
        token: &str,
        options: ParticipantOptions,
        observer: Arc<dyn PeerObserver>,
    ) -> Result<Participant, ClientError> {
        let (signaling, welcome) = tokio::time::timeout(options.wait, Signaling::join(url, token))
            .await
            .map_err(|_| ClientError::Timeout("joined"))??;
        let (out, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let publisher = new_peer(
            TransportRole::Publisher,
            &options.peer,
            out.clone(),
            observer.clone(),
        )
        .await?;
        let subscriber = new_peer(
            TransportRole::Subscriber,
            &options.peer,
            out.clone(),
            observer,
        )
        .await?;
        let (sender, receiver) = signaling.split();
        let sink = Arc::new(tokio::sync::Mutex::new(Some(sender)));
        let span = info_span!("participant", sid = %welcome.participant.sid);
        let writer_sink = sink.clone();
        let writer = tokio::spawn(
            async move {
                while let Some(message) = out_rx.recv().await {
                    let mut sink = writer_sink.lock().await;
                    if let Some(s) = sink.as_mut()
                        && let Err(e) = s.send(&message).await
                    {
                        debug!(error = %e, "signaling write failed");
                        *sink = None;
                    }
                }
            }
            .instrument(span),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let driver = Driver {
            publisher: publisher.clone(),
            subscriber: subscriber.clone(),
            out: out.clone(),
            events: events_tx,
            answers: answers_tx,
            network: options.peer.network,
            tcp_dialed: Arc::default(),
            server_sdp: options.server_sdp,
        };
        let reader = driver.spawn_reader(receiver);
        Ok(Participant {
            welcome,
            publisher,
            subscriber,
            events,
            out,
            publish_answers: tokio::sync::Mutex::new(answers),
            sink,
            reader: Mutex::new(Some(reader)),
            writer,
            driver,
            wait: options.wait,
        })
    }

    /// What `joined` said: the room, this participant, the others, and the
    /// resume secret.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn sid(&self) -> &str {
        &self.welcome.participant.sid
    }

    /// Queues `message` for the server; an error once this participant's
    /// writer has stopped.
    pub fn send(&self, message: ClientMessage) -> Result<(), ClientError> {
        self.out
            .send(message)
            .map_err(|_| ClientError::Protocol("the signaling writer has stopped".into()))
    }

    /// The next server message this participant did not consume itself;
    /// `None` once nothing more can come.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// A server message already received, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Adds `tracks` to the publisher transport and negotiates them;
    /// returns the server's answer (as applied).
    pub async fn publish(&self, tracks: &[Arc<dyn TrackLocal>]) -> Result<String, ClientError> {
        for track in tracks {
            self.publisher
                .add_track(track.clone())
                .await
                .map_err(ClientError::webrtc)?;
        }
        self.negotiate_publisher().await
    }

    /// Offers the publisher transport as it is, applies the server's answer
    /// and returns it.
    pub async fn negotiate_publisher(&self) -> Result<String, ClientError> {
        let offer = self
            .publisher
            .create_offer(None)
            .await
            .map_err(ClientError::webrtc)?;
        self.complete_publisher_offer(offer).await
    }

    /// Restarts ICE on the publisher transport: an offer with new ICE
    /// credentials, and the server's answer applied.
    pub async fn restart_publisher_ice(&self) -> Result<String, ClientError> {
        let offer = self
            .publisher
            .create_offer(Some(rtc::peer_connection::configuration::RTCOfferOptions {
                ice_restart: true,
            }))
            .await
            .map_err(ClientError::webrtc)?;
        self.complete_publisher_offer(offer).await
    }

    async fn complete_publisher_offer(
        &self,
        offer: RTCSessionDescription,
    ) -> Result<String, ClientError> {
        self.publisher
            .set_local_description(offer.clone())
            .await
            .map_err(ClientError::webrtc)?;
        self.send(ClientMessage::PublishOffer { sdp: offer.sdp })?;
        let answer = tokio::time::timeout(self.wait, async {
            self.publish_answers.lock().await.recv().await
        })
        .await
        .map_err(|_| ClientError::Timeout("publish_answer"))?
        .ok_or_else(|| ClientError::Protocol("signaling ended before publish_answer".into()))?;
        let answer = RTCSessionDescription::answer(answer).map_err(ClientError::webrtc)?;
        let sdp = answer.sdp.clone();
        self.publisher
            .set_remote_description(answer)
            .await
            .map_err(ClientError::webrtc)?;
        self.driver
            .dial_tcp_candidates(TransportRole::Publisher, &sdp)
            .await?;
        Ok(sdp)
    }

    /// Breaks the WebSocket with no close frame, as a lost network does;
    /// the session waits on the server for a `resume`.
    pub async fn drop_signaling(&self) {
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader.abort();
        }
        *self.sink.lock().await = None;
    }

    /// Opens a new WebSocket to `url` and resumes the session on it with the
    /// secret from `joined`. Returns the server's first answer: `resumed`
    /// (and the participant is driven over the new socket from then on), or
    /// the `error` of a refusal.
    pub async fn resume(&self, url: &str) -> Result<ServerMessage, ClientError> {
        self.drop_signaling().await;
        let mut signaling = Signaling::connect(url).await?;
        signaling
            .send(&ClientMessage::Resume {
                participant_sid: self.welcome.participant.sid.clone(),
                secret: self.welcome.resume_secret.clone(),
                protocol: Some(PROTOCOL_VERSION),
            })
            .await?;
        let answer = tokio::time::timeout(self.wait, signaling.recv())
            .await
            .map_err(|_| ClientError::Timeout("an answer to resume"))??
            .ok_or_else(|| ClientError::Protocol("closed before resumed".into()))?;
        if matches!(answer, ServerMessage::Resumed(_)) {
            let (sender, receiver) = signaling.split();
            *self.sink.lock().await = Some(sender);
            *self.reader.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(self.driver.spawn_reader(receiver));
        }
        Ok(answer)
    }

    /// Closes both peer connections (the signaling stays, as it is on the
    /// server: send `leave` to end the session).
    pub async fn close(&self) {
        let _ = self.publisher.close().await;
        let _ = self.subscriber.close().await;
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.writer.abort();
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader.abort();
        }
    }
}

impl Driver {
    /// The server's SDP as the client must apply it.
    fn sdp_in(&self, sdp: &str) -> String {
        match &self.server_sdp {
            Some(rewrite) => rewrite(sdp),
            None => sdp.to_owned(),
        }
    }

    fn spawn_reader(&self, mut receiver: Receiver) -> JoinHandle<()> {
        let driver = self.clone();
        tokio::spawn(async move {
            let closed = loop {
                match receiver.recv().await {
                    Ok(Some(message)) => {
                        if let Err(e) = driver.handle(message).await {
                            debug!(error = %e, "server message not applied");
                        }
                    }
                    Ok(None) => {
                        break Event::Closed {
                            code: 1006,
                            reason: String::new(),
                        };
                    }
                    Err(ClientError::Closed { code, reason }) => {
                        break Event::Closed { code, reason };
                    }
                    Err(e) => {
                        debug!(error = %e, "signaling read failed");
                        break Event::Closed {
                            code: 1006,
                            reason: String::new(),
                        };
                    }
                }
            };
            let _ = driver.events.send(closed);
        })
    }

    async fn handle(&self, message: ServerMessage) -> Result<(), ClientError> {
        match message {
            ServerMessage::Event(ParticipantEvent::SubscribeOffer { sdp: offered }) => {
                let sdp = self.sdp_in(&offered);
                let offer =
                    RTCSessionDescription::offer(sdp.clone()).map_err(ClientError::webrtc)?;
                self.subscriber
                    .set_remote_description(offer)
                    .await
                    .map_err(ClientError::webrtc)?;
                self.dial_tcp_candidates(TransportRole::Subscriber, &sdp)
                    .await?;
                let answer = self
                    .subscriber
                    .create_answer(None)
                    .await
                    .map_err(ClientError::webrtc)?;
                self.subscriber
                    .set_local_description(answer.clone())
                    .await
                    .map_err(ClientError::webrtc)?;
                let _ = self
                    .out
                    .send(ClientMessage::SubscribeAnswer { sdp: answer.sdp });
                let _ = self.events.send(Event::Message(ServerMessage::Event(
                    ParticipantEvent::SubscribeOffer { sdp: offered },
                )));
            }
            ServerMessage::PublishAnswer { sdp } => {
                let _ = self.answers.send(self.sdp_in(&sdp));
            }
            other => {
                let _ = self.events.send(Event::Message(other));
            }
        }
        Ok(())
    }

    /// On an ICE-TCP-only client, trickles each of the server's passive TCP
    /// candidates in `sdp` to the transport, once per transport and address
    /// (every renegotiation repeats them, and every `add_ice_candidate`
    /// opens a new connection).
    async fn dial_tcp_candidates(&self, role: TransportRole, sdp: &str) -> Result<(), ClientError> {
        if self.network != Network::TcpOnly {
            return Ok(());
        }
        let pc = match role {
            TransportRole::Publisher => &self.publisher,
            TransportRole::Subscriber => &self.subscriber,
        };
        for (address, candidate) in passive_tcp_candidates(sdp) {
            let key = format!("{} {address}", role.as_str());
            if !self
                .tcp_dialed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key)
            {
                continue;
            }
            pc.add_ice_candidate(webrtc::peer_connection::RTCIceCandidateInit {
                candidate,
                ..Default::default()
            })
            .await
            .map_err(ClientError::webrtc)?;
        }
        Ok(())
    }
}
