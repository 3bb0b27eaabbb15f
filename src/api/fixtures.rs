//! AgentRuns for unit tests: one shape, so a new spec field is added once.

use super::{AgentRun, AgentRunSpec, AgentRunStatus, GitHubContext, Phase};

/// A spec asking about issue 7 of `repository` through installation 1.
pub fn spec(repository: &str) -> AgentRunSpec {
    AgentRunSpec {
        prompt: "why does the parser drop trailing commas?".into(),
        github: GitHubContext {
            installation_id: Some(1),
            repository: repository.into(),
            number: 7,
            pull_request: false,
            comment: None,
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

/// Run `name` of `repository` in namespace `ns`, in `phase`.
pub fn run(name: &str, repository: &str, phase: Phase) -> AgentRun {
    let mut run = AgentRun::new(name, spec(repository));
    run.metadata.namespace = Some("ns".into());
    run.status = Some(AgentRunStatus {
        phase: Some(phase),
        ..AgentRunStatus::default()
    });
    run
}
