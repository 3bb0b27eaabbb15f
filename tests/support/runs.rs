//! Waiting on AgentRuns, as every story about a run does.

use std::time::Duration;

use kube::api::Api;
use kube::runtime::wait::await_condition;
use smolpaws::api::{AgentRun, AgentRunSpec, CommentKind, GitHubContext, TriggerComment};

/// A run asked for by `author`'s comment `comment_id` on issue 7 of
/// `repository` (installation 1).
pub fn issue_spec(repository: &str, comment_id: i64, author: &str) -> AgentRunSpec {
    AgentRunSpec {
        prompt: "why does the parser drop trailing commas?".into(),
        github: GitHubContext {
            installation_id: Some(1),
            repository: repository.into(),
            number: 7,
            pull_request: false,
            comment: Some(TriggerComment {
                id: comment_id,
                kind: CommentKind::IssueComment,
                html_url: format!(
                    "https://github.com/{repository}/issues/7#issuecomment-{comment_id}"
                ),
                author: author.into(),
                review: None,
            }),
            head: None,
            post_reply: true,
            delivery_id: None,
            changes: None,
            allow_workflow_changes: false,
        },
        sandbox: Default::default(),
        agent: None,
    }
}

/// Waits (up to a minute) until run `name` satisfies `done`, described as
/// `what` when it never does.
pub async fn until(
    api: &Api<AgentRun>,
    name: &str,
    what: &str,
    done: impl Fn(&AgentRun) -> bool,
) -> AgentRun {
    let wait = await_condition(api.clone(), name, move |run: Option<&AgentRun>| {
        run.is_some_and(&done)
    });
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(Some(run))) => run,
        _ => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "{name} never became {what}; it is {:#?}",
                now.map(|r| r.status)
            );
        }
    }
}

/// Whether the run's reply is recorded.
pub fn replied(run: &AgentRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.reply.is_some())
}

/// The reason of the run's Finished condition ("" before it finishes).
pub fn finished_reason(run: &AgentRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Finished"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}
