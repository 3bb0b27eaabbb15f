//! The shell tool: one bash command in the workspace, with a timeout and a
//! cap on the output the model sees.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::ToolError;
use super::workspace::Workspace;

/// The most output the model sees from one command: the start and the end,
/// with the middle cut.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// What a command did.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Standard output and error, interleaved, capped.
    pub output: String,
    /// Whether the timeout stopped it.
    pub timed_out: bool,
}

impl CommandOutput {
    /// How the model sees it.
    pub fn describe(&self, timeout: Duration) -> String {
        let status = match (self.timed_out, self.exit_code) {
            (true, _) => format!("timed out after {}s and was stopped", timeout.as_secs()),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_owned(),
        };
        format!("[{status}]\n{}", self.output)
    }
}

/// Keeps the first and last halves of a stream of at most `cap` bytes.
struct Capped {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: usize,
    half: usize,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            head: Vec::new(),
            tail: Default::default(),
            dropped: 0,
            half: cap / 2,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let to_head = (self.half - self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..to_head]);
        for &byte in &bytes[to_head..] {
            if self.tail.len() == self.half {
                self.tail.pop_front();
                self.dropped += 1;
            }
            self.tail.push_back(byte);
        }
    }

    fn finish(self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(
                "\n[... {} bytes of output cut ...]\n",
                self.dropped
            ));
        }
        let tail: Vec<u8> = self.tail.into();
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }
}

/// A running command's process group, killed when this value is dropped
/// unless the command exited by itself first.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The command exited and was reaped: its group id may be reused now.
    fn exited(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // The leader is not reaped yet, so the id is still that group's.
            crate::process::kill_group(group);
        }
    }
}

/// Runs `command` with bash in the workspace. On timeout the command and
/// everything it started are killed.
pub async fn run(
    workspace: &Workspace,
    command: &str,
    timeout: Duration,
) -> Result<CommandOutput, ToolError> {
    let (reader, writer) =
        std::io::pipe().map_err(|e| ToolError::new(format!("cannot start bash: {e}")))?;
    let mut bash = Command::new("bash");
    // The tool sees none of the agent's credentials.
    crate::agent::hardening::confine(&mut bash, &[]);
    let mut child = bash
        .arg("-c")
        .arg(command)
        .current_dir(workspace.root())
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| ToolError::new(format!("cannot start bash: {e}")))?,
        )
        .stderr(writer)
        // Its own process group, so a timeout kills its children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ToolError::new(format!("cannot start bash: {e}")))?;
    // The command holds the pipe's write ends: the output ends only once
    // they are closed here and bash's copies close with it.
    drop(bash);
    let pid = child.id();
    // Whatever ends this call (a timeout, or the caller dropping it), the
    // command's whole process group goes with it.
    let mut group = ProcessGroup(pid);
    let mut output =
        tokio::fs::File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(reader)));
    let collect = async {
        let mut capped = Capped::new(MAX_OUTPUT_BYTES);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match output.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => capped.push(&buffer[..read]),
            }
        }
        capped
    };
    let finished = async {
        let capped = collect.await;
        (child.wait().await, capped)
    };
    match tokio::time::timeout(timeout, finished).await {
        Ok((status, capped)) => {
            group.exited();
            let status = status.map_err(|e| ToolError::new(format!("bash failed: {e}")))?;
            Ok(CommandOutput {
                exit_code: status.code(),
                output: capped.finish(),
                timed_out: false,
            })
        }
        Err(_) => Ok(CommandOutput {
            exit_code: None,
            output: String::new(),
            timed_out: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let workspace = Workspace::new(dir.path()).expect("a workspace");
        (dir, workspace)
    }

    #[tokio::test]
    async fn runs_in_the_workspace_and_reports_the_exit_code() {
        let (_dir, ws) = workspace();
        let out = run(&ws, "pwd; echo err >&2; exit 3", Duration::from_secs(10))
            .await
            .expect("runs");
        assert_eq!(out.exit_code, Some(3));
        assert!(
            out.output.starts_with(&ws.root().display().to_string()),
            "{}",
            out.output
        );
        assert!(out.output.contains("err"));
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_stopped_with_its_children() {
        let (dir, ws) = workspace();
        let started = std::time::Instant::now();
        let out = run(
            &ws,
            "(sleep 30; touch late) & sleep 30",
            Duration::from_millis(300),
        )
        .await
        .expect("runs");
        assert!(out.timed_out && started.elapsed() < Duration::from_secs(5));
        assert!(out.describe(Duration::from_secs(1)).contains("timed out"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!dir.path().join("late").exists());
    }

    #[tokio::test]
    async fn ten_megabytes_of_output_are_cut_to_the_cap() {
        let (_dir, ws) = workspace();
        let out = run(
            &ws,
            "head -c 10000000 /dev/zero | tr '\\\\0' x; echo END",
            Duration::from_secs(30),
        )
        .await
        .expect("runs");
        assert_eq!(out.exit_code, Some(0));
        assert!(
            out.output.len() < MAX_OUTPUT_BYTES + 100,
            "{}",
            out.output.len()
        );
        assert!(
            out.output.contains("bytes of output cut") && out.output.trim_end().ends_with("END")
        );
    }
}
