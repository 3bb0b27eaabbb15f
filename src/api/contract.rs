//! The result contract between a sandbox and the controller, in one place:
//! the environment the agent gets, the route it reports to, and the report
//! it sends. The agent, the result endpoint, the backends and the status
//! all use these items, so the two sides cannot drift apart; the prose
//! version is `docs/result-contract.md`.

use serde::{Deserialize, Serialize};

use super::{Outcome, RunResult, TokenUsage};

/// The variables a sandbox's agent is started with. The names double as
/// the keys of the run's Secret for the ones that are secrets.
pub mod env {
    /// The AgentRun's name.
    pub const RUN_NAME: &str = "SMOLPAWS_RUN_NAME";
    /// The AgentRun's namespace.
    pub const RUN_NAMESPACE: &str = "SMOLPAWS_RUN_NAMESPACE";
    /// The AgentRun's spec as JSON (never secrets), for runs started by
    /// hand; sandboxes fetch it from [`SPEC_URL`] instead.
    pub const RUN_SPEC: &str = "SMOLPAWS_RUN_SPEC";
    /// Where the agent fetches its run's spec, with its run credential: a
    /// spec can be far larger than one environment string may be (a 64 Ki
    /// character prompt in CJK is 192 KiB; Linux refuses a string over
    /// 128 KiB at exec).
    pub const SPEC_URL: &str = "SMOLPAWS_SPEC_URL";
    /// The base URL of the result endpoint; absent where the backend reads
    /// the report out of band (Daytona).
    pub const RESULT_URL: &str = "SMOLPAWS_RESULT_URL";
    /// The run's report token (a Secret key).
    pub const REPORT_TOKEN: &str = "SMOLPAWS_REPORT_TOKEN";
    /// The read-only installation token for the run's repository (a Secret
    /// key).
    pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
    /// The GitHub the agent clones from (git over HTTPS): the controller's.
    pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
    /// The GitHub REST API the agent reads: the controller's.
    pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
    /// The LLM provider's key (a Secret key). Sandboxes never get it: they
    /// call [`LLM_GATEWAY`] instead.
    pub const LLM_API_KEY: &str = "LLM_API_KEY";
    /// The operator's LLM gateway for this run, which adds the provider's
    /// key; the agent authenticates with its report token.
    pub const LLM_GATEWAY: &str = "SMOLPAWS_LLM_GATEWAY";
    /// The LLM model.
    pub const LLM_MODEL: &str = "LLM_MODEL";
    /// An OpenAI-compatible endpoint.
    pub const LLM_BASE_URL: &str = "LLM_BASE_URL";
    /// The LLM wire format (`openai`, `anthropic`).
    pub const LLM_PROVIDER: &str = "LLM_PROVIDER";
    /// The most tokens one LLM answer may have.
    pub const LLM_MAX_TOKENS: &str = "LLM_MAX_TOKENS";
    /// Whether requests carry `tool_choice` (`auto`, the default) or not
    /// (`omit`).
    pub const LLM_TOOL_CHOICE: &str = "LLM_TOOL_CHOICE";
    /// The sampling temperature.
    pub const LLM_TEMPERATURE: &str = "LLM_TEMPERATURE";
    /// The sampling seed.
    pub const LLM_SEED: &str = "LLM_SEED";
    /// The directory the repository is checked out into.
    pub const WORKSPACE: &str = "SMOLPAWS_WORKSPACE";
    /// Set when the workspace already is the checkout (`smolpaws dev`).
    pub const EXISTING_CHECKOUT: &str = "SMOLPAWS_EXISTING_CHECKOUT";
    /// The name the agent's commits are by: the App's bot login.
    pub const COMMIT_NAME: &str = "SMOLPAWS_COMMIT_NAME";
    /// The email the agent's commits are by: the App's bot noreply address.
    pub const COMMIT_EMAIL: &str = "SMOLPAWS_COMMIT_EMAIL";
}

/// Who the agent's commits are by. The controller, which knows the App,
/// tells the sandbox its bot identity, so GitHub shows the commits as the
/// App's; a run without an App (`smolpaws dev`) keeps [`CommitAuthor::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitAuthor {
    /// The name, `<slug>[bot]`.
    pub name: String,
    /// The email, `<bot user id>+<slug>[bot]@users.noreply.github.com`.
    pub email: String,
}

impl CommitAuthor {
    /// The bot identity GitHub gives App `slug` whose bot user has id
    /// `user_id`: what links a commit to the App's avatar and page.
    pub fn bot(slug: &str, user_id: u64) -> Self {
        Self {
            name: format!("{slug}[bot]"),
            email: format!("{user_id}+{slug}[bot]@users.noreply.github.com"),
        }
    }
}

impl Default for CommitAuthor {
    fn default() -> Self {
        Self {
            name: "smolpaws[bot]".to_owned(),
            email: "smolpaws[bot]@users.noreply.github.com".to_owned(),
        }
    }
}

/// The result endpoint's route, in axum's path syntax.
pub const RESULT_ROUTE: &str = "/v1/runs/{namespace}/{name}/result";

/// Where run `namespace/name` reports, under the endpoint's `base` URL.
pub fn result_url(base: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/v1/runs/{namespace}/{name}/result",
        base.trim_end_matches('/')
    )
}

/// The route the agent streams its steps to, in axum's path syntax.
pub const PROGRESS_ROUTE: &str = "/v1/runs/{namespace}/{name}/progress";

/// Where run `namespace/name` posts its [`Progress`], under the endpoint's
/// `base` URL.
pub fn progress_url(base: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/v1/runs/{namespace}/{name}/progress",
        base.trim_end_matches('/')
    )
}

