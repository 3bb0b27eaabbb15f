//! The pod backend: a run's agent in a hardened pod of the run's namespace,
//! and how a pod's status reads as a sandbox state.
//!
//! Any image can be the sandbox: an init container copies the static
//! `smolpaws` binary from the smolpaws image into an emptyDir, and the main
//! container runs `smolpaws agent` from there. Credentials reach the agent
//! only through the per-run Secret; the pod spec holds none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use tracing::info;

use super::env::AgentEnvironment;
use super::{Launch, Polls, Provisioned, Sandbox, SandboxError, SandboxState, owned};
use crate::api::AgentRun;

/// Where the agent binary lands inside the sandbox.
pub const AGENT_BINARY: &str = "/opt/smolpaws/bin/smolpaws";
/// The agent's working directory: the checkout lives here.
pub const WORKSPACE: &str = "/workspace";

/// The name of a run's pod.
pub fn pod_name(run: &AgentRun) -> String {
    owned::run_name(run)
}

/// Sandbox pods, made through one client.
pub struct PodSandboxes {
    client: Client,
    environment: Arc<AgentEnvironment>,
}

impl PodSandboxes {
    /// Pods made with `client`, their agents told `environment`.
    pub fn new(client: Client, environment: Arc<AgentEnvironment>) -> Self {
        Self {
            client,
            environment,
        }
    }

