//! Sandboxes: where an agent runs. The pod backend is the default; each
//! backend is keyed by the run, so creating a sandbox twice finds the first.

pub mod daytona;
pub mod local;
pub mod pod;

use k8s_openapi::api::core::v1::{EnvVar, Secret};

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

/// The agent's environment with the Secret's keys read from `secret`, as a
/// kubelet would resolve them; optional keys the Secret lacks are left out.
pub fn resolve_env(env: Vec<EnvVar>, secret: &Secret) -> Vec<(String, String)> {
    let data = secret.data.clone().unwrap_or_default();
    env.into_iter()
        .filter_map(|var| {
            let value = match (var.value, var.value_from) {
                (Some(value), _) => value,
                (None, Some(source)) => {
                    let key = source.secret_key_ref?.key;
                    String::from_utf8(data.get(&key)?.0.clone()).ok()?
                }
                (None, None) => String::new(),
            };
            Some((var.name, value))
        })
        .collect()
}
