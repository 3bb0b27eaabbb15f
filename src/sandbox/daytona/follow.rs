//! The agent's output, forwarded to the controller's log as its sandbox
//! streams it, so a long run's log is read once rather than whole at every
//! look.
//!
//! The sandbox's daemon streams a command's output over a WebSocket
//! (`.../logs?follow=true`): everything written so far, then what follows,
//! until the command exits. Frames carry stdout and stderr, each run of
//! bytes after a three-byte marker saying which; a marker may be split
//! across frames. A follower keeps count of the bytes it forwarded (whole
//! lines only) so that, after a dropped connection, the replay skips them,
//! and the final read of the whole output (for the report) forwards only
//! the rest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use super::client::{DaytonaClient, Sandbox};

/// Before a run of stdout bytes.
const STDOUT: &[u8; 3] = b"\x01\x01\x01";
/// Before a run of stderr bytes.
const STDERR: &[u8; 3] = b"\x02\x02\x02";

/// How long a follower waits before it connects again.
const RECONNECT: Duration = Duration::from_secs(2);

/// Strips the stream markers from the frames of one stream, keeping stdout
/// and stderr in the order they were written (as Daytona's `output` does).
#[derive(Debug, Default)]
struct Demux {
    /// Bytes that may be the start of a marker split across frames.
    held: Vec<u8>,
}

impl Demux {
    /// The output bytes of `frame`.
    fn push(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.held);
        bytes.extend_from_slice(frame);
        let mut output = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            if rest.starts_with(STDOUT) || rest.starts_with(STDERR) {
                i += STDOUT.len();
            } else if rest.len() < STDOUT.len()
                && (STDOUT.starts_with(rest) || STDERR.starts_with(rest))
            {
                self.held = rest.to_vec();
                break;
            } else {
                output.push(bytes[i]);
                i += 1;
            }
        }
        output
    }
}

/// How far one run's output has reached the log, and the task streaming
/// the rest.
#[derive(Debug)]
struct Follower {
    /// Bytes of the output forwarded, up to the end of a line.
    forwarded: Arc<AtomicUsize>,
    task: Option<AbortHandle>,
}

/// The followers of one controller's runs, by run uid.
#[derive(Debug, Default)]
pub struct Followers {
    runs: Mutex<HashMap<String, Follower>>,
}

impl Followers {
    /// Starts streaming the output of `command` in `session` of `sandbox`
    /// to the log for run `uid`, unless that was done already.
    pub fn follow(
        &self,
        client: &DaytonaClient,
        uid: &str,
        sandbox: &Sandbox,
        session: &str,
        command: &str,
    ) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.contains_key(uid) {
            return;
        }
        let forwarded = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(stream(
            client.clone(),
            sandbox.clone(),
            session.to_owned(),
            command.to_owned(),
            forwarded.clone(),
        ));
        runs.insert(
            uid.to_owned(),
            Follower {
                forwarded,
                task: Some(task.abort_handle()),
            },
        );
    }

    /// Stops following run `uid` and forwards what of `output` (all the
    /// command wrote; it has exited) did not reach the log yet.
    pub fn finish(&self, uid: &str, sandbox: &str, output: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let follower = runs.entry(uid.to_owned()).or_insert_with(|| Follower {
            forwarded: Arc::default(),
            task: None,
        });
        if let Some(task) = follower.task.take() {
            task.abort();
        }
        let done = follower.forwarded.swap(output.len(), Ordering::SeqCst);
        // Counted in whole lines, so a character boundary; a shorter
        // output than counted (a replaced command) has nothing new.
        log_lines(sandbox, output.get(done..).unwrap_or_default());
    }

    /// Forgets run `uid`, stopping its follower.
    pub fn forget(&self, uid: &str) {
        let removed = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        if let Some(task) = removed.and_then(|f| f.task) {
            task.abort();
        }
    }
}

fn log_lines(sandbox: &str, text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        info!(target: "smolpaws::agent", %sandbox, "{line}");
    }
}

/// Follows the command's output until it exits, connecting again after a
/// dropped connection and skipping what the replay repeats.
async fn stream(
    client: DaytonaClient,
    sandbox: Sandbox,
    session: String,
    command: String,
    forwarded: Arc<AtomicUsize>,
) {
    loop {
        let mut socket = match client.follow_logs(&sandbox, &session, &command).await {
            Ok(socket) => socket,
            Err(error) if error.is_transient() => {
                warn!(%error, "could not follow the agent's output; trying again");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
            Err(error) => {
                warn!(%error, "could not follow the agent's output; it is logged when the agent exits");
                return;
            }
        };
        let mut demux = Demux::default();
        let mut seen = 0;
        let mut line: Vec<u8> = Vec::new();
        while let Some(frame) = socket.next().await {
            let bytes = match frame {
                Ok(Message::Binary(bytes)) => bytes.to_vec(),
                Ok(Message::Text(text)) => text.as_bytes().to_vec(),
                // The command exited and all it wrote was sent.
                Ok(Message::Close(_)) => return,
                Ok(_) => continue,
                Err(error) => {
                    warn!(%error, "the agent's output stream broke; following again");
                    break;
                }
            };
            for byte in demux.push(&bytes) {
                seen += 1;
                if seen <= forwarded.load(Ordering::SeqCst) {
                    continue;
                }
                line.push(byte);
                if byte == b'\n' {
                    log_lines(&sandbox.id, &String::from_utf8_lossy(&line));
                    line.clear();
                    forwarded.store(seen, Ordering::SeqCst);
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_stripped_even_split_across_frames() {
        let mut demux = Demux::default();
        let mut output = demux.push(b"\x01\x01\x01out\n\x02");
        output.extend(demux.push(b"\x02"));
        output.extend(demux.push(b"\x02err\n\x01\x01\x01more"));
        assert_eq!(output, b"out\nerr\nmore");
        assert!(demux.held.is_empty());
    }

    #[test]
    fn a_lone_control_byte_is_output() {
        let mut demux = Demux::default();
        assert_eq!(demux.push(b"a\x01b"), b"a\x01b");
        assert_eq!(demux.push(b"\x01\x01"), b"");
        assert_eq!(demux.push(b"c"), b"\x01\x01c");
    }
}
