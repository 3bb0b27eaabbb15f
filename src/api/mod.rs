//! The `AgentRun` custom resource (`smolpaws.dev/v1alpha1`): the single source
//! of truth for one agent run, from the comment that asked for it to the reply
//! that answered it.
//!
//! These types know nothing of the intake or the controller; they describe the
//! API and the rules the apiserver enforces on it.

pub mod contract;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod llm_refusal;
mod phase;
mod spec;
mod status;

pub use phase::Phase;
pub use spec::{
    AgentOptions, AgentRun, AgentRunSpec, ChangesMode, CommentKind, DiffSide, GitHubContext,
    PullRequestHead, ReviewContext, SandboxBackend, SandboxSpec, TriggerComment,
};
pub use status::{
    AgentRunStatus, ChangeDelivery, ChangeRef, CheckRunRef, CheckRunState, DeliveryOutcome,
    GatewayUsage, Outcome, PostedComment, PullRequestRef, RunProgress, RunResult, SandboxRef,
    TokenUsage, now,
};

/// The API group of every smolpaws resource.
pub const GROUP: &str = "smolpaws.dev";

/// The AgentRun CustomResourceDefinition as YAML, the text of `crds/agentrun.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&AgentRun::crd())
}
