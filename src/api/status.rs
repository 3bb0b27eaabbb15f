//! What happened to an AgentRun. Only the controller writes the status, through
//! the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AgentRunSpec, Phase, PullRequestHead, SandboxBackend};

/// The observed state of an AgentRun.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunStatus {
    /// Where the run is in its life; a run without a phase is Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The conditions of the run, in Kubernetes API-convention form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The pull request head the agent checks out, read when the run was
    /// first seen, for a comment whose webhook did not carry it: what the
    /// commenter saw, not whatever is pushed while the run waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<PullRequestHead>,

    /// The sandbox that runs, or ran, the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxRef>,

    /// When the agent started working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// How long the run held its sandbox, in seconds: what a hosted sandbox
    /// costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_seconds: Option<i64>,

    /// How long the run took, for people (`kubectl get`), e.g. `2m13s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,

    /// What the agent reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,

    /// What the agent spent through the operator's LLM gateway, as the
    /// operator counted it (the sandbox cannot change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<GatewayUsage>,

    /// What became of the agent's change; once set, it is never pushed
    /// again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeDelivery>,

    /// What the agent is doing, and the comment in the thread that shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,

    /// The reply posted on GitHub; once set, the reply is never posted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<PostedComment>,

    /// The check run that shows a pull request's run in its checks; once
    /// set, it is updated, never created again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckRunRef>,

    /// A human-readable account of the latest transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The sandbox of a run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRef {
    /// The backend that holds the sandbox.
    pub backend: SandboxBackend,
    /// The pod name, the Daytona sandbox id, or (dev mode) the local
    /// sandbox's directory.
    pub name: String,
}

/// The agent's answer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// The reply, as Markdown for a GitHub comment.
    pub reply: String,
    /// The tokens the agent spent.
    pub usage: TokenUsage,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How the agent's session ended; the reply is posted either way.
    #[serde(default)]
    pub outcome: Outcome,
    /// The change the agent handed over, when it made one. Its bundle is
    /// kept in the run's change Secret, too large for a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeRef>,
}

/// The agent's change as the result endpoint took it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRef {
    /// The commit the agent checked out, which the change builds on.
    pub base: String,
    /// The SHA-256 of the bundle, hex: the bundle pushed is the one taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the endpoint did not take the bundle (too large, not base64);
    /// the thread is told, and nothing is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A run's progress: the agent's last steps (its own words, through the
/// result endpoint) and the comment that shows them in the thread.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// The agent's last few steps, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// The progress comment; once set, it is edited, never posted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<PostedComment>,
    /// The text the comment shows now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<String>,
    /// When it was last written, for the rate limit of its edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_at: Option<Time>,
}

/// What became of a change.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeDelivery {
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// The branch it was pushed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit the branch points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The pull request opened for it (or found, after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRef>,
    /// What the thread is told, Markdown.
    pub summary: String,
}

/// How a change's delivery ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Pushed (and a pull request opened, when one was asked for).
    Pushed,
    /// Refused by the controller's checks; nothing was pushed.
    Refused,
    /// The git server refused the push (a protected branch, say).
    Rejected,
}

/// A pull request smolpaws opened.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRef {
    /// Its number.
    pub number: i64,
    /// Its page on GitHub.
    pub html_url: String,
}

/// How an agent's session ended. Every outcome comes with a reply; the run
/// fails for the ones where the agent could not do its work, so a reply
/// written around a failure is never counted a success.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Outcome {
    /// The model finished and replied.
    #[default]
    Finished,
    /// The agent stopped at one of its limits (iterations, tokens, time, or
    /// the same step repeated) and replied with what it had.
    LimitReached,
    /// The LLM failed for good (refused, unreachable, unreadable answers).
    #[serde(rename = "LLMFailed")]
    LlmFailed,
    /// The conversation outgrew the model's context window.
    ContextExhausted,
}

impl Outcome {
    /// Whether a run with this outcome failed.
    pub fn failed(self) -> bool {
        matches!(self, Self::LlmFailed | Self::ContextExhausted)
    }

    /// The run's Finished condition reason, as the API spells it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Finished => "Succeeded",
            Self::LimitReached => "LimitReached",
            Self::LlmFailed => "LLMFailed",
            Self::ContextExhausted => "ContextExhausted",
        }
    }

    /// The run's status message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Finished => "the agent replied",
            Self::LimitReached => "the agent stopped at a limit and replied with what it had",
            Self::LlmFailed => "the LLM failed; the agent replied with what it had done",
            Self::ContextExhausted => {
                "the conversation outgrew the model's context; the agent replied with what it had done"
            }
        }
    }
}

/// Tokens spent on the LLM.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Tokens sent to the model.
    pub prompt_tokens: i64,
    /// Tokens the model produced.
    pub completion_tokens: i64,
}

/// A run's use of the LLM gateway.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayUsage {
    /// LLM requests the gateway forwarded.
    pub requests: i64,
    /// Tokens sent to the model, as the provider counted them.
    pub prompt_tokens: i64,
    /// Tokens the model produced, as the provider counted them.
    pub completion_tokens: i64,
    /// The provider's last error, as it answered: for people reading the
    /// run, never passed back to the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A comment smolpaws posted on GitHub.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostedComment {
    /// GitHub's id of the comment.
    pub id: i64,
    /// The comment's page on GitHub.
    pub html_url: String,
}

/// A check run smolpaws created on a pull request's head.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckRunRef {
    /// GitHub's id of the check run.
    pub id: i64,
    /// The check run's page on GitHub.
    pub html_url: String,
    /// What it shows now.
    pub state: CheckRunState,
}

/// What a check run shows: GitHub's `status`, and for a completed one its
/// `conclusion`, in one value so a queued run cannot carry a conclusion.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckRunState {
    /// The run waits for a sandbox.
    Queued,
    /// The sandbox starts, or the agent works.
    InProgress,
    /// The run succeeded and replied.
    Success,
    /// The run failed; the reply says why.
    Failure,
    /// The run hit its pending or running timeout.
    TimedOut,
    /// The run was deleted before it finished.
    Cancelled,
}

impl CheckRunState {
    /// Whether the check run is over: nothing changes it after.
    pub fn is_completed(self) -> bool {
        !matches!(self, Self::Queued | Self::InProgress)
    }
}

/// The current time as Kubernetes writes it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl super::AgentRun {
    /// The run's phase; a run the controller has not seen yet is Pending.
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|status| status.phase)
            .unwrap_or_default()
    }

    /// The spec the run's agent works from: as written, with the pull
    /// request head pinned when the run was first seen, if the webhook did
    /// not carry one.
    pub fn agent_spec(&self) -> AgentRunSpec {
        let mut spec = self.spec.clone();
        if spec.github.head.is_none() {
            spec.github.head = self.status.as_ref().and_then(|s| s.head.clone());
        }
        spec
    }
}
