//! One participant's WebSocket: join, then relay between the client and its
//! session in the media plane.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use callgate_sfu::{
    JoinRequest, LeaveReason, ParticipantEvent, ParticipantHandle, Resumed, SfuError,
    SubscriptionSettings, TrackKind,
};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span};

use crate::AppState;
use crate::calls::{CallObserver, CallParticipant, MediaGate, MediaUsage};
use crate::cluster::Route;
use crate::data::{DataLimiter, MAX_KEPT_WHILE_RECONNECTING};
use crate::http::ConnectionPass;
use crate::protocol::{
    ClientMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, ParseError, ServerMessage, Welcome,
};
use crate::token::{TokenError, unix_now, unix_now_ms};

/// Close codes (docs/protocol.md, "Close codes").
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TOKEN_MALFORMED: u16 = 4001;
    pub const TOKEN_BAD_SIGNATURE: u16 = 4002;
    pub const TOKEN_EXPIRED: u16 = 4003;
    pub const TOKEN_NOT_FOR_JOINING: u16 = 4004;
    pub const ROOM_FULL: u16 = 4005;
    pub const PROTOCOL_UNSUPPORTED: u16 = 4006;
    pub const BILLING_INVALID: u16 = 4007;
    pub const RESUME_FAILED: u16 = 4008;
    pub const REPLACED: u16 = 4009;
    /// The token names a role the server does not define.
    pub const UNKNOWN_ROLE: u16 = 4010;
    /// In a cluster: the node the session lived on is gone (the relaying
    /// node lost it without a close); join again.
    pub const NODE_LOST: u16 = 4011;
    /// A client closing with this code means to resume soon: the session
    /// is kept (any other close frame is a leave).
    pub const RESUMING: u16 = 4000;
    /// RFC 6455's "Try Again Later": shed before `join` to make room for
    /// newer connections (`server_busy`), or a join refused because the
    /// room's media worker is overloaded (`server_overloaded`).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

pub(crate) fn token_close_code(e: TokenError) -> u16 {
    match e {
        TokenError::Malformed => close::TOKEN_MALFORMED,
        TokenError::BadSignature => close::TOKEN_BAD_SIGNATURE,
        TokenError::Expired => close::TOKEN_EXPIRED,
    }
}

pub(crate) async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(message.to_json())))
        .await
        .is_ok()
}

pub(crate) async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    debug!(code, reason, "closing signaling connection");
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

/// How long a connection closed for an oversized frame stays open after
/// the close frame: the rest of that frame is still unread, and closing
/// the TCP connection at once would reset it (RST), which can destroy the
/// close frame in flight before the client reads it.
const TOO_BIG_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes with 1009 `message_too_big`, at any frame size.
async fn close_too_big(mut socket: WebSocket) {
    debug!("closing signaling connection: message_too_big");
    let sent = socket
        .send(Message::Close(Some(CloseFrame {
            code: close::TOO_BIG,
            reason: Utf8Bytes::from_static("message_too_big"),
        })))
        .await;
    if sent.is_ok() {
        // The codec has stopped reading (its stream ends after the error),
        // so there is nothing to wait on but time.
        tokio::time::sleep(TOO_BIG_LINGER).await;
    }
}

/// Whether a read error is the codec refusing a frame over its size limit
/// (it reads only the frame's header before refusing).
pub(crate) fn is_too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// What the next client frame turned out to be.
enum Incoming {
    Text(String),
    TooBig,
    /// A close frame: the client ends its session, unless it closed with
    /// `close::RESUMING`.
    Closed(Option<u16>),
    /// The connection broke with no close frame.
    Gone,
}

async fn next_text(socket: &mut WebSocket) -> Incoming {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) if t.len() > MAX_FRAME_BYTES => return Incoming::TooBig,
            Some(Ok(Message::Binary(b))) if b.len() > MAX_FRAME_BYTES => return Incoming::TooBig,
            Some(Ok(Message::Text(t))) => return Incoming::Text(t.to_string()),
            Some(Ok(Message::Binary(b))) => {
                return Incoming::Text(String::from_utf8_lossy(&b).into_owned());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                return if is_too_big(e) {
                    Incoming::TooBig
                } else {
                    Incoming::Gone
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Closed(frame.map(|f| f.code));
            }
            None => return Incoming::Gone,
        }
    }
}

