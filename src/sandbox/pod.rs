//! The hardened sandbox pod of a run, its per-run Secret, and how a pod's
//! status reads as a sandbox state.
//!
//! Any image can be the sandbox: an init container copies the static
//! `smolpaws` binary from the smolpaws image into an emptyDir, and the main
//! container runs `smolpaws agent` from there. Credentials reach the agent
//! only through the per-run Secret; the pod spec holds none.

use std::collections::BTreeMap;

use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use kube::api::ObjectMeta;
use secrecy::{ExposeSecret, SecretString};

use super::SandboxState;
use crate::api::AgentRun;

/// Where the agent binary lands inside the sandbox.
pub const AGENT_BINARY: &str = "/opt/smolpaws/bin/smolpaws";
/// The agent's working directory: the checkout lives here.
pub const WORKSPACE: &str = "/workspace";
/// The label naming the run a pod or Secret belongs to.
pub const RUN_LABEL: &str = "smolpaws.dev/run";

/// Secret keys the agent reads.
pub mod keys {
    /// The repository-scoped GitHub token.
    pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
    /// The token that authenticates the agent's report of its result.
    pub const REPORT_TOKEN: &str = "SMOLPAWS_REPORT_TOKEN";
    /// The LLM provider's key.
    pub const LLM_API_KEY: &str = "LLM_API_KEY";
}

/// The operator's settings for sandbox pods.
#[derive(Args, Clone, Debug)]
pub struct PodSettings {
    /// The sandbox image when a run names none. It needs git for the checkout.
    #[arg(
        long = "sandbox-image",
        env = "SMOLPAWS_SANDBOX_IMAGE",
        default_value = "docker.io/library/buildpack-deps:bookworm-scm"
    )]
    pub image: String,

    /// The smolpaws image, whose binary the init container copies into the
    /// sandbox.
    #[arg(
        long = "agent-image",
        env = "SMOLPAWS_AGENT_IMAGE",
        default_value = concat!("ghcr.io/smolpaws/smolpaws:", env!("CARGO_PKG_VERSION"))
    )]
    pub agent_image: String,

    /// CPU for a sandbox when the run sets no resources (request and limit).
    #[arg(
        long = "sandbox-cpu",
        env = "SMOLPAWS_SANDBOX_CPU",
        default_value = "1"
    )]
    pub cpu: String,

    /// Memory for a sandbox when the run sets no resources (request and limit).
    #[arg(
        long = "sandbox-memory",
        env = "SMOLPAWS_SANDBOX_MEMORY",
        default_value = "2Gi"
    )]
    pub memory: String,

    /// A RuntimeClass for sandboxes (gVisor, Kata) for stronger isolation.
    #[arg(long = "sandbox-runtime-class", env = "SMOLPAWS_SANDBOX_RUNTIME_CLASS")]
    pub runtime_class: Option<String>,

    /// Node labels sandboxes must run on, as key=value, comma separated.
    #[arg(long = "sandbox-node-selector", env = "SMOLPAWS_SANDBOX_NODE_SELECTOR", value_delimiter = ',', value_parser = key_value)]
    pub node_selector: Vec<(String, String)>,

    /// Tolerations for sandboxes, as a JSON array of Kubernetes tolerations.
    #[arg(long = "sandbox-tolerations", env = "SMOLPAWS_SANDBOX_TOLERATIONS", value_parser = tolerations)]
    pub tolerations: Option<Tolerations>,

    /// Extra environment for the agent, as NAME=value, comma separated.
    #[arg(long = "sandbox-env", env = "SMOLPAWS_SANDBOX_ENV", value_delimiter = ',', value_parser = key_value)]
    pub extra_env: Vec<(String, String)>,

    /// The agent's LLM.
    #[command(flatten)]
    pub llm: crate::agent::llm::LlmArgs,
}

/// Tolerations parsed from JSON.
#[derive(Clone, Debug)]
pub struct Tolerations(pub Vec<Toleration>);

