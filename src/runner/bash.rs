//! `/api/bash`: commands a client runs in the workspace, in the OpenHands
//! agent-server's shapes. A command is a `BashCommand` event; what it
//! prints comes as `BashOutput` events (stdout and stderr apart, in pieces
//! of at most [`PIECE`] bytes numbered by `order`), the last one carrying the
//! exit code. Clients poll `bash_events/search` for them, and may stop a
//! command by its id.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::conversations::canonical_id;

/// How many bash events are kept for `bash_events/search`.
const KEPT_BASH_EVENTS: usize = 1000;

/// The most output one `BashOutput` carries per stream.
pub const PIECE: usize = 256 * 1024;

/// How long a command stopped or past its timeout has to exit on SIGTERM
/// (running its traps) before its process group is killed.
const GRACE: Duration = Duration::from_secs(1);

/// One bash event.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind")]
pub enum BashEvent {
    /// A command was started.
    BashCommand {
        /// The command's id.
        id: String,
        /// When (UTC, microseconds).
        timestamp: String,
        /// The command line.
        command: String,
        /// Where it runs, as the client named it.
        cwd: Option<String>,
        /// Its timeout, in seconds.
        timeout: u64,
    },
    /// A piece of a command's output; the last one has the exit code.
    BashOutput {
        /// The event's id.
        id: String,
        /// When (UTC, microseconds).
        timestamp: String,
        /// The command's id.
        command_id: String,
        /// Its place among the command's outputs, from 0.
        order: u32,
        /// The exit code (`-1` after a timeout, minus the signal when a
        /// signal ended it); `None` while the command runs.
        exit_code: Option<i32>,
        /// Standard output.
        stdout: Option<String>,
        /// Standard error.
        stderr: Option<String>,
    },
}

impl BashEvent {
    /// Its id.
    pub fn id(&self) -> &str {
        match self {
            Self::BashCommand { id, .. } | Self::BashOutput { id, .. } => id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BashCommand { .. } => "BashCommand",
            Self::BashOutput { .. } => "BashOutput",
        }
    }

    fn timestamp(&self) -> &str {
        match self {
            Self::BashCommand { timestamp, .. } | Self::BashOutput { timestamp, .. } => timestamp,
        }
    }
}

/// A command to run.
#[derive(Debug, Deserialize)]
pub struct Request {
    /// The command line, run by `bash -c`.
    pub command: String,
    /// Where, inside the workspace root.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The order of a search's results.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortOrder {
    /// Oldest first.
    #[default]
    Timestamp,
    /// Newest first.
    TimestampDesc,
}

/// The filters and paging of `bash_events/search`.
#[derive(Debug, Default, Deserialize)]
pub struct Search {
    /// Only this kind.
    #[serde(default, rename = "kind__eq")]
    pub kind: Option<String>,
    /// Only the outputs of this command.
    #[serde(default, rename = "command_id__eq")]
    pub command: Option<String>,
    /// Only outputs after this `order`.
    #[serde(default, rename = "order__gt")]
    pub after_order: Option<u32>,
    /// Only events at or after this time.
    #[serde(default, rename = "timestamp__gte")]
    pub from: Option<String>,
    /// Only events before this time.
    #[serde(default, rename = "timestamp__lt")]
    pub until: Option<String>,
    /// Oldest or newest first.
    #[serde(default)]
    pub sort_order: SortOrder,
    /// Where the page starts: a `next_page_id` answered before.
    #[serde(default)]
    pub page_id: Option<String>,
    /// At most this many (1 to 100; 100 when not given).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One page of a search.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The events.
    pub items: Vec<Arc<BashEvent>>,
    /// Where the next page starts, if there is one.
    pub next_page_id: Option<String>,
}

/// A running command: how to stop it, and how to know it ended.
#[derive(Clone)]
struct Running {
    stop: CancellationToken,
    ended: CancellationToken,
}

#[derive(Default)]
struct Store {
    events: VecDeque<Arc<BashEvent>>,
    /// The last timestamp handed out, in microseconds.
    clock: i64,
}

/// The commands and bash events of a runner.
#[derive(Default)]
pub struct Bash {
    store: Mutex<Store>,
    running: Mutex<HashMap<String, Running>>,
}

/// Why a stop found nothing to stop.
#[derive(Debug, thiserror::Error)]
#[error("there is no bash command {0}")]
pub struct UnknownCommand(String);

/// The process group of a running command, killed when this is dropped
/// (the runner stopping, a request dropped) unless the command was reaped.
struct Group(Option<Pid>);

