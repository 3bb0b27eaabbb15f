//! The agent's steps, streamed to the controller for the run's progress
//! comment: each tool call in a few words (``ran `cargo test` (exit 1)``,
//! ``edited `src/parser.rs` ``), the last few posted to the result
//! endpoint's progress route with the run credential. Best effort: a step
//! that does not arrive only makes the comment lag; the final reply says
//! what happened either way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::session::Step;
use crate::api::contract::{MAX_PROGRESS_STEPS, Progress};

/// A step in words, from a tool call's name and (redacted) JSON arguments
/// and its exit code; `None` for the steps not worth showing.
pub fn describe(tool: &str, arguments: &str, exit_code: Option<i32>) -> Option<String> {
    let arguments: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    let quoted = |key: &str| {
        let text = arguments[key].as_str().unwrap_or("?").replace('`', "'");
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let clipped: String = text.chars().take(80).collect();
        let more = if clipped.len() < text.len() {
            "…"
        } else {
            ""
        };
        format!("`{clipped}{more}`")
    };
    Some(match tool {
        "bash" => match exit_code {
            Some(code) => format!("ran {} (exit {code})", quoted("command")),
            None => format!("ran {} (no exit code)", quoted("command")),
        },
        "view" => format!("read {}", quoted("path")),
        "create" => format!("created {}", quoted("path")),
        "str_replace" | "insert" => format!("edited {}", quoted("path")),
        "git_diff" => "looked at the diff".to_owned(),
        _ => return None,
    })
}

/// Where the steps go: the progress route, with the run credential.
pub struct Destination {
    /// The progress route of the run.
    pub url: String,
    /// The run credential.
    pub token: SecretString,
}

/// An observer for [`super::session::Session::run`] that sends the steps
/// to `destination` from a task of its own, so the session never waits on
/// the network; the task ends when the observer is dropped.
pub fn reporter(
    destination: Destination,
    http: reqwest::Client,
) -> impl Fn(Step<'_>) + Send + Sync {
    let (sender, mut steps) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut last: Vec<String> = Vec::new();
        while let Some(step) = steps.recv().await {
            last.push(step);
            // Whatever queued meanwhile goes in the same post.
            while let Ok(step) = steps.try_recv() {
                last.push(step);
            }
            let skip = last.len().saturating_sub(MAX_PROGRESS_STEPS);
            last.drain(..skip);
            let body = Progress {
                steps: last.clone(),
            };
            let sent = http
                .post(&destination.url)
                .bearer_auth(destination.token.expose_secret())
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await;
            if let Err(error) = sent {
                debug!(%error, "a progress update did not arrive");
            }
        }
    });
    let calls: Mutex<HashMap<String, (String, String)>> = Mutex::new(HashMap::new());
    move |step| match step {
        Step::Called {
            id,
            tool,
            arguments,
        } => {
            let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.insert(id.to_owned(), (tool.to_owned(), arguments.to_owned()));
        }
        Step::Answered { id, exit_code, .. } => {
            let call = calls.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            if let Some(described) =
                call.and_then(|(tool, arguments)| describe(&tool, &arguments, exit_code))
            {
                // Fails only once the sending task is gone.
                let _ = sender.send(described);
            }
        }
        Step::Said(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_what_was_done() {
        assert_eq!(
            describe("bash", r#"{"command":"cargo test"}"#, Some(1)).as_deref(),
            Some("ran `cargo test` (exit 1)")
        );
        assert_eq!(
            describe("str_replace", r#"{"path":"src/parser.rs"}"#, None).as_deref(),
            Some("edited `src/parser.rs`")
        );
        assert_eq!(
            describe("bash", r#"{"command":"echo `id`\nls"}"#, Some(0)).as_deref(),
            Some("ran `echo 'id' ls` (exit 0)")
        );
        assert_eq!(describe("finish", "{}", None), None);
    }
}
