//! The operator's sandbox settings, from flags or environment variables.

use clap::Args;
use k8s_openapi::api::core::v1::Toleration;

/// The operator's settings for sandboxes: the pod's image and placement,
/// and what every backend's agent gets (resources by default, the LLM,
/// extra variables).
#[derive(Args, Clone, Debug)]
pub struct SandboxArgs {
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

    /// The most the workspace (the checkout and what the agent writes in
    /// it) may hold on the node's disk before the kubelet evicts the pod.
    #[arg(
        long = "sandbox-workspace-size",
        env = "SMOLPAWS_SANDBOX_WORKSPACE_SIZE",
        default_value = "10Gi"
    )]
    pub workspace_size: String,

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