impl Group {
    fn signal(&self, signal: Signal) {
        if let Some(group) = self.0 {
            // Already gone is fine: there is nothing left to signal.
            let _ = killpg(group, signal);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// A stream's output not sent yet.
#[derive(Default)]
struct Pending(Vec<u8>);

impl Pending {
    /// The next whole piece, cut at a character boundary, if one is full.
    fn piece(&mut self) -> Option<String> {
        if self.0.len() < PIECE {
            return None;
        }
        let cut = match std::str::from_utf8(&self.0[..PIECE]) {
            Err(error) if error.error_len().is_none() && error.valid_up_to() > 0 => {
                error.valid_up_to()
            }
            _ => PIECE,
        };
        let rest = self.0.split_off(cut);
        let piece = std::mem::replace(&mut self.0, rest);
        Some(String::from_utf8_lossy(&piece).into_owned())
    }

    fn rest(self) -> Option<String> {
        (!self.0.is_empty()).then(|| String::from_utf8_lossy(&self.0).into_owned())
    }
}

/// How a command ended.
enum Ending {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Stopped,
}

impl Bash {
    fn push(&self, event: impl FnOnce(String) -> BashEvent) -> Arc<BashEvent> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.clock = super::now_micros().max(store.clock + 1);
        let event = Arc::new(event(super::timestamp(store.clock)));
        if store.events.len() == KEPT_BASH_EVENTS {
            store.events.pop_front();
        }
        store.events.push_back(event.clone());
        event
    }

    /// Starts `command` in `cwd` (already confined) for at most `timeout`;
    /// its `BashCommand` event, and a token cancelled once it has ended and
    /// its last output is recorded.
    pub fn start(
        self: &Arc<Self>,
        request: Request,
        cwd: PathBuf,
        timeout: Duration,
    ) -> (Arc<BashEvent>, CancellationToken) {
        let id = crate::random::uuid();
        let started = self.push(|timestamp| BashEvent::BashCommand {
            id: id.clone(),
            timestamp,
            command: request.command.clone(),
            cwd: request.cwd.clone(),
            timeout: timeout.as_secs(),
        });
        let running = Running {
            stop: CancellationToken::new(),
            ended: CancellationToken::new(),
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), running.clone());
        let this = self.clone();
        let ended = running.ended.clone();
        tokio::spawn(async move {
            this.run(&id, &request.command, cwd, timeout, &running.stop)
                .await;
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            running.ended.cancel();
        });
        (started, ended)
    }

    /// Runs a command to its end, recording its outputs.
    async fn run(
        &self,
        id: &str,
        command: &str,
        cwd: PathBuf,
        timeout: Duration,
        stop: &CancellationToken,
    ) {
        let output = |order: u32, exit_code, stdout, stderr| {
            move |timestamp| BashEvent::BashOutput {
                id: crate::random::uuid(),
                timestamp,
                command_id: id.to_owned(),
                order,
                exit_code,
                stdout,
                stderr,
            }
        };
        let mut bash = Command::new("bash");
        // The command sees none of the runner's credentials.
        crate::agent::hardening::confine(&mut bash, &[]);
        let spawned = bash
            .arg("-c")
            .arg(command)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a stop or a timeout ends its
            // children too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let why = format!("bash could not start in {}: {error}", cwd.display());
                self.push(output(0, Some(-1), None, Some(why)));
                return;
            }
        };
        let mut group = Group(
            child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw),
        );
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            self.push(output(
                0,
                Some(-1),
                None,
                Some("bash has no output pipes".into()),
            ));
            return;
        };
        let mut order = 0;
        let (mut out, mut err) = (Pending::default(), Pending::default());
        let ending = {
            let collect = async {
                let (mut out_open, mut err_open) = (true, true);
                let (mut out_buffer, mut err_buffer) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
                while out_open || err_open {
                    tokio::select! {
                        more = read(&mut stdout, &mut out_buffer), if out_open => match more {
                            Some(bytes) => out.0.extend_from_slice(bytes),
                            None => out_open = false,
                        },
                        more = read(&mut stderr, &mut err_buffer), if err_open => match more {
                            Some(bytes) => err.0.extend_from_slice(bytes),
                            None => err_open = false,
                        },
                    }
                    while let Some(piece) = out.piece() {
                        self.push(output(order, None, Some(piece), None));
                        order += 1;
                    }
                    while let Some(piece) = err.piece() {
                        self.push(output(order, None, None, Some(piece)));
                        order += 1;
                    }
                }
                child.wait().await
            };
            tokio::select! {
                status = collect => Ending::Exited(status),
                () = tokio::time::sleep(timeout) => Ending::TimedOut,
                () = stop.cancelled() => Ending::Stopped,
            }
        };
        let exit_code = match ending {
            Ending::Exited(status) => {
                group.0 = None;
                Some(status.map_or(-1, exit_code))
            }
            Ending::TimedOut | Ending::Stopped => {
                group.signal(Signal::SIGTERM);
                let ended = tokio::time::timeout(GRACE, child.wait()).await;
                group.signal(Signal::SIGKILL);
                let stopped = match ended {
                    Ok(Ok(status)) => exit_code(status),
                    _ => -(Signal::SIGKILL as i32),
                };
                if matches!(ending, Ending::TimedOut) {
                    let note = format!(
                        "timed out after {}s; the command was stopped\n",
                        timeout.as_secs()
                    );
                    err.0.extend_from_slice(note.as_bytes());
                    Some(-1)
                } else {
                    Some(stopped)
                }
            }
        };
        self.push(output(order, exit_code, out.rest(), err.rest()));
    }

    /// Stops the command `id` and waits (a little) for it to end.
    pub async fn stop(&self, id: &str) -> Result<(), UnknownCommand> {
        let key = canonical_id(id).unwrap_or_else(|| id.to_owned());
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        match running {
            Some(running) => {
                running.stop.cancel();
                let _ = tokio::time::timeout(GRACE * 3, running.ended.cancelled()).await;
                Ok(())
            }
            // Stopping a command that already ended is done already.
            None if self.get(&key).is_some() => Ok(()),
            None => Err(UnknownCommand(id.to_owned())),
        }
    }

    /// The event `id`.
    pub fn get(&self, id: &str) -> Option<Arc<BashEvent>> {
        let key = canonical_id(id).unwrap_or_else(|| id.to_owned());
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.events.iter().find(|e| e.id() == key).cloned()
    }

    /// Forgets every event; how many there were.
    pub fn clear(&self) -> usize {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let count = store.events.len();
        store.events.clear();
        count
    }

    /// The outputs of command `id`, joined into one: its streams whole and
    /// its exit code.
    pub fn joined(&self, id: &str) -> BashEvent {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut last = None;
        for event in &store.events {
            if let BashEvent::BashOutput {
                command_id,
                stdout: out,
                stderr: err,
                ..
            } = event.as_ref()
                && command_id == id
            {
                stdout.push_str(out.as_deref().unwrap_or_default());
                stderr.push_str(err.as_deref().unwrap_or_default());
                last = Some(event.clone());
            }
        }
        let (event_id, timestamp, order, exit_code) = match last.as_deref() {
            Some(BashEvent::BashOutput {
                id,
                timestamp,
                order,
                exit_code,
                ..
            }) => (id.clone(), timestamp.clone(), *order, *exit_code),
            _ => (crate::random::uuid(), super::now(), 0, None),
        };
        BashEvent::BashOutput {
            id: event_id,
            timestamp,
            command_id: id.to_owned(),
            order,
            exit_code: Some(exit_code.unwrap_or(-1)),
            stdout: (!stdout.is_empty()).then_some(stdout),
            stderr: (!stderr.is_empty()).then_some(stderr),
        }
    }

    /// One page of the events `search` asks for.
    pub fn search(&self, search: &Search) -> Page {
        let command = search
            .command
            .as_deref()
            .map(|c| canonical_id(c).unwrap_or_else(|| c.to_owned()));
        let keep = |event: &BashEvent| {
            let of_kind = search.kind.as_deref().is_none_or(|k| event.kind() == k);
            let of_command = command.as_deref().is_none_or(|wanted| {
                matches!(event, BashEvent::BashOutput { command_id, .. } if command_id == wanted)
            });
            let after = search.after_order.is_none_or(|after| match event {
                BashEvent::BashOutput { order, .. } => *order > after,
                BashEvent::BashCommand { .. } => true,
            });
            let window = super::within(
                event.timestamp(),
                search.from.as_deref(),
                search.until.as_deref(),
            );
            of_kind && of_command && after && window
        };
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let mut matched: Vec<&Arc<BashEvent>> = store.events.iter().filter(|e| keep(e)).collect();
        if search.sort_order == SortOrder::TimestampDesc {
            matched.reverse();
        }
        let start = search
            .page_id
            .as_deref()
            .and_then(|page| matched.iter().position(|e| e.id() == page))
            .unwrap_or(0);
        let limit = search.limit.unwrap_or(100);
        let end = (start + limit).min(matched.len());
        Page {
            items: matched[start..end].iter().map(|e| (*e).clone()).collect(),
            next_page_id: matched.get(end).map(|e| e.id().to_owned()),
        }
    }
}

