//! `/sockets/events/{conversation_id}`: a conversation's events as they
//! happen, after the ones the client missed (all of them, or those after
//! `?after=<seq>`). A client that falls more than the event buffer behind
//! is dropped rather than slowing the agent down.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::events::Event;
use super::{Refusal, Runner};

/// Options of a subscription.
#[derive(Debug, Deserialize)]
pub struct Follow {
    /// Replay only events after this one.
    #[serde(default)]
    after: Option<u64>,
}

/// Upgrades to a websocket that streams the conversation's events.
pub async fn events(
    State(runner): State<Arc<Runner>>,
    Path(id): Path<String>,
    Query(follow): Query<Follow>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let conversation = match runner.conversations.get(&id) {
        Ok(conversation) => conversation,
        Err(error) => {
            return Refusal::new(StatusCode::NOT_FOUND, error.to_string()).into_response();
        }
    };
    upgrade.on_upgrade(move |socket| async move {
        let (history, live) = conversation.follow();
        stream(socket, history, live, follow.after).await;
    })
}

async fn send(socket: &mut WebSocket, event: &Event) -> bool {
    match serde_json::to_string(event) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn stream(
    mut socket: WebSocket,
    history: Vec<Arc<Event>>,
    mut live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    after: Option<u64>,
) {
    let first = after.map_or(0, |seq| seq + 1);
    let mut next = first;
    for event in history.iter().filter(|e| e.seq >= first) {
        if !send(&mut socket, event).await {
            return;
        }
        next = event.seq + 1;
    }
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.seq < next => {}
                Ok(event) => {
                    if !send(&mut socket, &event).await {
                        return;
                    }
                    next = event.seq + 1;
                }
                Err(RecvError::Lagged(missed)) => {
                    let frame = CloseFrame {
                        code: 1008,
                        reason: format!("too slow: {missed} events behind; reconnect with ?after={}", next.saturating_sub(1)).into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Clients only listen; a close or an error ends the stream.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