/// The next frame of `socket`, or never when there is none.
async fn next_text_of(socket: Option<&mut WebSocket>) -> Incoming {
    match socket {
        Some(s) => next_text(s).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the connection's unauthenticated pass is shed; never
/// without one.
async fn shed(pass: Option<&ConnectionPass>) {
    match pass {
        Some(p) => {
            p.shed().await;
        }
        None => std::future::pending().await,
    }
}

pub(crate) async fn serve(
    mut socket: WebSocket,
    state: Arc<AppState>,
    pass: Option<ConnectionPass>,
    from_node: bool,
) {
    let _guard = scopeguard(&state);

    let first = tokio::select! {
        first = tokio::time::timeout(state.join_timeout, next_text(&mut socket)) => first,
        () = shed(pass.as_ref()) => {
            return close(socket, close::TRY_AGAIN_LATER, "server_busy").await;
        }
    };
    let text = match first {
        Err(_) => return close(socket, close::POLICY, "join_timeout").await,
        Ok(Incoming::TooBig) => return close_too_big(socket).await,
        Ok(Incoming::Gone | Incoming::Closed(_)) => return,
        Ok(Incoming::Text(t)) => t,
    };
    let (token, protocol) = match ClientMessage::parse(&text) {
        Ok(ClientMessage::Join { token, protocol }) => (token, protocol),
        Ok(ClientMessage::Connect { token, protocol }) => {
            return crate::presence_connection::serve(socket, state.clone(), pass, token, protocol)
                .await;
        }
        Ok(ClientMessage::Resume {
            participant_sid,
            secret,
            protocol,
        }) => {
            if protocol.is_some_and(|p| p != PROTOCOL_VERSION) {
                return close(socket, close::PROTOCOL_UNSUPPORTED, "protocol_unsupported").await;
            }
            return resume(
                socket,
                &state,
                pass.as_ref(),
                &participant_sid,
                &secret,
                (!from_node).then_some(text.as_str()),
            )
            .await;
        }
        Ok(_) => {
            send(
                &mut socket,
                &ServerMessage::error("not_joined", "send join first"),
            )
            .await;
            return close(socket, close::POLICY, "not_joined").await;
        }
        Err(ParseError::Malformed(m)) | Err(ParseError::Unknown(m)) => {
            send(&mut socket, &ServerMessage::error("malformed_message", m)).await;
            return close(socket, close::POLICY, "not_joined").await;
        }
    };
    if protocol.is_some_and(|p| p != PROTOCOL_VERSION) {
        return close(socket, close::PROTOCOL_UNSUPPORTED, "protocol_unsupported").await;
    }
    let claims = match state.keys.verify(&token, unix_now()) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.rejected_tokens.inc();
            return close(socket, token_close_code(e), e.code()).await;
        }
    };
    let room = match (&claims.grants.room, claims.grants.room_join) {
        (Some(room), true) if !room.is_empty() && !claims.sub.is_empty() => room.clone(),
        _ => {
            return close(
                socket,
                close::TOKEN_NOT_FOR_JOINING,
                "token_not_for_joining",
            )
            .await;
        }
    };
    let Some(grants) = claims.grants.effective(&state.roles) else {
        return close(socket, close::UNKNOWN_ROLE, "unknown_role").await;
    };
    if let Some(cluster) = state.cluster.as_ref().filter(|_| !from_node) {
        // Authenticated now: no longer counted among unauthenticated
        // connections, whichever node serves it.
        if let Some(p) = &pass {
            p.release();
        }
        match cluster.place(&room).await {
            Ok(Route::Here) => {}
            Ok(Route::There { node_id, url }) => {
                let span = info_span!("relay", room = %room, node = %node_id);
                return relay_to(&state, socket, &url, text).instrument(span).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, room = %room, "no placement for the room");
                return close(socket, close::TRY_AGAIN_LATER, "cluster_unavailable").await;
            }
        }
    }
    let gate = match state
        .observer
        .check(&room, &claims.sub, claims.billing.as_ref())
    {
        Ok(gate) => gate,
        Err(refusal) => {
            debug!(message = %refusal.message, "billing terms refused");
            send(
                &mut socket,
                &ServerMessage::error("billing_invalid", refusal.message),
            )
            .await;
            return close(socket, close::BILLING_INVALID, "billing_invalid").await;
        }
    };
    let request = JoinRequest {
        room: room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        can_publish: grants.can_publish,
        can_subscribe: grants.can_subscribe,
        can_publish_data: grants.can_publish_data,
        media_held: gate == MediaGate::Held,
    };
    let (handle, joined) = match state.sfu.join(request).await {
        Ok(j) => j,
        Err(SfuError::RoomFull(_)) => return close(socket, close::ROOM_FULL, "room_full").await,
        Err(SfuError::WorkerOverloaded) => {
            return close(socket, close::TRY_AGAIN_LATER, "server_overloaded").await;
        }
        Err(_) => return close(socket, close::INTERNAL, "internal").await,
    };
    // A participant now: no longer counted among unauthenticated connections.
    if let Some(p) = &pass {
        p.release();
    }
    let Some((secret, resumes)) = state.resumes.register(handle.sid()) else {
        return close(socket, close::INTERNAL, "internal").await;
    };
    let span = info_span!("participant", room = %room, sid = %handle.sid(), identity = %claims.sub);
    async {
        info!("joined");
        let welcome = ServerMessage::Joined(welcome(
            &state,
            Resumed {
                room: joined.room,
                participant: joined.participant,
                others: joined.others,
            },
            &claims.sub,
            &secret,
        ));
        let call = CallParticipant {
            room: room.clone(),
            identity: claims.sub.clone(),
            sid: handle.sid().to_owned(),
            billing: claims.billing.clone(),
        };
        let mut watch = Watch {
            observer: state.observer.as_ref(),
            call: &call,
            usage: MediaUsage {
                connected_at_ms: None,
                video: welcome_has_video(&welcome),
                lost_at_ms: None,
                ended_by: None,
            },
            left: false,
            lost_since_ms: None,
        };
        let notices = state
            .participants
            .register(&call.sid, &call.room, &call.identity);
        let (device, device_notices) = state.devices.register(&call.identity);
        if let Some(cluster) = &state.cluster {
            cluster.participant_joined(&call.sid);
        }
        state.observer.joined(&call);
        if let Some(calls) = &state.calls {
            calls.device_connected(&call.identity, device);
        }
        let mut link = Link {
            socket: Some(socket),
            resumes,
            secret,
        };
        let greeted = match link.socket.as_mut() {
            Some(socket) => send(socket, &welcome).await,
            None => false,
        };
        if greeted {
            let inbox = Inbox {
                events: joined.events,
                notices,
                device,
                device_notices,
            };
            let room_admin = grants.room_admin;
            let data = DataSender {
                allowed: grants.can_publish_data,
                limiter: DataLimiter::new(tokio::time::Instant::now()),
            };
            session(&state, link, handle, inbox, &mut watch, data, room_admin).await;
        } else {
            handle.leave(LeaveReason::Left);
        }
        state.resumes.unregister(&call.sid);
        if let Some(cluster) = &state.cluster {
            cluster.participant_left(&call.sid);
        }
        state.participants.unregister(&call.sid);
        watch.leave();
        state.devices.unregister(device);
        if let Some(calls) = &state.calls {
            calls.device_disconnected(&call.identity, device);
        }
    }
    .instrument(span)
    .await
}

