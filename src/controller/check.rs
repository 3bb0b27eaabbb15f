//! The run's check run, for runs asked for on a pull request: on the head
//! the agent checks out, queued while the run waits for a sandbox, in
//! progress while the sandbox starts and the agent works, and completed
//! with the run's outcome once its reply is out (so it links the reply).
//!
//! It is created as soon as the run is taken, not when the agent starts:
//! someone who just asked on a pull request looks at its checks to see
//! the request was taken, and "queued" says truthfully that it waits.
//!
//! Exactly one per run: its id is kept in `status.check`, and the run's uid
//! as its `external_id` finds it when a restart came between creating and
//! recording. The check is a courtesy: an App without `checks: write`
//! (GitHub's 403) gets one logged note and none for the rest of the run,
//! and nothing about it fails the run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::controller::Action;
use tracing::warn;

use super::decide::{PENDING_TIMEOUT, RUN_TIMEOUT};
use super::reconcile::{installation, reply_settled};
use super::status::{Transition, condition, conditions, record, write};
use super::{Context, Error};
use crate::api::{AgentRun, AgentRunStatus, CheckRunState, DeliveryOutcome, Phase};
use crate::github::checks::CheckReport;

/// Brings the run's check run up to date. `Some` when it wrote the run's
/// status (which brings the next reconcile); `None` when nothing was due,
/// or GitHub failed in a way a later reconcile may not (the run goes on).
pub async fn sync(run: &AgentRun, ctx: &Context) -> Result<Option<Action>, Error> {
    let (Some(github), Some(head)) = (&ctx.github, head_sha(run)) else {
        return Ok(None);
    };
    let Some(state) = wanted(run) else {
        return Ok(None);
    };
    let current = run.status.as_ref().and_then(|s| s.check.as_ref());
    if current.is_some_and(|c| c.state == state) {
        return Ok(None);
    }
    let Some(uid) = run.meta().uid.as_deref() else {
        return Err(Error::NoUid);
    };
    let installation = installation(run, ctx).await?;
    let report = report(run, state);
    let repository = &run.spec.github.repository;
    let written = match current {
        Some(check) => github
            .update_check_run(installation, repository, check.id, &report)
            .await
            .map(|()| crate::api::CheckRunRef {
                state,
                ..check.clone()
            }),
        None => {
            github
                .open_check_run(installation, repository, head, uid, &report)
                .await
        }
    };
    match written {
        Ok(check) => {
            let shown = AgentRunStatus {
                check: Some(check),
                ..AgentRunStatus::default()
            };
            record(ctx, run, &shown).await?;
            Ok(Some(Action::await_change()))
        }
        // An ended run has nothing else to bring another reconcile: the
        // error's retry does, so its check does not stay in progress.
        Err(error) if error.is_transient() && run.phase().is_terminal() => Err(error.into()),
        Err(error) if error.is_transient() => {
            warn!(%error, "could not update the check run; the next step tries again");
            Ok(None)
        }
        Err(error) => {
            warn!(
                %error,
                "no check run for this run (does the App have `checks: write`?)"
            );
            let skipped =
                Transition::new(conditions::CHECK_RUN, "CheckRunSkipped", error.to_string())
                    .failing();
            write(ctx, run, skipped).await?;
            Ok(Some(Action::await_change()))
        }
    }
}

