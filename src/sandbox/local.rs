//! The local sandbox backend of `smolpaws dev`: the agent runs as a child
//! process of the operator, on the operator's own machine, with no
//! isolation at all. Nothing outside dev mode can enable it.
//!
//! Each run gets a directory (its log and, unless the repository is a local
//! checkout, its workspace). A local repository is a link under
//! `repositories/<owner>/<name>.git` (named as a git server names
//! repositories, so one can serve the directory as it is) to a checkout the
//! agent then works in as it is, so its edits land where the developer sees
//! them.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use tracing::warn;

use super::env::AgentEnvironment;
use super::{Launch, Polls, Provisioned, Sandbox, SandboxError, SandboxState};
use crate::api::AgentRun;
use crate::api::contract::env;
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
    environment: Arc<AgentEnvironment>,
    running: Mutex<HashMap<String, Process>>,
}

impl LocalSandboxes {
    /// Sandboxes that run `agent` (a smolpaws binary) told `environment`,
    /// each in a directory under `root`; `repositories` holds the links of
    /// local repositories.
    pub fn new(
        agent: PathBuf,
        root: PathBuf,
        repositories: Option<PathBuf>,
        environment: Arc<AgentEnvironment>,
    ) -> Self {
        Self {
            agent,
            root,
            repositories,
            environment,
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
        std::fs::canonicalize(link(self.repositories.as_ref()?, repository)).ok()
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Process>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `run`'s agent with `vars` unless it already runs or ran in
    /// this process; whether it started it now.
    fn start(&self, run: &AgentRun, vars: Vec<(String, String)>) -> std::io::Result<bool> {
        let mut running = self.processes();
        let key = run.uid().unwrap_or_default();
        if running.contains_key(&key) {
            return Ok(false);
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
            .envs(vars)
            .env(env::WORKSPACE, &workspace);
        if workspace.join(".git").exists() {
            command.env(env::EXISTING_CHECKOUT, "true");
        }
        warn!(
            run = %run.name_any(),
            workspace = %workspace.display(),
            "starting an UNISOLATED local sandbox: the agent runs as this user, on this machine"
        );
        let process = Process::spawn(&run.name_any(), command, &directory.join(LOG_FILE))?;
        running.insert(key, process);
        Ok(true)
    }

    /// What `run`'s agent is doing; `None` when this process never started
    /// it (it was started by an operator that has since stopped).
    fn agent_state(&self, run: &AgentRun) -> Option<SandboxState> {
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
}

#[async_trait::async_trait]
impl Sandbox for LocalSandboxes {
    fn planned_name(&self, run: &AgentRun) -> Option<String> {
        Some(self.directory(run).display().to_string())
    }

    async fn provision(&self, launch: Launch<'_>) -> Result<Provisioned, SandboxError> {
        let vars = self.environment.for_process(&launch);
        Ok(match self.start(launch.run, vars) {
            Ok(created) => Provisioned::Started {
                at: crate::api::now(),
                name: None,
                created,
            },
            Err(error) => Provisioned::Failed {
                reason: "SandboxFailed",
                message: format!("the local sandbox could not start: {error}"),
            },
        })
    }

    async fn state(&self, run: &AgentRun) -> Result<Option<SandboxState>, SandboxError> {
        Ok(self.agent_state(run))
    }

    async fn stop(&self, run: &AgentRun) -> Result<(), SandboxError> {
        // Dropping the process kills its whole process group.
        drop(self.processes().remove(&run.uid().unwrap_or_default()));
        Ok(())
    }

    /// Processes are not watched: they are looked at often.
    fn polls(&self) -> Polls {
        Polls {
            starting: Duration::from_secs(2),
            running: Duration::from_secs(1),
        }
    }
}

/// Where under `repositories` the link to local repository `repository`
/// (`<owner>/<name>`) lives.
pub fn link(repositories: &Path, repository: &str) -> PathBuf {
    repositories.join(format!("{repository}.git"))
}

/// The log of the local sandbox in `directory`.
pub fn log_path(directory: &Path) -> PathBuf {
    directory.join(LOG_FILE)
}