/// Counts the connection as open until it ends, however it ends.
fn scopeguard(state: &Arc<AppState>) -> impl Drop + '_ {
    struct Guard<'a>(&'a AppState, #[allow(dead_code)] crate::drain::Open<'a>);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.metrics.connections.dec();
        }
    }
    state.metrics.connections.inc();
    Guard(state, state.connections.open())
}

/// Whether `joined` already shows video in the room.
fn welcome_has_video(welcome: &ServerMessage) -> bool {
    match welcome {
        ServerMessage::Joined(Welcome { participants, .. }) => participants
            .iter()
            .flat_map(|p| &p.tracks)
            .any(|t| t.kind == TrackKind::Video),
        _ => false,
    }
}

/// The call watcher's view of this connection.
struct Watch<'a> {
    observer: &'a dyn CallObserver,
    call: &'a CallParticipant,
    usage: MediaUsage,
    left: bool,
    /// When its connection was lost (unix ms), while it is reconnecting.
    lost_since_ms: Option<i64>,
}

impl Watch<'_> {
    /// Tells the watcher the connection is lost (once per loss), dated
    /// `since_ms`.
    fn reconnecting(&mut self, since_ms: i64) {
        if self.lost_since_ms.is_none() {
            self.lost_since_ms = Some(since_ms);
            self.observer.reconnecting(self.call, since_ms);
        }
    }

    fn resumed(&mut self) {
        if self.lost_since_ms.take().is_some() {
            self.observer.resumed(self.call);
        }
    }

    /// Tells the watcher the session ended, once: as soon as it has, not
    /// after the close handshake, so a watcher sees the leaves of a call in
    /// the order they happened (metering's end reason depends on it).
    fn leave(&mut self) {
        if !self.left {
            self.left = true;
            self.observer.left(self.call, self.usage);
        }
    }
}