    fn pods(&self, run: &AgentRun) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &run.namespace().unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl Sandbox for PodSandboxes {
    fn planned_name(&self, run: &AgentRun) -> Option<String> {
        Some(pod_name(run))
    }

    async fn provision(&self, launch: Launch<'_>) -> Result<Provisioned, SandboxError> {
        let run = launch.run;
        let api = self.pods(run);
        let name = pod_name(run);
        let found = if launch.fresh {
            None
        } else {
            api.get_opt(&name).await?
        };
        let (pod, created) = match found {
            Some(pod) if !owned::is_owned_by(&pod.metadata, run) => {
                return Ok(Provisioned::Failed {
                    reason: "SandboxConflict",
                    message: format!(
                        "a pod named {name} exists and does not belong to this run; delete it, or ask again"
                    ),
                });
            }
            Some(pod) => (pod, false),
            None => {
                let pod = pod(&launch, &self.environment);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(pod) => {
                        info!(pod = %name, "created the sandbox pod");
                        (pod, true)
                    }
                    // Made meanwhile: the next provisioning step looks at it.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => {
                        return Ok(Provisioned::Waiting {
                            reason: None,
                            created: false,
                        });
                    }
                    Err(kube::Error::Api(status)) if is_refusal(&status) => {
                        return Ok(Provisioned::Failed {
                            reason: "SandboxRejected",
                            message: format!(
                                "Kubernetes refused the sandbox pod: {}",
                                status.message
                            ),
                        });
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        Ok(match state(&pod) {
            SandboxState::Waiting { reason } => Provisioned::Waiting { reason, created },
            SandboxState::Running | SandboxState::Exited { .. } => Provisioned::Started {
                at: pod
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.clone())
                    .unwrap_or_else(crate::api::now),
                name: None,
                created,
            },
        })
    }

    async fn state(&self, run: &AgentRun) -> Result<Option<SandboxState>, SandboxError> {
        Ok(self
            .pods(run)
            .get_opt(&pod_name(run))
            .await?
            .as_ref()
            .map(state))
    }

    async fn stop(&self, run: &AgentRun) -> Result<(), SandboxError> {
        match self
            .pods(run)
            .delete(&pod_name(run), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Pods are watched, so polls only catch what a lost event missed.
    fn polls(&self) -> Polls {
        Polls {
            starting: Duration::from_secs(10),
            running: Duration::from_secs(30),
        }
    }
}

/// Whether the apiserver refused the pod itself (invalid, forbidden by
/// policy or quota), which no retry of the same pod fixes.
fn is_refusal(status: &kube::core::Status) -> bool {
    status.is_invalid() || status.is_forbidden() || status.reason == "BadRequest"
}

/// An emptyDir that may hold at most `size` of the node's disk: a sandbox
/// filling it is evicted rather than filling the node.
fn volume(name: &str, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

/// The container hardening every sandbox container gets.
fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The sandbox pod of `launch`'s run, whose agent is told `environment`.
pub fn pod(launch: &Launch<'_>, environment: &AgentEnvironment) -> Pod {
    let run = launch.run;
    let timeout_seconds = i64::try_from(launch.timeout.as_secs()).unwrap_or(i64::MAX);
    let settings = &environment.settings;
    let mut agent_env = environment.for_pod(run, launch.author);
    // The root filesystem is read-only; /tmp is a writable volume.
    agent_env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "HOME".into(),
        value: Some("/tmp".into()),
        ..Default::default()
    });

    let resources = run.spec.sandbox.resources.clone().unwrap_or_else(|| {
        let amounts = BTreeMap::from([
            ("cpu".to_owned(), Quantity(settings.cpu.clone())),
            ("memory".to_owned(), Quantity(settings.memory.clone())),
        ]);
        ResourceRequirements {
            requests: Some(amounts.clone()),
            limits: Some(amounts),
            ..ResourceRequirements::default()
        }
    });
    let bin_dir = AGENT_BINARY.rsplit_once('/').map_or("/", |(dir, _)| dir);

    Pod {
        metadata: owned::metadata(run, pod_name(run)),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(timeout_seconds),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            runtime_class_name: settings.runtime_class.clone(),
            node_selector: (!settings.node_selector.is_empty())
                .then(|| settings.node_selector.iter().cloned().collect()),
            tolerations: settings.tolerations.as_ref().map(|t| t.0.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![Container {
                name: "install-agent".into(),
                image: Some(settings.agent_image.clone()),
                command: Some(vec![
                    "/smolpaws".into(),
                    "install".into(),
                    AGENT_BINARY.into(),
                ]),
                volume_mounts: Some(vec![mount("agent-bin", bin_dir)]),
                security_context: Some(locked_down()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_owned(), Quantity("50m".into())),
                        ("memory".to_owned(), Quantity("32Mi".into())),
                    ])),
                    limits: Some(BTreeMap::from([
                        ("cpu".to_owned(), Quantity("200m".into())),
                        ("memory".to_owned(), Quantity("64Mi".into())),
                    ])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: "agent".into(),
                image: Some(
                    run.spec
                        .sandbox
                        .image
                        .clone()
                        .unwrap_or_else(|| settings.image.clone()),
                ),
                command: Some(vec![AGENT_BINARY.into(), "agent".into()]),
                working_dir: Some(WORKSPACE.into()),
                env: Some(agent_env),
                resources: Some(resources),
                volume_mounts: Some(vec![
                    mount("agent-bin", bin_dir),
                    mount("workspace", WORKSPACE),
                    mount("tmp", "/tmp"),
                ]),
                security_context: Some(locked_down()),
                ..Container::default()
            }],
            volumes: Some(vec![
                // The binary alone, and a scratch /tmp (also HOME).
                volume("agent-bin", "256Mi"),
                volume("workspace", &settings.workspace_size),
                volume("tmp", "2Gi"),
            ]),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Reads a pod's status the way a kubelet writes it.
pub fn state(pod: &Pod) -> SandboxState {
    let Some(status) = &pod.status else {
        return SandboxState::Waiting { reason: None };
    };
    let agent = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "agent")
        .and_then(|c| c.state.as_ref());
    if let Some(terminated) = agent.and_then(|s| s.terminated.as_ref()) {
        return SandboxState::Exited {
            code: terminated.exit_code,
            reason: terminated.reason.clone(),
        };
    }
    match status.phase.as_deref() {
        Some("Failed") => SandboxState::Exited {
            code: -1,
            reason: status.reason.clone(),
        },
        Some("Succeeded") => SandboxState::Exited {
            code: 0,
            reason: status.reason.clone(),
        },
        Some("Running") if agent.is_some_and(|s| s.running.is_some()) => SandboxState::Running,
        _ => {
            let waiting = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
            let unschedulable = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| c.reason.clone());
            SandboxState::Waiting {
                reason: waiting.or(unschedulable),
            }
        }
    }
}
