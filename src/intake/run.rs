//! The AgentRun a delivery asks for: its name, labels and spec.

use std::collections::BTreeMap;

use crate::api::{
    AgentRun, AgentRunSpec, CommentKind, GitHubContext, PullRequestHead, SandboxBackend,
    SandboxSpec, TriggerComment,
};

/// Label with the repository owner, for `kubectl get agentruns -l`.
pub const OWNER_LABEL: &str = "smolpaws.dev/owner";
/// Label with the repository name (without the owner).
pub const REPO_LABEL: &str = "smolpaws.dev/repo";
/// Label with the issue or pull request number: with the two above, a thread.
pub const NUMBER_LABEL: &str = "smolpaws.dev/number";

/// The AgentRun name for a comment. It is a function of signed fields only
/// (the repository's id, the comment's kind and id), never of the unsigned
/// delivery id: a redelivery, or the same signed body replayed under a new
/// delivery id, collides with the first run instead of starting a second.
pub fn run_name(repository_id: u64, kind: CommentKind, comment_id: i64) -> String {
    let kind = match kind {
        CommentKind::IssueComment => "ic",
        CommentKind::ReviewComment => "rc",
    };
    format!("gh-{repository_id}-{kind}{comment_id}")
}

/// `value` if Kubernetes accepts it as a label value.
fn label_value(value: &str) -> Option<String> {
    let valid = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    valid.then(|| value.to_owned())
}

/// The labels that find a thread's runs.
fn thread_labels(repository: &str, number: i64) -> BTreeMap<String, String> {
    let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
    [
        (OWNER_LABEL, label_value(owner)),
        (REPO_LABEL, label_value(repo)),
        (NUMBER_LABEL, Some(number.to_string())),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

/// The run asked for by `comment` in `repository`.
pub struct RunRequest {
    /// The delivery id.
    pub delivery: String,
    /// The repository's id, which names the run with the comment's.
    pub repository_id: u64,
    /// The App installation, when the payload names it.
    pub installation: Option<u64>,
    /// `owner/name`.
    pub repository: String,
    /// The issue or pull request number.
    pub number: i64,
    /// Whether `number` is a pull request.
    pub pull_request: bool,
    /// The triggering comment.
    pub comment: TriggerComment,
    /// The pull request head, when the payload has it.
    pub head: Option<PullRequestHead>,
    /// The request, mention removed.
    pub prompt: String,
}

impl RunRequest {
    /// The AgentRun to create.
    pub fn into_agent_run(self, backend: SandboxBackend) -> AgentRun {
        let name = run_name(self.repository_id, self.comment.kind, self.comment.id);
        let mut run = AgentRun::new(
            &name,
            AgentRunSpec {
                prompt: self.prompt,
                github: GitHubContext {
                    installation_id: self.installation.and_then(|id| i64::try_from(id).ok()),
                    repository: self.repository.clone(),
                    number: self.number,
                    pull_request: self.pull_request,
                    comment: Some(self.comment),
                    head: self.head,
                    post_reply: true,
                    delivery_id: Some(self.delivery),
                    changes: None,
                    allow_workflow_changes: false,
                },
                sandbox: SandboxSpec {
                    backend,
                    ..SandboxSpec::default()
                },
                agent: None,
            },
        );
        run.metadata.labels = Some(thread_labels(&self.repository, self.number));
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_named_by_the_repository_and_the_comment() {
        assert_eq!(
            run_name(1296269, CommentKind::IssueComment, 1362467706),
            "gh-1296269-ic1362467706"
        );
        assert_ne!(
            run_name(1, CommentKind::IssueComment, 2),
            run_name(1, CommentKind::ReviewComment, 2),
            "the two kinds of comment count their ids apart"
        );
        let longest = run_name(u64::MAX, CommentKind::ReviewComment, i64::MAX);
        assert!(longest.len() <= 63, "{longest}");
    }

    #[test]
    fn labels_find_the_thread_and_skip_invalid_values() {
        let labels = thread_labels("Codertocat/Hello-World", 1);
        assert_eq!(labels[OWNER_LABEL], "Codertocat");
        assert_eq!(labels[REPO_LABEL], "Hello-World");
        assert_eq!(labels[NUMBER_LABEL], "1");
        let labels = thread_labels("octo/name_", 2);
        assert!(!labels.contains_key(REPO_LABEL), "ends with _: {labels:?}");
    }
}
