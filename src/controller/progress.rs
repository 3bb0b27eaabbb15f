//! The run's progress comment: one comment in the thread's conversation,
//! created when the run is first seen and edited as it goes (waiting for a
//! sandbox, starting it, the agent's last steps, done or failed). The
//! answer itself is a separate reply: GitHub notifies people of a new
//! comment, not of an edit, so the answer arriving is what pings them.
//!
//! Exactly one per run: its id is kept in `status.progress.comment`, and a
//! hidden marker finds it when a restart came between posting and
//! recording. Edits of the steps wait at least the configured interval;
//! a new phase is shown at once.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::decide::since;
use super::status::{condition, conditions, record};
use super::{Context, Error};
use crate::api::{AgentRun, AgentRunStatus, GitHubContext, Phase, PostedComment, RunProgress, now};
use crate::github::reply::compose;

/// How the progress comment behaves.
#[derive(Clone, Copy, Debug)]
pub struct ProgressSettings {
    /// Whether runs get one.
    pub enabled: bool,
    /// The least time between two edits of its steps.
    pub interval: Duration,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(3),
        }
    }
}

/// The hidden marker of `run`'s progress comment.
fn marker(run: &AgentRun) -> String {
    format!(
        "<!-- smolpaws:progress {}/{} {} -->",
        run.namespace().unwrap_or_default(),
        run.name_any(),
        run.meta().uid.as_deref().unwrap_or_default()
    )
}

/// What the comment says for the run as it is now.
pub fn text(run: &AgentRun) -> String {
    let status = run.status.as_ref();
    let reported = status.is_some_and(|s| s.result.is_some());
    match run.phase() {
        Phase::Pending => "⏳ smolpaws is on it: waiting for a sandbox.".to_owned(),
        Phase::Provisioning => "⏳ smolpaws is on it: starting a sandbox.".to_owned(),
        Phase::Running if reported => {
            "⏳ smolpaws is done working: delivering the change and the answer.".to_owned()
        }
        Phase::Running => {
            let steps = status
                .and_then(|s| s.progress.as_ref())
                .map(|p| p.steps.as_slice())
                .unwrap_or_default();
            let mut text = "⏳ smolpaws is working.".to_owned();
            if !steps.is_empty() {
                text.push_str("\n\nLast steps:\n");
                for step in steps {
                    text.push_str(&format!("\n- {step}"));
                }
            }
            text
        }
        Phase::Succeeded => {
            let took = status
                .and_then(|s| s.duration.as_deref())
                .map_or_else(String::new, |d| format!(" in {d}"));
            format!("✅ smolpaws finished{took}: the answer is below.")
        }
        Phase::Failed => {
            let why = condition(run, conditions::FINISHED)
                .map_or("no reason was recorded", |c| c.message.as_str());
            format!("❌ smolpaws could not finish: {why}.")
        }
        Phase::Cancelled => "⏹️ This request was cancelled.".to_owned(),
    }
}

/// Brings the run's progress comment up to date. `Some` when it wrote the
/// run's status (which brings the next reconcile); `None` when nothing was
/// due, or GitHub failed: the comment is a courtesy, and the run goes on.
pub async fn sync(run: &AgentRun, ctx: &Context) -> Result<Option<Action>, Error> {
    let Some(github) = &ctx.github else {
        return Ok(None);
    };
    let thread = &run.spec.github;
    if !ctx.progress.enabled || !thread.post_reply || thread.comment.is_none() {
        return Ok(None);
    }
    let text = text(run);
    let progress = run
        .status
        .as_ref()
        .and_then(|s| s.progress.clone())
        .unwrap_or_default();
    if progress.shown.as_deref() == Some(text.as_str()) {
        return Ok(None);
    }
    let recent = progress
        .shown_at
        .as_ref()
        .is_some_and(|at| since(at.0) < ctx.progress.interval);
    let same_phase = progress
        .shown
        .as_deref()
        .is_some_and(|shown| shown.lines().next() == text.lines().next());
    if recent && same_phase {
        return Ok(None);
    }
    let installation = super::reconcile::installation(run, ctx).await?;
    let body = compose(&text, &marker(run));
    // Always in the conversation, whatever thread the answer goes to.
    let conversation = GitHubContext {
        comment: None,
        ..thread.clone()
    };
    let written = match &progress.comment {
        Some(comment) => github
            .edit_comment(installation, &thread.repository, comment.id, &body)
            .await
            .map(|()| comment.clone()),
        None => create(run, github, installation, &conversation, &body).await,
    };
    let comment = match written {
        Ok(comment) => comment,
        Err(error) => {
            warn!(%error, "could not update the progress comment");
            return Ok(None);
        }
    };
    // Its steps are left out of the merge patch: they keep what the agent
    // sent meanwhile.
    let shown = AgentRunStatus {
        progress: Some(RunProgress {
            steps: Vec::new(),
            comment: Some(comment),
            shown: Some(text),
            shown_at: Some(now()),
        }),
        ..AgentRunStatus::default()
    };
    record(ctx, run, &shown).await?;
    Ok(Some(Action::await_change()))
}

/// The run's progress comment: found by its marker when an earlier attempt
/// posted it, else posted now.
async fn create(
    run: &AgentRun,
    github: &crate::github::GitHub,
    installation: u64,
    conversation: &GitHubContext,
    body: &str,
) -> Result<PostedComment, crate::github::Error> {
    let since = super::reconcile::thread_since(run);
    if let Some(found) = github
        .find_reply(installation, conversation, &marker(run), &since)
        .await?
    {
        github
            .edit_comment(installation, &conversation.repository, found.id, body)
            .await?;
        return Ok(found);
    }
    github.post_reply(installation, conversation, body).await
}