/// The participant's signaling link: the WebSocket it has now (none while
/// it is reconnecting) and where a resumed one arrives.
struct Link {
    socket: Option<WebSocket>,
    resumes: mpsc::UnboundedReceiver<WebSocket>,
    secret: String,
}

impl Link {
    /// Sends on the socket if there is one; a failed send loses it.
    async fn send(&mut self, message: &ServerMessage) -> bool {
        match self.socket.as_mut() {
            Some(socket) => {
                let sent = send(socket, message).await;
                if !sent {
                    self.socket = None;
                }
                sent
            }
            None => false,
        }
    }
}

/// `joined` / `resumed` for `identity`: the room as the media plane sees it now.
fn welcome(state: &AppState, now: Resumed, identity: &str, secret: &str) -> Welcome {
    Welcome {
        protocol: PROTOCOL_VERSION,
        room: now.room,
        participant: now.participant,
        participants: now.others,
        ice_servers: state
            .ice_servers
            .as_ref()
            .map(|p| p.ice_servers(identity))
            .unwrap_or_default(),
        resume_secret: secret.to_owned(),
        reconnect_grace_s: state.reconnect_grace.as_secs(),
    }
}

/// A new WebSocket asking to take session `sid` back: handed to that
/// session's task, or refused with 4008.
/// Relays a client's signaling to the node its room or session lives on;
/// closes 1013 `room_node_unavailable` when that node cannot be reached.
async fn relay_to(state: &AppState, socket: WebSocket, node_url: &str, first: String) {
    let Some(cluster) = &state.cluster else {
        return close(socket, close::INTERNAL, "internal").await;
    };
    state.metrics.relayed.inc();
    if let Err((socket, e)) = crate::cluster::relay(socket, node_url, &cluster.proof(), first).await
    {
        tracing::warn!(error = %e, "the room's node cannot be reached");
        state.metrics.relay_failures.inc();
        close(socket, close::TRY_AGAIN_LATER, "room_node_unavailable").await;
    }
}

/// Hands the WebSocket to session `sid` if it lives here; in a cluster, a
/// resume that reached another node than its session's (`relayable`: the
/// resume message, unless the request came from a node) is relayed there.
async fn resume(
    mut socket: WebSocket,
    state: &AppState,
    pass: Option<&ConnectionPass>,
    sid: &str,
    secret: &str,
    relayable: Option<&str>,
) {
    if let Some(p) = pass {
        p.release();
    }
    match state.resumes.hand_over(sid, secret, socket) {
        Ok(()) => {}
        Err(back) => {
            socket = *back;
            if let (Some(cluster), Some(first)) = (&state.cluster, relayable)
                && let Ok(Some(Route::There { url, node_id })) =
                    cluster.locate_participant(sid).await
            {
                let span = info_span!("relay", sid = %sid, node = %node_id);
                return relay_to(state, socket, &url, first.to_owned())
                    .instrument(span)
                    .await;
            }
            state.metrics.resume_failures.inc();
            send(
                &mut socket,
                &ServerMessage::error(
                    "resume_failed",
                    "no session to resume: it ended, or the secret is wrong",
                ),
            )
            .await;
            close(socket, close::RESUME_FAILED, "resume_failed").await;
        }
    }
}

