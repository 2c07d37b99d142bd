//! A presence connection: a device outside any room that keeps a WebSocket
//! open to be rung and to watch presence (docs/calls.md, "Signaling
//! messages"). Its first message is `connect` instead of `join`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use crate::AppState;
use crate::connection::{close, is_too_big, send, token_close_code};
use crate::devices::DeviceId;
use crate::http::ConnectionPass;
use crate::protocol::{
    ClientMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, ParseError, ServerMessage,
};
use crate::ringing::CallRequest;
use crate::token::unix_now;

/// How often the server pings an idle presence connection.
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a presence connection may stay silent (no frame, no pong)
/// before the server closes it: a phone that went away is offline within
/// this time.
const SILENT_FOR: Duration = Duration::from_secs(60);

/// The call input a client message is, if it is one.
pub(crate) fn call_request(message: &ClientMessage) -> Option<CallRequest> {
    Some(match message {
        ClientMessage::CallAccept { call_id } => CallRequest::Accept {
            call_id: call_id.clone(),
        },
        ClientMessage::CallReject { call_id, reason } => CallRequest::Reject {
            call_id: call_id.clone(),
            reason: *reason,
        },
        ClientMessage::CallCancel { call_id } => CallRequest::Cancel {
            call_id: call_id.clone(),
        },
        ClientMessage::PresenceWatch { identities } => CallRequest::WatchPresence {
            identities: identities.clone(),
        },
        _ => return None,
    })
}

/// Hands `request` to the call desk, or says there is none.
pub(crate) fn forward(state: &AppState, identity: &str, device: DeviceId, request: CallRequest) {
    match &state.calls {
        Some(calls) => calls.request(identity, device, request),
        None => {
            state.devices.send_to_device(
                device,
                ServerMessage::error(
                    "calls_unavailable",
                    "this node runs without calls (metering is off)",
                ),
            );
        }
    }
}

pub(crate) async fn serve(
    mut socket: WebSocket,
    state: Arc<AppState>,
    pass: Option<ConnectionPass>,
    token: String,
    protocol: Option<u32>,
) {
    if protocol.is_some_and(|p| p != PROTOCOL_VERSION) {
        return close(
            socket,
            crate::close_codes::PROTOCOL_UNSUPPORTED,
            "protocol_unsupported",
        )
        .await;
    }
    let claims = match state.keys.verify(&token, unix_now()) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.rejected_tokens.inc();
            return close(socket, token_close_code(e), e.code()).await;
        }
    };
    if claims.sub.is_empty() {
        return close(
            socket,
            crate::close_codes::TOKEN_NOT_FOR_JOINING,
            "token_not_for_joining",
        )
        .await;
    }
    if let Some(p) = &pass {
        p.release();
    }
    let identity = claims.sub;
    let (device, mut outbox) = state.devices.register(&identity);
    let span = info_span!("device", identity = %identity, device);
    async {
        debug!("presence connection open");
        let connected = ServerMessage::Connected {
            protocol: PROTOCOL_VERSION,
            identity: identity.clone(),
        };
        // The desk learns of the device after `connected` is queued, so a
        // ring it sends at once (a call ringing this identity) comes after.
        let greeted = send(&mut socket, &connected).await;
        if let Some(calls) = &state.calls {
            calls.device_connected(&identity, device);
        }
        if greeted {
            run(&mut socket, &state, &identity, device, &mut outbox).await;
        }
        state.devices.unregister(device);
        if let Some(calls) = &state.calls {
            calls.device_disconnected(&identity, device);
        }
        debug!("presence connection closed");
    }
    .instrument(span)
    .await;
}

async fn run(
    socket: &mut WebSocket,
    state: &AppState,
    identity: &str,
    device: DeviceId,
    outbox: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
) {
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            Some(message) = outbox.recv() => {
                if !send(socket, &message).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENT_FOR {
                    debug!("presence connection silent; closing");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            frame = socket.recv() => {
                heard = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(t))) if t.len() <= MAX_FRAME_BYTES => t.to_string(),
                    Some(Ok(Message::Binary(b))) if b.len() <= MAX_FRAME_BYTES => {
                        String::from_utf8_lossy(&b).into_owned()
                    }
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        return close_too_big(socket).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            close_too_big(socket).await;
                        }
                        return;
                    }
                };
                match ClientMessage::parse(&text) {
                    Ok(ClientMessage::Leave) => {
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    Ok(message) => match call_request(&message) {
                        Some(request) => forward(state, identity, device, request),
                        None => {
                            let reply = ServerMessage::error(
                                "not_in_room",
                                "a presence connection sends call inputs, presence_watch and leave",
                            );
                            if !send(socket, &reply).await {
                                return;
                            }
                        }
                    },
                    Err(ParseError::Malformed(m)) => {
                        if !send(socket, &ServerMessage::error("malformed_message", m)).await {
                            return;
                        }
                    }
                    Err(ParseError::Unknown(t)) => {
                        let reply = ServerMessage::error(
                            "unknown_message",
                            format!("unknown message type `{t}`"),
                        );
                        if !send(socket, &reply).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Closes with 1009 `message_too_big` (the connection's task ends after).
async fn close_too_big(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: crate::close_codes::TOO_BIG,
            reason: "message_too_big".into(),
        })))
        .await;
}
