//! The signaling WebSocket, in typed messages.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

use callgate_signaling::protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage, Welcome};

use crate::ClientError;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A signaling connection: `send` client messages, `recv` server ones.
/// `split` it to read and write from different tasks.
pub struct Signaling {
    sender: Sender,
    receiver: Receiver,
}

/// The writing half of a [`Signaling`].
pub struct Sender {
    sink: SplitSink<Socket, Message>,
}

/// The reading half of a [`Signaling`].
pub struct Receiver {
    stream: SplitStream<Socket>,
}

impl Signaling {
    /// Opens the WebSocket at `url` (`ws://host:port/rtc`); nothing is sent.
    pub async fn connect(url: &str) -> Result<Signaling, ClientError> {
        // Without Nagle: each message leaves at once (see the server's
        // accept loop).
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| ClientError::Connect {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        let (sink, stream) = socket.split();
        Ok(Signaling {
            sender: Sender { sink },
            receiver: Receiver { stream },
        })
    }

    /// Connects and joins the room `token` names: the room as the server
    /// tells it (`joined`), or why it refused (`Closed` with the close code
    /// and reason, docs/protocol.md "Close codes").
    pub async fn join(url: &str, token: &str) -> Result<(Signaling, Welcome), ClientError> {
        let mut signaling = Signaling::connect(url).await?;
        signaling
            .send(&ClientMessage::Join {
                token: token.to_owned(),
                protocol: Some(PROTOCOL_VERSION),
            })
            .await?;
        loop {
            match signaling.recv().await? {
                Some(ServerMessage::Joined(welcome)) => return Ok((signaling, welcome)),
                // A refusal is an `error` and then the close that says why.
                Some(ServerMessage::Error { .. }) => continue,
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "expected joined, got {}",
                        other.to_json()
                    )));
                }
                None => return Err(ClientError::Protocol("closed before joined".into())),
            }
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        self.sender.send(message).await
    }

    /// The next server message; `None` once the connection has ended
    /// without a close frame. A close frame is `Err(Closed)`.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        self.receiver.recv().await
    }

    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
}

impl Sender {
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(message)
            .map_err(|e| ClientError::Protocol(format!("writing {message:?}: {e}")))?;
        self.sink
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Closes the WebSocket: with 4000 `resuming` the server keeps the
    /// session for a `resume`; any other code ends it, as `leave` does.
    pub async fn close(mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        self.sink
            .send(Message::Close(Some(frame)))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

impl Receiver {
    /// As [`Signaling::recv`]. Frames of a type this client does not know
    /// (a newer server's) are skipped, as the protocol asks of clients.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        while let Some(frame) = self.stream.next().await {
            match frame.map_err(|e| ClientError::Protocol(e.to_string()))? {
                Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => return Ok(Some(message)),
                    Err(e) => debug!(error = %e, frame = %text, "server message skipped"),
                },
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                // Pings are answered by tungstenite itself.
                _ => continue,
            }
        }
        Ok(None)
    }
}