/// The next bytes of `stream`, or `None` at its end.
async fn read<'b>(stream: &mut (impl AsyncRead + Unpin), buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    match stream.read(buffer).await {
        Ok(0) | Err(_) => None,
        Ok(read) => Some(&buffer[..read]),
    }
}

/// The exit code, or minus the signal that ended the command.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| -signal))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str) -> Request {
        Request {
            command: command.to_owned(),
            cwd: None,
            timeout: None,
        }
    }

    async fn finished(bash: &Arc<Bash>, command: &str, timeout: Duration) -> BashEvent {
        let (started, ended) = bash.start(request(command), std::env::temp_dir(), timeout);
        ended.cancelled().await;
        bash.joined(started.id())
    }

    #[tokio::test]
    async fn stdout_and_stderr_come_apart_with_the_exit_code() {
        let bash = Arc::new(Bash::default());
        let output = finished(
            &bash,
            "echo out; echo err >&2; exit 3",
            Duration::from_secs(10),
        )
        .await;
        let BashEvent::BashOutput {
            exit_code,
            stdout,
            stderr,
            ..
        } = output
        else {
            panic!("an output: {output:?}");
        };
        assert_eq!(exit_code, Some(3));
        assert_eq!(stdout.as_deref(), Some("out\n"));
        assert_eq!(stderr.as_deref(), Some("err\n"));
    }

    #[tokio::test]
    async fn long_output_comes_in_ordered_pieces_cut_at_characters() {
        let bash = Arc::new(Bash::default());
        // Lines of 7 bytes, characters of 3: the pieces' ends fall inside
        // characters, and the output is a little over two pieces.
        let command = format!("yes €€ | head -n {}", PIECE * 2 / 7 + 2);
        let (started, ended) = bash.start(
            request(&command),
            std::env::temp_dir(),
            Duration::from_secs(30),
        );
        ended.cancelled().await;
        let page = bash.search(&Search {
            command: Some(started.id().to_owned()),
            ..Search::default()
        });
        let orders: Vec<u32> = page
            .items
            .iter()
            .map(|e| match e.as_ref() {
                BashEvent::BashOutput { order, stdout, .. } => {
                    assert!(!stdout.as_deref().unwrap_or_default().contains('\u{FFFD}'));
                    *order
                }
                other => panic!("only outputs: {other:?}"),
            })
            .collect();
        assert_eq!(orders, [0, 1, 2]);
        let after = bash.search(&Search {
            command: Some(started.id().to_owned()),
            after_order: Some(1),
            sort_order: SortOrder::TimestampDesc,
            limit: Some(1),
            ..Search::default()
        });
        assert_eq!(after.items.len(), 1);
        assert!(matches!(
            after.items[0].as_ref(),
            BashEvent::BashOutput {
                order: 2,
                exit_code: Some(0),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_stopped_command_ends_with_its_children_and_a_timeout_says_so() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let bash = Arc::new(Bash::default());
        let (started, ended) = bash.start(
            request("(sleep 30; touch late) & sleep 30"),
            dir.path().to_owned(),
            Duration::from_secs(60),
        );
        bash.stop(started.id()).await.expect("a known command");
        // A 60 s command that has ended now was stopped, not waited for.
        assert!(ended.is_cancelled());
        assert!(
            matches!(bash.joined(started.id()), BashEvent::BashOutput { exit_code: Some(code), .. } if code < 0)
        );
        bash.stop(started.id())
            .await
            .expect("stopping it again is fine");
        assert!(bash.stop(&crate::random::uuid()).await.is_err());

        let timed_out = finished(&bash, "sleep 30", Duration::from_millis(200)).await;
        let BashEvent::BashOutput {
            exit_code, stderr, ..
        } = timed_out
        else {
            panic!("an output");
        };
        assert_eq!(exit_code, Some(-1));
        assert!(stderr.unwrap_or_default().contains("timed out"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!dir.path().join("late").exists());
    }

    #[test]
    fn pages_follow_on_where_the_last_ended() {
        let bash = Bash::default();
        for n in 0..5 {
            bash.push(|timestamp| BashEvent::BashCommand {
                id: format!("c{n}"),
                timestamp,
                command: "true".into(),
                cwd: None,
                timeout: 1,
            });
        }
        let first = bash.search(&Search {
            limit: Some(2),
            ..Search::default()
        });
        assert_eq!(first.next_page_id.as_deref(), Some("c2"));
        let second = bash.search(&Search {
            limit: Some(2),
            page_id: first.next_page_id,
            ..Search::default()
        });
        let ids: Vec<&str> = second.items.iter().map(|e| e.id()).collect();
        assert_eq!(ids, ["c2", "c3"]);
        assert_eq!(bash.clear(), 5);
        assert!(bash.search(&Search::default()).items.is_empty());
    }
}
