//! Conversation events, in the shapes the OpenHands SDK's own event models
//! accept (they forbid unknown fields, so nothing smolpaws-only is added),
//! and their append-only log: one JSON line per event in `events.jsonl`, so
//! a restarted runner has the whole history.
//!
//! Order is carried by what the SDK already reads: within a conversation
//! every event's `timestamp` is later than the one before (the SDK sorts its
//! cache by it), and the log's line order is the conversation's order.

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

/// The text of `parts`, a line between two.
fn text_of(parts: &[TextContent]) -> String {
    parts
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

impl LlmMessage {
    /// All its text.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }
}

/// The tool call as the model sent it (the SDK's `MessageToolCall`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// The call's id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments, a JSON string as the model wrote them.
    pub arguments: String,
    /// Which LLM API it came from: always chat completions here.
    pub origin: String,
}

/// A tool's answer, as the SDK's `MCPToolObservation`: the one observation
/// kind every SDK client knows without importing tool packages, and whose
/// shape (text content, an error flag, the tool) fits every smolpaws tool.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// Always `MCPToolObservation`.
    pub kind: String,
    /// The tool.
    pub tool_name: String,
    /// What the model saw.
    pub content: Vec<TextContent>,
    /// Whether the tool failed (a command's non-zero exit).
    pub is_error: bool,
}

impl Observation {
    /// `tool`'s answer `text`.
    pub fn new(tool: &str, text: &str, is_error: bool) -> Self {
        Self {
            kind: "MCPToolObservation".to_owned(),
            tool_name: tool.to_owned(),
            content: vec![TextContent::new(text)],
            is_error,
        }
    }

    /// All its text.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }
}

/// What happened, tagged by `kind` as the SDK's event models are.
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
        /// What the model said along with the call.
        thought: Vec<TextContent>,
        /// The tool.
        tool_name: String,
        /// The call's id.
        tool_call_id: String,
        /// The call itself.
        tool_call: ToolCall,
        /// The LLM response the call came in. smolpaws's sessions do not
        /// expose the provider's completion id, so each call gets its own.
        llm_response_id: String,
    },
    /// A tool answered.
    ObservationEvent {
        /// The tool.
        tool_name: String,
        /// The call's id.
        tool_call_id: String,
        /// The id of the [`EventBody::ActionEvent`] it answers.
        action_id: String,
        /// What it answered.
        observation: Observation,
    },
    /// The conversation's state changed (`execution_status`), or, never
    /// stored, a client is told all of it (`full_state`).
    ConversationStateUpdateEvent {
        /// Which field, or `full_state`.
        key: String,
        /// Its new value.
        value: Value,
    },
    /// The agent's run failed.
    ConversationErrorEvent {
        /// The kind of failure.
        code: String,
        /// What failed.
        detail: String,
    },
}

/// One event of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: String,
    /// When it happened: UTC, always with microseconds, so that the text
    /// order is the time order.
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
            EventBody::ConversationErrorEvent { .. } => "ConversationErrorEvent",
        }
    }

    /// Whether it is a message whose text contains `needle` (lowercase).
    pub fn mentions(&self, needle: &str) -> bool {
        match &self.body {
            EventBody::MessageEvent { llm_message } => {
                llm_message.text().to_lowercase().contains(needle)
            }
            _ => false,
        }
    }
}

/// The append-only file of a conversation's events.
#[derive(Debug)]
pub struct EventLog {
    file: File,
}

impl EventLog {
    /// Opens (creating) the log at `path`, with the events it holds (those
    /// an older runner wrote read in today's shapes). A line cut short by a
    /// crash is removed, so the next event starts a line.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Event>)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let bytes = std::fs::read(path)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64)?;
        }
        let mut events: Vec<Event> = Vec::new();
        for line in bytes[..whole].split(|&b| b == b'\n') {
            let Ok(value) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let event = match serde_json::from_value(value.clone()) {
                Ok(event) => Some(event),
                Err(_) => super::legacy::event(value, &events),
            };
            events.extend(event);
        }
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

    fn message(n: u64, text: &str) -> Event {
        Event {
            id: format!("e{n}"),
            timestamp: format!("2026-11-26T00:00:00.00000{n}Z"),
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
        file.write_all(b"{\"id\":\"e2\",\"ti").expect("a torn line");
        let (_, events) = EventLog::open(&path).expect("reopen");
        assert_eq!(events, vec![message(0, "hello"), message(1, "again")]);
        let json = serde_json::to_value(&events[0]).expect("JSON");
        assert_eq!(json["kind"], "MessageEvent");
        assert_eq!(json["llm_message"]["content"][0]["type"], "text");
        assert!(json.get("seq").is_none(), "the SDK forbids unknown fields");
    }
}
