//! Conversation events, in the shapes OpenHands agent-server clients read
//! (`kind` names the event), and their append-only log: one JSON line per
//! event in `events.jsonl`, so a restarted runner has the whole history.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who an event comes from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The person or client.
    User,
    /// The model.
    Agent,
    /// The tools and the runner.
    Environment,
}

/// A message's text, as a content part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TextContent {
    /// Always `text`.
    #[serde(rename = "type", default = "text_kind")]
    pub kind: String,
    /// The text.
    pub text: String,
}

fn text_kind() -> String {
    "text".to_owned()
}

impl TextContent {
    /// A text part.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            kind: text_kind(),
            text: text.into(),
        }
    }
}

/// A chat message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlmMessage {
    /// `user`, `assistant`, ...
    pub role: String,
    /// Its parts.
    pub content: Vec<TextContent>,
}

impl LlmMessage {
    /// All its text.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind")]
pub enum EventBody {
    /// A message from the user or the model.
    MessageEvent {
        /// The message.
        llm_message: LlmMessage,
    },
    /// The model called a tool.
    ActionEvent {
        /// The tool.
        tool_name: String,
        /// The call's id.
        tool_call_id: String,
        /// Its arguments.
        action: Value,
    },
    /// A tool answered.
    ObservationEvent {
        /// The tool.
        tool_name: String,
        /// The call's id.
        tool_call_id: String,
        /// What it answered.
        observation: Observation,
    },
    /// The conversation's state changed.
    ConversationStateUpdateEvent {
        /// Which field, e.g. `execution_status`.
        key: String,
        /// Its new value.
        value: Value,
    },
    /// The agent failed.
    AgentErrorEvent {
        /// Why.
        error: String,
    },
}

/// A tool's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// A command's exit code.
    pub exit_code: Option<i32>,
    /// What the model saw.
    pub content: String,
}

/// One event of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: String,
    /// Its place in the conversation, from 0.
    pub seq: u64,
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// Who it comes from.
    pub source: Source,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The event's kind, as clients filter by it.
    pub fn kind(&self) -> &'static str {
        match self.body {
            EventBody::MessageEvent { .. } => "MessageEvent",
            EventBody::ActionEvent { .. } => "ActionEvent",
            EventBody::ObservationEvent { .. } => "ObservationEvent",
            EventBody::ConversationStateUpdateEvent { .. } => "ConversationStateUpdateEvent",
            EventBody::AgentErrorEvent { .. } => "AgentErrorEvent",
        }
    }
}

/// The append-only file of a conversation's events.
#[derive(Debug)]
pub struct EventLog {
    file: File,
}

impl EventLog {
    /// Opens (creating) the log at `path`, with the events it holds. A line
    /// cut short by a crash is removed, so the next event starts a line.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Event>)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let bytes = std::fs::read(path)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64)?;
        }
        let events = bytes[..whole]
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        Ok((Self { file }, events))
    }

    /// Appends `event`.
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write per event: a crash leaves whole lines and at most one
        // partial last line.
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, text: &str) -> Event {
        Event {
            id: format!("e{seq}"),
            seq,
            timestamp: "2026-11-26T00:00:00Z".into(),
            source: Source::User,
            body: EventBody::MessageEvent {
                llm_message: LlmMessage {
                    role: "user".into(),
                    content: vec![TextContent::new(text)],
                },
            },
        }
    }

    #[test]
    fn events_survive_a_reopen_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("events.jsonl");
        let (mut log, events) = EventLog::open(&path).expect("a new log");
        assert!(events.is_empty());
        log.append(&message(0, "hello")).expect("append");
        log.append(&message(1, "again")).expect("append");
        drop(log);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"id\":\"e2\",\"se").expect("a torn line");
        let (_, events) = EventLog::open(&path).expect("reopen");
        assert_eq!(events, vec![message(0, "hello"), message(1, "again")]);
        let json = serde_json::to_value(&events[0]).expect("JSON");
        assert_eq!(json["kind"], "MessageEvent");
        assert_eq!(json["llm_message"]["content"][0]["type"], "text");
    }
}