/// What reaches a participant's session besides its client's frames.
struct Inbox {
    /// From the media plane.
    events: mpsc::UnboundedReceiver<ParticipantEvent>,
    /// From the call watcher (metering), by participant sid.
    notices: mpsc::UnboundedReceiver<ServerMessage>,
    /// This connection as one of its identity's devices, and what the
    /// call desk sends it (rings, call states, presence).
    device: crate::devices::DeviceId,
    device_notices: mpsc::UnboundedReceiver<ServerMessage>,
}

/// Sends a notice on the link; a reliable data message is kept instead
/// while the link is down (up to `MAX_KEPT_WHILE_RECONNECTING`, the oldest
/// dropped first), anything else is dropped then.
async fn deliver_notice(
    link: &mut Link,
    kept: &mut VecDeque<ServerMessage>,
    notice: ServerMessage,
) {
    match &notice {
        ServerMessage::Data { reliable: true, .. } if link.socket.is_none() => {
            if kept.len() == MAX_KEPT_WHILE_RECONNECTING {
                kept.pop_front();
            }
            kept.push_back(notice);
        }
        _ => {
            link.send(&notice).await;
        }
    }
}

/// A moderation message (or `set_attributes`), handled: `Some(reply)`
/// with the error to send, if any; `None` for any other message.
async fn moderate(
    state: &AppState,
    room_admin: bool,
    me: &CallParticipant,
    message: &ClientMessage,
) -> Option<Option<ServerMessage>> {
    let denied = || {
        Some(Some(ServerMessage::error(
            "permission_denied",
            "only a room_admin changes other participants",
        )))
    };
    let result = match message {
        ClientMessage::SetAttributes { attributes } => {
            let update = callgate_sfu::ParticipantUpdate {
                attributes: Some(attributes.clone()),
                ..Default::default()
            };
            state
                .sfu
                .update_participant(&me.room, &me.identity, update)
                .await
                .map(|_| ())
        }
        ClientMessage::UpdateParticipant { .. }
        | ClientMessage::MuteParticipant { .. }
        | ClientMessage::RemoveParticipant { .. }
            if !room_admin =>
        {
            return denied();
        }
        ClientMessage::UpdateParticipant { identity, update } => {
            let update = match update.clone().checked() {
                Ok(u) => u,
                Err(m) => return Some(Some(ServerMessage::error("malformed_message", m))),
            };
            state
                .sfu
                .update_participant(&me.room, identity, update)
                .await
                .map(|_| ())
        }
        ClientMessage::MuteParticipant { identity, mute } => {
            let which = match mute.selector() {
                Ok(w) => w,
                Err(m) => return Some(Some(ServerMessage::error("malformed_message", m))),
            };
            state
                .sfu
                .moderate_mute(&me.room, identity, which, mute.muted)
                .await
                .map(|_| ())
        }
        ClientMessage::RemoveParticipant { identity } => {
            state
                .sfu
                .remove_participant(&me.room, identity, LeaveReason::Removed)
                .await
        }
        _ => return None,
    };
    Some(result.err().map(sfu_error))
}

/// What a participant may send to its room as `data`.
struct DataSender {
    allowed: bool,
    limiter: DataLimiter,
}

impl DataSender {
    /// Relays a `data` message to the room, or says why not.
    fn relay(
        &mut self,
        state: &AppState,
        from: &CallParticipant,
        message: ClientMessage,
    ) -> Option<ServerMessage> {
        let ClientMessage::Data {
            topic,
            payload,
            reliable,
            destinations,
        } = message
        else {
            return None;
        };
        if !self.allowed {
            return Some(ServerMessage::error(
                "permission_denied",
                "the token does not grant can_publish_data",
            ));
        }
        if !self
            .limiter
            .admit(tokio::time::Instant::now(), payload.len())
        {
            return Some(ServerMessage::error(
                "rate_limited",
                "data messages above the sender's rate (docs/protocol.md, \"Data messages\")",
            ));
        }
        let relayed = ServerMessage::Data {
            from: from.identity.clone(),
            from_sid: from.sid.clone(),
            topic,
            payload,
            reliable,
        };
        state
            .participants
            .send_to_room(&from.room, &from.sid, &destinations, &relayed);
        None
    }
}

