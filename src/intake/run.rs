//! The AgentRun a delivery asks for: its name, labels and spec.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api::{
    AgentRun, AgentRunSpec, GitHubContext, PullRequestHead, SandboxBackend, SandboxSpec,
    TriggerComment,
};

/// Label with the repository owner, for `kubectl get agentruns -l`.
pub const OWNER_LABEL: &str = "smolpaws.dev/owner";
/// Label with the repository name (without the owner).
pub const REPO_LABEL: &str = "smolpaws.dev/repo";
/// Label with the issue or pull request number: with the two above, a thread.
pub const NUMBER_LABEL: &str = "smolpaws.dev/number";

/// The AgentRun name for a delivery. It is a function of the delivery id
/// alone, so a redelivery of the same event collides with the first run
/// instead of starting a second one.
pub fn run_name(delivery: &str) -> String {
    // GitHub's delivery ids are lowercase GUIDs, valid names as they are;
    // anything else is hashed into one.
    let readable = !delivery.is_empty()
        && delivery.len() <= 60
        && delivery
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !delivery.ends_with('-');
    if readable {
        format!("gh-{delivery}")
    } else {
        let digest = Sha256::digest(delivery.as_bytes());
        format!("gh-x{}", &hex::encode(digest)[..40])
    }
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
        let mut run = AgentRun::new(
            &run_name(&self.delivery),
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
    fn github_delivery_ids_name_runs_readably() {
        assert_eq!(
            run_name("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "gh-72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
    }

    #[test]
    fn other_delivery_ids_are_hashed_into_valid_distinct_names() {
        let names: Vec<String> = ["ABC", "abc-", "a/b", "", &"x".repeat(300)]
            .iter()
            .map(|d| run_name(d))
            .collect();
        for name in &names {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert_ne!(run_name("ABC"), run_name("abc"));
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
