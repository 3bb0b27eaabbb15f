//! What an AgentRun asks for. The spec is written once, by the intake or by
//! `smolpaws run`, and the apiserver refuses any later change to it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AgentRunStatus;

/// An agent run requested on GitHub or by hand.
// Clippy reads the repeated `type_` keys of separate printer columns as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smolpaws.dev",
    version = "v1alpha1",
    kind = "AgentRun",
    namespaced,
    status = "AgentRunStatus",
    derive = "PartialEq",
    shortname = "ar",
    category = "smolpaws",
    doc = "An AI coding-agent run triggered by a GitHub comment",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the run is in its life"
    ),
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.github.repository",
        description = "The repository, owner/name"
    ),
    printcolumn(
        name = "Issue",
        type_ = "integer",
        json_path = ".spec.github.number",
        description = "The issue or pull request number"
    ),
    printcolumn(
        name = "Author",
        type_ = "string",
        json_path = ".spec.github.comment.author",
        description = "Who asked"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.duration",
        description = "How long the run took, once it ended"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete the AgentRun and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct AgentRunSpec {
    /// The request for the agent: the comment body with the trigger mention
    /// removed.
    #[schemars(length(min = 1, max = 65536))]
    pub prompt: String,

    /// Where the request came from and where the reply goes.
    pub github: GitHubContext,

    /// Where the agent runs.
    #[serde(default)]
    pub sandbox: SandboxSpec,

    /// How the agent works. Never holds secrets: those reach the sandbox
    /// through the per-run Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentOptions>,
}

/// The GitHub thread a run belongs to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.head) || self.pullRequest").message("head is only set for pull requests"))]
#[x_kube(validation = Rule::new("!has(self.comment) || self.comment.kind != 'ReviewComment' || self.pullRequest").message("a review comment belongs to a pull request: set pullRequest"))]
#[serde(rename_all = "camelCase")]
pub struct GitHubContext {
    /// The GitHub App installation that received the comment. Runs created by
    /// hand may leave it out; the controller then looks it up for the
    /// repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub installation_id: Option<i64>,

    /// The repository, as `owner/name`.
    #[schemars(regex(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(_[A-Za-z0-9]{1,39})?/[A-Za-z0-9._-]{1,100}$"
    ))]
    pub repository: String,

    /// The issue or pull request number.
    #[schemars(range(min = 1))]
    pub number: i64,

    /// Whether `number` is a pull request rather than an issue.
    #[serde(default)]
    pub pull_request: bool,

    /// The comment that asked for the run; absent for runs created by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<TriggerComment>,

    /// The pull request head to check out, when the webhook carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<PullRequestHead>,

    /// Whether the reply is posted in the thread; when false it is kept in
    /// the run's status only (`smolpaws run --no-post`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub post_reply: bool,

    /// The `X-GitHub-Delivery` id of the webhook that created the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub delivery_id: Option<String>,
    /// What becomes of a change the agent made; the operator's default
    /// (`SMOLPAWS_CHANGES`, the chart's `github.changes`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesMode>,
    /// Whether the change may touch `.github/workflows/`: a workflow runs
    /// with the repository's secrets, so a change to one is refused unless
    /// whoever made the run says so.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_workflow_changes: bool,
}

/// What becomes of the agent's change.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum ChangesMode {
    /// Only the reply: the change is described, never pushed.
    Reply,
    /// The change is pushed to a branch (a pull request's own head branch
    /// when the run came from one); no pull request is opened.
    Branch,
    /// As `branch`, and a new branch gets a draft pull request.
    #[default]
    PullRequest,
}

impl std::str::FromStr for ChangesMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "reply" => Ok(Self::Reply),
            "branch" => Ok(Self::Branch),
            "pullRequest" | "pull-request" => Ok(Self::PullRequest),
            other => Err(format!(
                "{other} is not a changes mode: use reply, branch or pullRequest"
            )),
        }
    }
}

fn yes() -> bool {
    true
}

// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_true(value: &bool) -> bool {
    *value
}

// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(value: &bool) -> bool {
    !*value
}

/// The comment that mentioned smolpaws.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(self.kind == 'ReviewComment') == has(self.review)").message("review is required for review comments and only for them"))]
#[serde(rename_all = "camelCase")]
pub struct TriggerComment {
    /// GitHub's id of the comment.
    #[schemars(range(min = 1))]
    pub id: i64,

    /// Which kind of comment it is; decides how the reply is posted.
    pub kind: CommentKind,

    /// The comment's page on GitHub.
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub html_url: String,

    /// The login of the comment's author.
    #[schemars(regex(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(_[A-Za-z0-9]{1,39})?(\[bot\])?$"
    ))]
    pub author: String,

    /// Where in the diff a review comment sits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewContext>,
}

/// The two kinds of comment that can trigger a run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommentKind {
    /// A comment in an issue or pull request conversation; answered with a
    /// new comment in the same conversation.
    IssueComment,
    /// A comment on a line of a pull request diff; answered in its thread.
    ReviewComment,
}

/// The diff position of a pull request review comment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewContext {
    /// The file the comment is on, relative to the repository root.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,

    /// The line of the diff the comment is on; absent when GitHub has no line
    /// for it (an outdated or file-level comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub line: Option<i64>,

    /// Which side of the diff `line` counts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<DiffSide>,

    /// The hunk of the diff around the comment, as GitHub shows it.
    #[schemars(length(max = 262144))]
    pub diff_hunk: String,

    /// The commit the comment was made on.
    #[schemars(regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub commit_id: String,

    /// The first comment of the thread when the trigger is itself a reply;
    /// GitHub accepts replies only to a thread's first comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub in_reply_to: Option<i64>,
}

/// The side of a diff, in GitHub's spelling.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiffSide {
    /// The base of the pull request (deleted lines).
    Left,
    /// The head of the pull request (added and context lines).
    Right,
}

/// The head of a pull request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct PullRequestHead {
    /// The branch name.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1, max = 1024))]
    pub git_ref: String,

    /// The commit the agent checks out.
    #[schemars(regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub sha: String,
}

/// The sandbox a run gets.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Which backend runs the sandbox.
    #[serde(default)]
    pub backend: SandboxBackend,

    /// The sandbox image; the operator's default when absent. Any image
    /// works: the agent binary is copied into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// CPU and memory for the sandbox; the operator's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The longest the agent may run, in seconds; the operator's default when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<i64>,
}

/// The sandbox backends.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SandboxBackend {
    /// A hardened pod in the run's namespace.
    #[default]
    Pod,
    /// A Daytona sandbox.
    Daytona,
    /// A process on the operator's own machine, not isolated at all: only
    /// `smolpaws dev` runs these.
    Local,
}

/// How the agent works on the request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentOptions {
    /// The LLM model; the operator's `LLM_MODEL` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,

    /// The most LLM round trips the agent may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_iterations: Option<i32>,

    /// The most tokens (prompt and completion together) the agent may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<i64>,
}
