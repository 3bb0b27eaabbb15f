//! The local sandbox backend of `smolpaws dev`: the agent runs as a child
//! process of the operator, on the operator's own machine, with no
//! isolation at all. Nothing outside dev mode can enable it.
//!
//! Each run gets a directory (its log and, unless the repository is a local
//! checkout, its workspace). A local repository is a link under
//! `repositories/<owner>/<name>` to a checkout the agent then works in as
//! it is, so its edits land where the developer sees them.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kube::ResourceExt;
use tracing::warn;

use super::SandboxState;
use crate::api::AgentRun;
use crate::process::Process;

/// The file in a run's directory that holds the agent's output.
pub const LOG_FILE: &str = "agent.log";

/// Variables of the operator's environment a local agent keeps; everything
/// else (the App key, the webhook secret) stays with the operator.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LANG", "TMPDIR", "SSL_CERT_FILE"];

/// Where local sandboxes live and what they run.
#[derive(Debug)]
pub struct LocalSandboxes {
    agent: PathBuf,
    root: PathBuf,
    repositories: Option<PathBuf>,
    running: Mutex<HashMap<String, Process>>,
}

impl LocalSandboxes {
    /// Sandboxes that run `agent` (a smolpaws binary), each in a directory
    /// under `root`; `repositories` holds the links of local repositories.
    pub fn new(agent: PathBuf, root: PathBuf, repositories: Option<PathBuf>) -> Self {
        Self {
            agent,
            root,
            repositories,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of `run`'s sandbox: what its `status.sandbox` names.
    pub fn directory(&self, run: &AgentRun) -> PathBuf {
        self.root
            .join(run.namespace().unwrap_or_default())
            .join(run.name_any())
    }

    /// The checkout a local repository links to, if `repository` is one.
    fn local_checkout(&self, repository: &str) -> Option<PathBuf> {
        if repository
            .split('/')
            .any(|part| part == "." || part == "..")
        {
            return None;
        }
        let link = self.repositories.as_ref()?.join(repository);
        std::fs::canonicalize(link).ok()
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Process>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `run`'s agent with `env` (see [`super::resolve_env`]) unless it already
    /// runs or ran in this process.
    pub fn start(&self, run: &AgentRun, env: Vec<(String, String)>) -> std::io::Result<()> {
        let mut running = self.processes();
        let key = run.uid().unwrap_or_default();
        if running.contains_key(&key) {
            return Ok(());
        }
        let directory = self.directory(run);
        let workspace = match self.local_checkout(&run.spec.github.repository) {
            Some(checkout) => checkout,
            None => directory.join("workspace"),
        };
        std::fs::create_dir_all(&directory)?;
        std::fs::create_dir_all(&workspace)?;
        let mut command = std::process::Command::new(&self.agent);
        command
            .arg("agent")
            .current_dir(&workspace)
            .env_clear()
            .envs(
                INHERITED.iter().filter_map(|name| {
                    std::env::var_os(name).map(|value| (name.to_string(), value))
                }),
            )
            .envs(env)
            .env("SMOLPAWS_WORKSPACE", &workspace);
        if workspace.join(".git").exists() {
            command.env("SMOLPAWS_EXISTING_CHECKOUT", "true");
        }
        warn!(
            run = %run.name_any(),
            workspace = %workspace.display(),
            "starting an UNISOLATED local sandbox: the agent runs as this user, on this machine"
        );
        let process = Process::spawn(&run.name_any(), command, &directory.join(LOG_FILE))?;
        running.insert(key, process);
        Ok(())
    }

    /// What `run`'s agent is doing; `None` when this process never started
    /// it (it was started by an operator that has since stopped).
    pub fn state(&self, run: &AgentRun) -> Option<SandboxState> {
        let mut running = self.processes();
        let process = running.get_mut(&run.uid().unwrap_or_default())?;
        Some(match process.exited() {
            None => SandboxState::Running,
            Some(status) => SandboxState::Exited {
                code: status
                    .code()
                    .or_else(|| status.signal().map(|signal| 128 + signal))
                    .unwrap_or(-1),
                reason: status
                    .signal()
                    .map(|signal| format!("killed by signal {signal}")),
            },
        })
    }

    /// Stops `run`'s agent, if it runs.
    pub fn stop(&self, run: &AgentRun) {
        // Dropping the process kills its whole process group.
        drop(self.processes().remove(&run.uid().unwrap_or_default()));
    }
}

/// The log of the local sandbox in `directory`.
pub fn log_path(directory: &Path) -> PathBuf {
    directory.join(LOG_FILE)
}