async fn session(
    state: &AppState,
    mut link: Link,
    mut handle: ParticipantHandle,
    inbox: Inbox,
    watch: &mut Watch<'_>,
    mut data: DataSender,
    room_admin: bool,
) {
    // Reliable data messages that arrived while the link was down, sent
    // after `resumed`.
    let mut kept: VecDeque<ServerMessage> = VecDeque::new();
    let Inbox {
        mut events,
        mut notices,
        device,
        mut device_notices,
    } = inbox;
    let mut detached = false;
    loop {
        // A link that broke on a send is detached like one that closed.
        if link.socket.is_none() && !detached {
            info!("signaling lost; keeping the session for the grace");
            detached = true;
            handle.detach();
            watch.reconnecting(unix_now_ms());
        }
        tokio::select! {
            Some(socket) = link.resumes.recv() => {
                // What was queued before the new socket came arrived while
                // the link was down.
                while let Ok(notice) = notices.try_recv() {
                    deliver_notice(&mut link, &mut kept, notice).await;
                }
                if let Some(old) = link.socket.replace(socket) {
                    tokio::spawn(close(old, close::REPLACED, "replaced"));
                }
                detached = false;
                match handle.attach().await {
                    Ok(now) => {
                        info!("resumed");
                        state.metrics.resumes.inc();
                        let resumed = ServerMessage::Resumed(welcome(
                            state,
                            now,
                            &watch.call.identity,
                            &link.secret,
                        ));
                        link.send(&resumed).await;
                        while let Some(message) = kept.pop_front() {
                            link.send(&message).await;
                        }
                    }
                    Err(_) => {
                        // The media plane ended it meanwhile; its `Ended` is on the way.
                        link.send(&ServerMessage::error("resume_failed", "the session has ended")).await;
                    }
                }
            }
            Some(notice) = notices.recv() => {
                deliver_notice(&mut link, &mut kept, notice).await;
            }
            Some(notice) = device_notices.recv() => {
                link.send(&notice).await;
            }
            incoming = next_text_of(link.socket.as_mut()) => match incoming {
                Incoming::Gone | Incoming::Closed(Some(close::RESUMING)) => {
                    link.socket = None;
                }
                Incoming::Closed(_) => {
                    info!("connection closed");
                    handle.leave(LeaveReason::Left);
                    watch.leave();
                    return;
                }
                Incoming::TooBig => {
                    handle.leave(LeaveReason::Left);
                    watch.leave();
                    if let Some(socket) = link.socket.take() {
                        close_too_big(socket).await;
                    }
                    return;
                }
                Incoming::Text(text) => match ClientMessage::parse(&text) {
                    Ok(ClientMessage::Leave) => {
                        handle.leave(LeaveReason::Left);
                        watch.leave();
                        link.send(&ServerMessage::Left { reason: LeaveReason::Left }).await;
                        if let Some(socket) = link.socket.take() {
                            close(socket, close::NORMAL, "left").await;
                        }
                        return;
                    }
                    Ok(message) => {
                        if let ClientMessage::Data { .. } = message {
                            if let Some(refused) = data.relay(state, watch.call, message) {
                                link.send(&refused).await;
                            }
                        } else if let Some(reply) = moderate(state, room_admin, watch.call, &message).await {
                            if let Some(reply) = reply {
                                link.send(&reply).await;
                            }
                        } else if let Some(request) = crate::presence_connection::call_request(&message) {
                            crate::presence_connection::forward(state, &watch.call.identity, device, request);
                        } else if let Some(reply) = handle_message(&handle, message).await {
                            link.send(&reply).await;
                        }
                    }
                    Err(ParseError::Malformed(m)) => {
                        link.send(&ServerMessage::error("malformed_message", m)).await;
                    }
                    Err(ParseError::Unknown(t)) => {
                        let reply = ServerMessage::error("unknown_message", format!("unknown message type `{t}`"));
                        link.send(&reply).await;
                    }
                },
            },
            event = events.recv() => match event {
                Some(ParticipantEvent::MediaConnected) => {
                    watch.usage.connected_at_ms = Some(unix_now_ms());
                    watch.observer.media_connected(watch.call);
                }
                Some(ParticipantEvent::Reconnecting { reason, silent_for }) => {
                    let since = unix_now_ms() - silent_for.as_millis() as i64;
                    watch.reconnecting(since);
                    link.send(&ServerMessage::from(ParticipantEvent::Reconnecting { reason, silent_for })).await;
                }
                Some(ParticipantEvent::Resumed) => watch.resumed(),
                Some(ParticipantEvent::Ended { reason }) => {
                    handle.mark_ended();
                    watch.usage.ended_by = Some(reason);
                    if reason == LeaveReason::ConnectionLost {
                        watch.usage.lost_at_ms = watch.lost_since_ms;
                    }
                    watch.leave();
                    // What the watcher said before ending the session (why
                    // billing refused the call) goes out before `left`.
                    while let Ok(notice) = notices.try_recv() {
                        link.send(&notice).await;
                    }
                    link.send(&ServerMessage::Left { reason }).await;
                    if let Some(socket) = link.socket.take() {
                        close(socket, close::NORMAL, reason.as_str()).await;
                    }
                    return;
                }
                Some(event) => {
                    if let ParticipantEvent::TrackPublished { track, .. } = &event
                        && track.kind == TrackKind::Video
                    {
                        watch.usage.video = true;
                    }
                    // A moderator changed its grants: data follow at once.
                    if let ParticipantEvent::ParticipantUpdated { participant } = &event
                        && participant.sid == watch.call.sid
                    {
                        data.allowed = participant.can_publish_data;
                    }
                    link.send(&ServerMessage::from(event)).await;
                }
                None => {
                    handle.mark_ended();
                    if let Some(socket) = link.socket.take() {
                        close(socket, close::INTERNAL, "internal").await;
                    }
                    return;
                }
            },
        }
    }
}