/// The most steps a [`Progress`] keeps: the thread shows the last few.
pub const MAX_PROGRESS_STEPS: usize = 5;

/// The longest step, in characters.
pub const MAX_STEP_CHARS: usize = 160;

/// The agent's last steps, newest last, in words for the thread (``ran
/// `cargo test` (exit 1)``, ``edited `src/parser.rs` ``).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The steps; only the last [`MAX_PROGRESS_STEPS`] are kept.
    pub steps: Vec<String>,
}

impl Progress {
    /// The last steps, each on one line and cut to [`MAX_STEP_CHARS`].
    pub fn tidy(self) -> Vec<String> {
        let skip = self.steps.len().saturating_sub(MAX_PROGRESS_STEPS);
        self.steps
            .into_iter()
            .skip(skip)
            .map(|step| {
                let line: String = step.split_whitespace().collect::<Vec<_>>().join(" ");
                line.chars().take(MAX_STEP_CHARS).collect()
            })
            .filter(|step: &String| !step.is_empty())
            .collect()
    }
}

/// The route that serves a run its own spec, in axum's path syntax.
pub const SPEC_ROUTE: &str = "/v1/runs/{namespace}/{name}/spec";

/// Where run `namespace/name` fetches its spec, under the endpoint's `base`
/// URL.
pub fn spec_url(base: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/v1/runs/{namespace}/{name}/spec",
        base.trim_end_matches('/')
    )
}

/// The LLM gateway's base URL for run `namespace/name`, under the result
/// endpoint's `base` URL; the agent's LLM client appends
/// `chat/completions` or `messages`.
pub fn gateway_url(base: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/v1/runs/{namespace}/{name}/llm/",
        base.trim_end_matches('/')
    )
}

/// The error type the LLM gateway answers a run over its budget with, so
/// the agent can say so in its reply.
pub const BUDGET_EXHAUSTED: &str = "smolpaws_budget_exhausted";

/// The largest bundle a change may be: a change a person reviews, not a
/// vendored tree; a larger one is refused and nothing is pushed.
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024;

/// The largest report accepted: a reply of several times GitHub's comment
/// limit arrives whole (it is cut to fit when posted), beside a change of
/// up to [`MAX_BUNDLE_BYTES`] in base64.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024 + MAX_BUNDLE_BYTES * 4 / 3 + 4096;

/// What the agent reports: the body of the result route, or the last line
/// of its output where the backend reads the report out of band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The reply, Markdown.
    pub reply: String,
    /// Tokens spent.
    #[serde(default)]
    pub usage: TokenUsage,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How the session ended; `Finished` when absent.
    #[serde(default)]
    pub outcome: Outcome,
    /// The change the agent committed, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

/// The agent's change: its commits on top of the checked-out commit, as a
/// git bundle. A bundle carries commits and nothing else a repository
/// holds (no hooks, no config), and git itself checks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The commit the agent checked out: the bundle's one prerequisite.
    pub base: String,
    /// `git bundle create` output, base64 (standard alphabet, padded),
    /// holding one branch whose commits sit on `base`.
    pub bundle: String,
}

impl Change {
    /// The bundle's bytes, or why they cannot be taken.
    pub fn decode(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        if !is_commit_id(&self.base) {
            return Err("its base is not a commit id".into());
        }
        // Four base64 characters carry three bytes: refused before decoding.
        if self.bundle.len() / 4 * 3 > MAX_BUNDLE_BYTES + 3 {
            return Err(format!(
                "the change is larger than {} KiB",
                MAX_BUNDLE_BYTES / 1024
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.bundle)
            .map_err(|e| format!("the bundle is not base64: {e}"))?;
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the change is larger than {} KiB",
                MAX_BUNDLE_BYTES / 1024
            ));
        }
        Ok(bytes)
    }
}

/// Whether `text` is a full commit id (SHA-1 or SHA-256, lowercase hex).
pub fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl From<Report> for RunResult {
    /// The result without its change: the bundle is kept apart (see
    /// [`Change`]), and what the status records of it is the endpoint's.
    fn from(report: Report) -> Self {
        Self {
            reply: report.reply,
            usage: report.usage,
            model: report.model,
            outcome: report.outcome,
            change: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_as_the_document_shows_it() {
        let report: Report = serde_json::from_str(
            r#"{"reply":"hi","usage":{"promptTokens":1200,"completionTokens":80},"model":"m"}"#,
        )
        .expect("the documented report parses");
        assert_eq!(report.usage.prompt_tokens, 1200);
        let minimal: Report = serde_json::from_str(r#"{"reply":"hi"}"#).expect("usage is optional");
        assert_eq!(minimal.usage, TokenUsage::default());
        assert_eq!(minimal.model, None);
    }

    #[test]
    fn a_change_is_taken_only_as_a_small_bundle_on_a_commit() {
        use base64::Engine;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let base = "a".repeat(40);
        let change = |base: &str, bundle: String| Change {
            base: base.to_owned(),
            bundle,
        };
        assert_eq!(
            change(&base, encode(b"bundle")).decode(),
            Ok(b"bundle".to_vec())
        );
        assert!(change("HEAD", encode(b"x")).decode().is_err());
        assert!(change(&base, "not base64!".into()).decode().is_err());
        let big = encode(&vec![0; MAX_BUNDLE_BYTES + 1]);
        assert!(change(&base, big).decode().unwrap_err().contains("larger"));
    }

    #[test]
    fn the_url_joins_the_base_without_doubling_slashes() {
        assert_eq!(
            result_url("http://results:8081/", "ns", "run-1"),
            "http://results:8081/v1/runs/ns/run-1/result"
        );
    }
}
