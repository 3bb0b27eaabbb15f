//! `POST /run`: the old runner's one-shot job. The agent works on a prompt
//! (in a checkout of a repository, when the job names one) to the end, and
//! the answer is the response.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{Refusal, Runner};
use crate::agent::{self, Checkout};
use crate::api::{AgentOptions, AgentRunSpec, CommentKind, GitHubContext, TriggerComment};

/// The job, in the seed's camelCase (older spellings accepted).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    prompt: String,
    #[serde(default, alias = "repo")]
    repository: Option<String>,
    #[serde(default, alias = "issue", alias = "issueNumber", alias = "prNumber")]
    number: Option<i64>,
    #[serde(default, alias = "isPullRequest")]
    pull_request: bool,
    #[serde(default)]
    comment: Option<JobComment>,
    #[serde(default, alias = "githubToken", alias = "token")]
    installation_token: Option<SecretString>,
    #[serde(default)]
    model: Option<String>,
}

/// The comment a job answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobComment {
    id: i64,
    author: String,
    #[serde(default, alias = "htmlUrl")]
    url: Option<String>,
}

fn owner_and_name(repository: &str) -> bool {
    let Some((owner, name)) = repository.split_once('/') else {
        return false;
    };
    let fine = |part: &str, extra: &[char]| {
        !part.is_empty()
            && part.len() <= 100
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c))
    };
    fine(owner, &[]) && fine(name, &['.', '_'])
}

impl Job {
    /// The run spec the job describes, or the field that is wrong.
    fn spec(&self) -> Result<AgentRunSpec, Refusal> {
        if self.prompt.trim().is_empty() {
            return Err(Refusal::field("prompt", "must not be empty"));
        }
        let repository = match &self.repository {
            Some(repository) if !owner_and_name(repository) => {
                return Err(Refusal::field("repository", "must be owner/name"));
            }
            Some(repository) => repository.clone(),
            None => String::new(),
        };
        let number = match (self.number, self.repository.is_some()) {
            (Some(n), _) if n < 1 => return Err(Refusal::field("number", "must be at least 1")),
            (Some(n), _) => n,
            (None, true) => return Err(Refusal::field("number", "is required with a repository")),
            (None, false) => 0,
        };
        Ok(AgentRunSpec {
            prompt: self.prompt.clone(),
            github: GitHubContext {
                installation_id: None,
                repository,
                number,
                pull_request: self.pull_request,
                comment: self.comment.as_ref().map(|c| TriggerComment {
                    id: c.id,
                    kind: CommentKind::IssueComment,
                    html_url: c.url.clone().unwrap_or_default(),
                    author: c.author.clone(),
                    review: None,
                }),
                head: None,
                post_reply: false,
                delivery_id: None,
                changes: None,
                allow_workflow_changes: false,
            },
            sandbox: Default::default(),
            agent: self.model.clone().map(|model| AgentOptions {
                model: Some(model),
                ..AgentOptions::default()
            }),
        })
    }
}

/// Runs one job to its end.
pub async fn run(State(runner): State<Arc<Runner>>, body: Bytes) -> Response {
    let job: Job = match super::body(&body) {
        Ok(job) => job,
        Err(refusal) => return refusal.into_response(),
    };
    let spec = match job.spec() {
        Ok(spec) => spec,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(_slot) = runner.slots.clone().try_acquire_owned() else {
        return Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} runs are already in progress; try again later",
                runner.config.max_runs
            ),
        )
        .into_response();
    };
    let workspace = match tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(runner.root.root())
    {
        Ok(dir) => dir,
        Err(error) => {
            return Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no workspace could be made: {error}"),
            )
            .into_response();
        }
    };
    let checkout = if spec.github.repository.is_empty() {
        Checkout::None
    } else {
        Checkout::Clone
    };
    let redactor = runner.config.agent.redactor(&[
        job.installation_token.as_ref(),
        runner.config.token.as_ref(),
    ]);
    let llm = match runner.models.get(job.model.as_deref()) {
        Ok(llm) => llm,
        Err(error) => {
            return Refusal::new(StatusCode::BAD_REQUEST, format!("model: {error}"))
                .into_response();
        }
    };
    match agent::work(
        &runner.config.agent,
        &llm,
        &spec,
        job.installation_token.clone(),
        workspace.path(),
        checkout,
        &redactor,
        &|_| {},
    )
    .await
    {
        Ok(answer) => Json(json!({
            "status": if answer.outcome.failed() { "failed" } else { "succeeded" },
            "reply": answer.reply,
            "usage": answer.usage,
            "model": answer.model,
        }))
        .into_response(),
        Err(error) => Json(json!({
            "status": "failed",
            "reply": redactor.redact(&error.to_string()),
            "usage": crate::api::TokenUsage::default(),
            "model": runner.config.agent.llm.model,
        }))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_owner_and_name() {
        assert!(owner_and_name("octo/hello.world"));
        assert!(!owner_and_name("octo"));
        assert!(!owner_and_name("octo/../etc"));
        assert!(!owner_and_name("oc to/x"));
    }
}