fn tolerations(text: &str) -> Result<Tolerations, String> {
    serde_json::from_str(text)
        .map(Tolerations)
        .map_err(|e| format!("not a JSON array of tolerations ({e}), e.g. [{{\"key\":\"sandbox\",\"operator\":\"Exists\"}}]"))
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=value"))
}

/// The name of a run's pod.
pub fn pod_name(run: &AgentRun) -> String {
    run.metadata.name.clone().unwrap_or_default()
}

/// The name of a run's Secret.
pub fn secret_name(run: &AgentRun) -> String {
    format!("{}-run", pod_name(run))
}

fn owned_metadata(run: &AgentRun, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: run.metadata.namespace.clone(),
        labels: Some(BTreeMap::from([
            (RUN_LABEL.to_owned(), pod_name(run)),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "smolpaws".to_owned(),
            ),
        ])),
        owner_references: run.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The credentials of one run.
pub struct RunCredentials {
    /// The repository-scoped GitHub token, when GitHub is configured.
    pub github_token: Option<SecretString>,
    /// The token the agent must present when it reports its result.
    pub report_token: SecretString,
}

/// The per-run Secret, owned by the run.
pub fn secret(run: &AgentRun, credentials: &RunCredentials, settings: &PodSettings) -> Secret {
    let entries = [
        (keys::GITHUB_TOKEN, credentials.github_token.as_ref()),
        (keys::REPORT_TOKEN, Some(&credentials.report_token)),
        (keys::LLM_API_KEY, settings.llm.api_key.as_ref()),
    ];
    let data = entries
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value?.expose_secret().as_bytes().to_vec();
            Some((key.to_owned(), ByteString(value)))
        })
        .collect();
    Secret {
        metadata: owned_metadata(run, secret_name(run)),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn secret_env(run: &AgentRun, key: &str) -> EnvVar {
    EnvVar {
        name: key.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name(run),
                key: key.into(),
                // Keys are absent when not configured (no GitHub, no LLM key).
                optional: Some(key != keys::REPORT_TOKEN),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
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

/// The agent's environment, every backend's: the run, where to report, the
/// LLM settings, and the per-run Secret's keys as references to it.
pub fn agent_env(run: &AgentRun, settings: &PodSettings, result_url: &str) -> Vec<EnvVar> {
    let spec_json = serde_json::to_string(&run.spec).expect("an AgentRun spec serializes");
    let mut agent_env = vec![
        env("SMOLPAWS_RUN_NAME", pod_name(run)),
        env(
            "SMOLPAWS_RUN_NAMESPACE",
            run.metadata.namespace.clone().unwrap_or_default(),
        ),
        env("SMOLPAWS_RUN_SPEC", spec_json),
        env("SMOLPAWS_RESULT_URL", result_url),
        secret_env(run, keys::GITHUB_TOKEN),
        secret_env(run, keys::REPORT_TOKEN),
        secret_env(run, keys::LLM_API_KEY),
    ];
    let model = run
        .spec
        .agent
        .as_ref()
        .and_then(|agent| agent.model.clone())
        .or_else(|| settings.llm.model.clone());
    for (name, value) in [
        ("LLM_MODEL", model),
        ("LLM_BASE_URL", settings.llm.base_url.clone()),
        ("LLM_PROVIDER", settings.llm.provider.clone()),
    ] {
        if let Some(value) = value {
            agent_env.push(env(name, value));
        }
    }
    agent_env.extend(settings.extra_env.iter().map(|(k, v)| env(k, v.clone())));
    agent_env
}

/// The sandbox pod of `run`, which reports to `result_url` and may run for
/// `timeout_seconds`.
pub fn pod(run: &AgentRun, settings: &PodSettings, result_url: &str, timeout_seconds: i64) -> Pod {
    let mut agent_env = agent_env(run, settings, result_url);
    // The root filesystem is read-only; /tmp is a writable volume.
    agent_env.push(env("HOME", "/tmp"));

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
        metadata: owned_metadata(run, pod_name(run)),
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
                volume("agent-bin"),
                volume("workspace"),
                volume("tmp"),
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