/// Completes the check run of a run being deleted, which no later
/// reconcile will see: with its outcome if it ended, else as cancelled.
/// Best effort, as the run's other last words.
pub async fn close(run: &AgentRun, ctx: &Context) {
    let Some(github) = &ctx.github else {
        return;
    };
    let Some(check) = run.status.as_ref().and_then(|s| s.check.as_ref()) else {
        return;
    };
    if check.state.is_completed() || head_sha(run).is_none() {
        return;
    }
    let phase = run.phase();
    let state = if phase.is_terminal() {
        ended(run, phase)
    } else {
        CheckRunState::Cancelled
    };
    let updated = match installation(run, ctx).await {
        Ok(installation) => github
            .update_check_run(
                installation,
                &run.spec.github.repository,
                check.id,
                &report(run, state),
            )
            .await
            .map_err(Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = updated {
        warn!(%error, "could not complete the check run of a deleted run");
    }
}

/// The commit the run's check run is on: the pull request head the agent
/// checks out. `None` when the run gets no check run: it is not on a pull
/// request, keeps off GitHub, has no head to put it on, or gave it up.
fn head_sha(run: &AgentRun) -> Option<&str> {
    let thread = &run.spec.github;
    if !thread.pull_request || !thread.post_reply || condition(run, conditions::CHECK_RUN).is_some()
    {
        return None;
    }
    let pinned = run.status.as_ref().and_then(|s| s.head.as_ref());
    thread
        .head
        .as_ref()
        .or(pinned)
        .map(|head| head.sha.as_str())
}

/// What the check run should show for the run as it is now; `None` for an
/// ended run whose reply is not out yet.
fn wanted(run: &AgentRun) -> Option<CheckRunState> {
    match run.phase() {
        Phase::Pending => Some(CheckRunState::Queued),
        Phase::Provisioning | Phase::Running => Some(CheckRunState::InProgress),
        phase => reply_settled(run).then(|| ended(run, phase)),
    }
}

/// How an ended run reads as a check's conclusion.
fn ended(run: &AgentRun, phase: Phase) -> CheckRunState {
    let reason = condition(run, conditions::FINISHED).map(|c| c.reason.as_str());
    match phase {
        Phase::Succeeded => CheckRunState::Success,
        Phase::Cancelled => CheckRunState::Cancelled,
        _ if matches!(reason, Some(RUN_TIMEOUT | PENDING_TIMEOUT)) => CheckRunState::TimedOut,
        _ => CheckRunState::Failure,
    }
}

/// What the check run says in `state`: a title, and a summary that links
/// the request, the reply and what became of the change.
fn report(run: &AgentRun, state: CheckRunState) -> CheckReport {
    let status = run.status.as_ref();
    let asked = run.spec.github.comment.as_ref().map(|c| c.html_url.clone());
    let progress = status
        .and_then(|s| s.progress.as_ref())
        .and_then(|p| p.comment.as_ref())
        .map(|c| c.html_url.clone());
    let reply = status
        .and_then(|s| s.reply.as_ref())
        .map(|c| c.html_url.clone());
    let change = status.and_then(|s| s.change.as_ref());
    let request = asked.as_deref().map_or_else(
        || "the request".to_owned(),
        |url| format!("[the request]({url})"),
    );
    let why = condition(run, conditions::FINISHED).map_or("", |c| c.message.as_str());
    let (title, mut summary) = match state {
        CheckRunState::Queued => (
            "Waiting for a sandbox".to_owned(),
            format!("smolpaws took {request} and waits for a free sandbox."),
        ),
        CheckRunState::InProgress => (
            "Working".to_owned(),
            format!("smolpaws works on {request}."),
        ),
        CheckRunState::Success => {
            let pushed = change.is_some_and(|c| c.outcome == DeliveryOutcome::Pushed);
            let title = if pushed {
                "Pushed the change and replied"
            } else {
                "Replied"
            };
            (title.to_owned(), format!("smolpaws answered {request}."))
        }
        CheckRunState::Failure => (
            "Could not finish".to_owned(),
            format!("smolpaws could not finish {request}: {why}."),
        ),
        CheckRunState::TimedOut => (
            "Timed out".to_owned(),
            format!("smolpaws ran out of time on {request}: {why}."),
        ),
        CheckRunState::Cancelled => (
            "Cancelled".to_owned(),
            format!("smolpaws stopped working on {request}: its AgentRun was deleted."),
        ),
    };
    if let Some(change) = change {
        summary.push_str(&format!("\n\n{}", change.summary));
    }
    let shown = if state.is_completed() {
        reply.as_ref().map(|url| format!("[The reply]({url})"))
    } else {
        progress
            .as_ref()
            .map(|url| format!("[Its progress]({url}) is kept in the thread."))
    };
    if let Some(shown) = shown {
        summary.push_str(&format!("\n\n{shown}"));
    }
    CheckReport {
        state,
        title,
        summary,
        details_url: reply.or(progress).or(asked),
        started_at: status.and_then(|s| s.started_at.as_ref()).map(iso),
        completed_at: status.and_then(|s| s.finished_at.as_ref()).map(iso),
    }
}

/// `time` as GitHub reads timestamps: ISO 8601, `YYYY-MM-DDTHH:MM:SSZ`.
fn iso(time: &Time) -> String {
    time.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::fixtures;
    use crate::api::{PostedComment, PullRequestHead};

    /// Run `r` on pull request 7, its head pinned, in `phase`; when ended,
    /// for `reason` and with its reply posted.
    fn on_pull_request(phase: Phase, reason: &str) -> AgentRun {
        let mut run = fixtures::run("r", "octo/hello", phase);
        run.spec.github.pull_request = true;
        let status = run.status.as_mut().expect("a status");
        status.head = Some(PullRequestHead {
            git_ref: "feature".into(),
            sha: "a".repeat(40),
        });
        if phase.is_terminal() {
            status.finished_at = Some(crate::api::now());
            status.conditions.push(Condition {
                type_: conditions::FINISHED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: "it ended".into(),
                last_transition_time: crate::api::now(),
                observed_generation: None,
            });
            status.reply = Some(PostedComment {
                id: 1,
                html_url: "https://github.com/octo/hello/issues/7#issuecomment-1".into(),
            });
        }
        run
    }

    #[test]
    fn the_check_follows_the_phase_and_ends_with_the_outcome() {
        let cases = [
            (Phase::Pending, "", CheckRunState::Queued),
            (Phase::Provisioning, "", CheckRunState::InProgress),
            (Phase::Running, "", CheckRunState::InProgress),
            (Phase::Succeeded, "Succeeded", CheckRunState::Success),
            (Phase::Succeeded, "LimitReached", CheckRunState::Success),
            (Phase::Failed, "AgentFailed", CheckRunState::Failure),
            (Phase::Failed, RUN_TIMEOUT, CheckRunState::TimedOut),
            (Phase::Failed, PENDING_TIMEOUT, CheckRunState::TimedOut),
            (Phase::Cancelled, "Cancelled", CheckRunState::Cancelled),
        ];
        for (phase, reason, state) in cases {
            let run = on_pull_request(phase, reason);
            assert_eq!(wanted(&run), Some(state), "{phase:?} {reason}");
        }
    }

    #[test]
    fn an_ended_run_completes_its_check_only_once_its_reply_is_out() {
        let mut run = on_pull_request(Phase::Succeeded, "Succeeded");
        run.status.as_mut().expect("a status").reply = None;
        assert_eq!(wanted(&run), None);
    }

    #[test]
    fn issues_runs_off_github_and_skipped_checks_get_none() {
        let mut issue = on_pull_request(Phase::Running, "");
        issue.spec.github.pull_request = false;
        assert_eq!(head_sha(&issue), None);
        let mut quiet = on_pull_request(Phase::Running, "");
        quiet.spec.github.post_reply = false;
        assert_eq!(head_sha(&quiet), None);
        let mut skipped = on_pull_request(Phase::Running, "");
        skipped
            .status
            .as_mut()
            .expect("a status")
            .conditions
            .push(Condition {
                type_: conditions::CHECK_RUN.into(),
                status: "False".into(),
                reason: "CheckRunSkipped".into(),
                message: "GitHub refused".into(),
                last_transition_time: crate::api::now(),
                observed_generation: None,
            });
        assert_eq!(head_sha(&skipped), None);
        let mut unpinned = on_pull_request(Phase::Running, "");
        unpinned.status.as_mut().expect("a status").head = None;
        assert_eq!(head_sha(&unpinned), None);
        assert_eq!(
            head_sha(&on_pull_request(Phase::Running, "")),
            Some("a".repeat(40).as_str())
        );
    }

    #[test]
    fn a_completed_check_links_the_reply_and_says_why() {
        let run = on_pull_request(Phase::Failed, RUN_TIMEOUT);
        let report = report(&run, CheckRunState::TimedOut);
        let reply = "https://github.com/octo/hello/issues/7#issuecomment-1";
        assert_eq!(report.title, "Timed out");
        assert!(report.summary.contains("it ended"), "{}", report.summary);
        assert!(
            report.summary.contains(&format!("[The reply]({reply})")),
            "{}",
            report.summary
        );
        assert_eq!(report.details_url.as_deref(), Some(reply));
        assert!(report.completed_at.is_some());
    }
}
