//! `/sockets/events/{conversation_id}`: a conversation's events as they
//! happen, as the agent-server streams them. After the upgrade the client
//! authenticates (a header, `?session_api_key=`, or a first frame
//! `{"type": "auth", "session_api_key": ...}`; otherwise the socket closes
//! with 4001), an unknown conversation closes it with 4004, and the client
//! first gets a `full_state` snapshot of the conversation. Past events are
//! replayed when asked for: `?resend_mode=all`, `?resend_mode=since&
//! after_timestamp=<time>`, or smolpaws's `?after=<event id>` (those after
//! that event). A client that falls more than the event buffer behind is
//! dropped (1008) rather than slowing the agent down.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::conversations::{Following, Frame};
use super::events::Event;
use super::{Runner, auth, micros};

/// How long a client has to send its auth frame.
const AUTH_WAIT: Duration = Duration::from_secs(10);

/// The close code of a failed authentication.
const UNAUTHENTICATED: u16 = 4001;

/// The close code of an unknown conversation.
const NOT_FOUND: u16 = 4004;

/// Options of a subscription.
#[derive(Debug, Deserialize)]
pub struct Follow {
    /// `all`, or `since` (with `after_timestamp`): which past events to
    /// replay.
    #[serde(default)]
    resend_mode: Option<String>,
    /// With `resend_mode=since`: replay events from this time on.
    #[serde(default)]
    after_timestamp: Option<String>,
    /// The agent-server's older spelling of `resend_mode=all`.
    #[serde(default)]
    resend_all: bool,
    /// Replay the events after the one with this id.
    #[serde(default)]
    after: Option<String>,
}

impl Follow {
    /// The past events to replay, of `history`.
    fn replay<'h>(&self, history: &'h [Arc<Event>]) -> &'h [Arc<Event>] {
        if let Some(after) = &self.after {
            let start = history
                .iter()
                .position(|e| &e.id == after)
                .map_or(0, |at| at + 1);
            return &history[start..];
        }
        match self.resend_mode.as_deref() {
            Some("all") => history,
            Some("since") => match self.after_timestamp.as_deref().and_then(micros) {
                Some(from) => {
                    let start = history
                        .iter()
                        .position(|e| micros(&e.timestamp).is_some_and(|t| t >= from))
                        .unwrap_or(history.len());
                    &history[start..]
                }
                None => &[],
            },
            _ if self.resend_all => history,
            _ => &[],
        }
    }
}

/// The first frame an SDK client sends.
#[derive(Debug, Deserialize)]
struct AuthFrame {
    #[serde(rename = "type")]
    kind: String,
    session_api_key: String,
}

/// Upgrades to a websocket that streams the conversation's events.
pub async fn events(
    State(runner): State<Arc<Runner>>,
    Path(id): Path<String>,
    Query(follow): Query<Follow>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = runner
        .config
        .token
        .clone()
        .expect("serve sets a token before routing");
    // Refused before the upgrade: after it, a client could only be told
    // by a close.
    if let Err(refusal) = super::readable(&[("after_timestamp", follow.after_timestamp.as_deref())])
    {
        return refusal.into_response();
    }
    let presented = auth::presented(&headers, uri.query()).map(<[u8]>::to_vec);
    upgrade.on_upgrade(move |socket| async move {
        let Some(mut socket) = authenticate(socket, &token, presented).await else {
            return;
        };
        match runner.conversations.get(&id) {
            Ok(conversation) => stream(socket, conversation.follow(), &follow).await,
            Err(error) => close(&mut socket, NOT_FOUND, error.to_string()).await,
        }
    })
}

async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // The client may be gone already: nothing more to tell it then.
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The socket, once its client has shown the token; closed with 4001
/// otherwise.
async fn authenticate(
    mut socket: WebSocket,
    token: &SecretString,
    presented: Option<Vec<u8>>,
) -> Option<WebSocket> {
    let given = match presented {
        Some(given) => given,
        None => match tokio::time::timeout(AUTH_WAIT, socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<AuthFrame>(&text)
                .ok()
                .filter(|frame| frame.kind == "auth")
                .map(|frame| frame.session_api_key.into_bytes())
                .unwrap_or_default(),
            _ => Vec::new(),
        },
    };
    if auth::valid(token, &given) {
        return Some(socket);
    }
    close(&mut socket, UNAUTHENTICATED, "Authentication failed".into()).await;
    None
}

async fn send(socket: &mut WebSocket, event: &Event) -> bool {
    match serde_json::to_string(event) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn stream(mut socket: WebSocket, following: Following, follow: &Follow) {
    let Following {
        snapshot,
        history,
        mut live,
    } = following;
    if !send(&mut socket, &snapshot).await {
        return;
    }
    let mut last = None;
    for event in follow.replay(&history) {
        if !send(&mut socket, event).await {
            return;
        }
        last = Some(event.id.clone());
    }
    // Live events the history already held are not sent twice.
    let mut next = history.len();
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(Frame::Event { at, .. }) if at < next => {}
                Ok(Frame::Event { at, event }) => {
                    if !send(&mut socket, &event).await {
                        return;
                    }
                    next = at + 1;
                    last = Some(event.id.clone());
                }
                Ok(Frame::Snapshot(snapshot)) => {
                    if !send(&mut socket, &snapshot).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let resume = last.map_or_else(
                        || "?resend_mode=all".to_owned(),
                        |id| format!("?after={id}"),
                    );
                    let reason = format!("too slow: {missed} events behind; reconnect with {resume}");
                    close(&mut socket, 1008, reason).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Clients only listen (a repeated auth frame included); a
                // close or an error ends the stream.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
