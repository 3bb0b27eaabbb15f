//! Sandboxes: where an agent runs. The pod backend is the default; each
//! backend is keyed by the run, so creating a sandbox twice finds the first.

pub mod daytona;
pub mod local;
pub mod pod;

/// What a sandbox is doing, whatever its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// Not running yet; `reason` says why when Kubernetes says
    /// (`ImagePullBackOff`, `Unschedulable`, ...).
    Waiting {
        /// Why it waits.
        reason: Option<String>,
    },
    /// The agent container runs.
    Running,
    /// The agent container ended.
    Exited {
        /// Its exit code.
        code: i32,
        /// Kubernetes' reason: `Completed`, `Error`, `OOMKilled`,
        /// `DeadlineExceeded`, ...
        reason: Option<String>,
    },
}