async fn handle_message(
    handle: &ParticipantHandle,
    message: ClientMessage,
) -> Option<ServerMessage> {
    let result = match message {
        ClientMessage::Join { .. }
        | ClientMessage::Resume { .. }
        | ClientMessage::Connect { .. } => {
            return Some(ServerMessage::error("already_joined", "already joined"));
        }
        // Handled by the session loop (call inputs go to the call desk).
        ClientMessage::CallAccept { .. }
        | ClientMessage::CallReject { .. }
        | ClientMessage::CallCancel { .. }
        | ClientMessage::PresenceWatch { .. }
        | ClientMessage::Data { .. }
        | ClientMessage::UpdateParticipant { .. }
        | ClientMessage::MuteParticipant { .. }
        | ClientMessage::RemoveParticipant { .. }
        | ClientMessage::SetAttributes { .. } => Ok(None),
        ClientMessage::IceRestart => handle.ice_restart().await.map(|()| None),
        ClientMessage::PublishOffer { sdp } => handle
            .publish_offer(sdp)
            .await
            .map(|sdp| Some(ServerMessage::PublishAnswer { sdp })),
        ClientMessage::SubscribeAnswer { sdp } => handle.subscribe_answer(sdp).await.map(|()| None),
        ClientMessage::Candidate { target, candidate } => {
            handle.add_candidate(target, candidate).await.map(|()| None)
        }
        ClientMessage::Mute { track_sid, muted } => {
            handle.mute(track_sid, muted).await.map(|()| None)
        }
        ClientMessage::UpdateSubscription {
            track_sid,
            disabled,
            width,
            height,
            priority,
        } => {
            let settings = SubscriptionSettings {
                disabled,
                max_width: width,
                max_height: height,
                priority: priority.unwrap_or(SubscriptionSettings::default().priority),
            };
            handle
                .update_subscription(track_sid, settings)
                .await
                .map(|()| None)
        }
        ClientMessage::Leave => Ok(None),
    };
    result.unwrap_or_else(|e| Some(sfu_error(e)))
}

fn sfu_error(e: SfuError) -> ServerMessage {
    let code = match &e {
        SfuError::PublishNotAllowed => "publish_not_allowed",
        SfuError::SubscribeNotAllowed => "subscribe_not_allowed",
        SfuError::InvalidSdp(_) => "invalid_sdp",
        SfuError::InvalidCandidate(_) => "invalid_candidate",
        SfuError::TrackNotFound => "unknown_track",
        SfuError::NoPendingOffer => "no_pending_offer",
        SfuError::ParticipantNotFound => "participant_not_found",
        SfuError::RemoteUnmuteRefused => "remote_unmute_refused",
        _ => "internal",
    };
    ServerMessage::error(code, e.to_string())
}
