//! Sandboxes: where an agent runs, behind one seam.
//!
//! The reconciler drives every backend through [`Sandbox`] and asks
//! [`Sandboxes`] for the one a run names; it never learns which backend it
//! holds. The pod backend is the default; Daytona joins when its key is
//! configured; the unisolated local backend exists only when `smolpaws dev`
//! adds it at its composition root. Each backend keys what it makes by the
//! run, so provisioning twice finds the first sandbox.
//!
//! The seam is a trait object rather than an enum of the three: the
//! reconciler's unit tests put a scripted backend behind it, and a backend
//! lives in its own module without the controller listing it. `async_trait`
//! because async functions in dyn-compatible traits are not in stable Rust.

pub mod args;
pub mod daytona;
pub mod env;
#[cfg(feature = "dev")]
pub mod local;
pub mod owned;
pub mod pod;
pub mod secret;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::contract::{CommitAuthor, Report};
use crate::api::{AgentRun, SandboxBackend};
use daytona::client::DaytonaError;

/// What a sandbox is doing, whatever its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// Not running yet; `reason` says why when the backend says
    /// (`ImagePullBackOff`, `Unschedulable`, a Daytona state, ...).
    Waiting {
        /// Why it waits.
        reason: Option<String>,
    },
    /// The agent runs.
    Running,
    /// The agent ended.
    Exited {
        /// Its exit code.
        code: i32,
        /// The backend's reason: `Completed`, `Error`, `OOMKilled`,
        /// `DeadlineExceeded`, ...
        reason: Option<String>,
    },
}

/// How far provisioning a run's sandbox got.
#[derive(Clone, Debug, PartialEq)]
pub enum Provisioned {
    /// The sandbox exists but the agent has not started; ask again.
    Waiting {
        /// Why it waits, when the backend says.
        reason: Option<String>,
        /// Whether this call made the sandbox.
        created: bool,
    },
    /// The agent started.
    Started {
        /// When it started.
        at: Time,
        /// The sandbox's name, when the backend named it only now.
        name: Option<String>,
        /// Whether this call made the sandbox (backends that make and
        /// start it in one step say so here).
        created: bool,
    },
    /// The backend cannot run this sandbox; retrying will not help.
    Failed {
        /// A CamelCase reason for the run's condition.
        reason: &'static str,
        /// What went wrong, for people.
        message: String,
    },
}

impl Provisioned {
    /// Whether the call that answered this made the sandbox.
    pub fn created(&self) -> bool {
        match self {
            Self::Waiting { created, .. } | Self::Started { created, .. } => *created,
            Self::Failed { .. } => false,
        }
    }
}

/// How often a backend's sandboxes are looked at besides their events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polls {
    /// While the sandbox starts.
    pub starting: Duration,
    /// While the agent runs.
    pub running: Duration,
}

/// What a backend needs to start a run's agent.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// The run.
    pub run: &'a AgentRun,
    /// The run's Secret (its credentials), already stored.
    pub secret: &'a Secret,
    /// How long the agent may run.
    pub timeout: Duration,
    /// Who the agent's commits are by, when the run has a GitHub App.
    pub author: Option<&'a CommitAuthor>,
    /// Whether the run was admitted in the same pass, so its sandbox cannot
    /// exist yet: the backend may make it without looking for it first (one
    /// made meanwhile still answers that it exists).
    pub fresh: bool,
}

/// A backend call that failed; retrying may help when
/// [`SandboxError::is_transient`] says so.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A Daytona call failed.
    #[error(transparent)]
    Daytona(#[from] DaytonaError),
}

impl SandboxError {
    /// Whether retrying the same call can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube(_) => true,
            Self::Daytona(error) => error.is_transient(),
        }
    }

    /// When to try again, when the backend said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.is_conflict() => {
                Some(Duration::from_millis(200))
            }
            Self::Kube(_) => None,
            Self::Daytona(error) => Some(error.retry_after().unwrap_or(Duration::from_secs(2))),
        }
    }
}

/// One sandbox backend: what the run's state machine asks of it.
#[async_trait::async_trait]
pub trait Sandbox: Send + Sync {
    /// The name the run's sandbox will have, when the backend knows it
    /// before the sandbox exists (recorded at admission).
    fn planned_name(&self, run: &AgentRun) -> Option<String>;

    /// Finds or makes the run's sandbox and starts its agent, one step at a
    /// time: called again until it answers Started or Failed.
    async fn provision(&self, launch: Launch<'_>) -> Result<Provisioned, SandboxError>;

    /// What the run's sandbox is doing; `None` when it is gone.
    async fn state(&self, run: &AgentRun) -> Result<Option<SandboxState>, SandboxError>;

    /// The report of an agent that exited, for backends that deliver it out
    /// of band rather than through the result endpoint.
    async fn collect_report(&self, _run: &AgentRun) -> Result<Option<Report>, SandboxError> {
        Ok(None)
    }

    /// Stops the run's agent now (a timeout, a cancellation); a sandbox
    /// already gone counts as stopped.
    async fn stop(&self, run: &AgentRun) -> Result<(), SandboxError>;

    /// Hands back what must not outlive the run, just before it is marked
    /// ended (a later reconcile of an ended run calls nothing here). What
    /// is left is removed with the run through its owner references.
    async fn release(&self, _run: &AgentRun) -> Result<(), SandboxError> {
        Ok(())
    }

    /// How often its sandboxes are looked at.
    fn polls(&self) -> Polls;
}

/// The backends one controller runs, by the name runs give them.
#[derive(Clone, Default)]
pub struct Sandboxes {
    backends: BTreeMap<SandboxBackend, Arc<dyn Sandbox>>,
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.backends.keys()).finish()
    }
}

impl Sandboxes {
    /// No backends yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `backend` for runs that name `kind`, replacing any before it.
    pub fn with(mut self, kind: SandboxBackend, backend: Arc<dyn Sandbox>) -> Self {
        self.backends.insert(kind, backend);
        self
    }

    /// The backend `run` names, or what the operator must configure for it.
    pub fn for_run(&self, run: &AgentRun) -> Result<&dyn Sandbox, &'static str> {
        let kind = run.spec.sandbox.backend;
        self.backends
            .get(&kind)
            .map(|backend| backend.as_ref())
            .ok_or(match kind {
                SandboxBackend::Pod => "the pod sandbox backend is not configured",
                SandboxBackend::Daytona => {
                    "the Daytona sandbox backend is not configured: set DAYTONA_API_KEY for the controller"
                }
                SandboxBackend::Local => {
                    "the local sandbox backend runs only in `smolpaws dev`; use backend pod or daytona"
                }
            })
    }
}
