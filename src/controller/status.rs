//! Status writes. Each transition is one merge patch of the status
//! subresource, made on the resourceVersion the decision was based on (a
//! stale decision fails with a conflict and is made again), plus a condition
//! and a Kubernetes Event so `kubectl describe` tells the story.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::{Context, Error};
use crate::api::{
    AgentRun, AgentRunStatus, ChangeDelivery, Phase, PostedComment, PullRequestHead, SandboxRef,
    now,
};

/// The field manager of every controller write.
pub const FIELD_MANAGER: &str = "smolpaws-controller";

/// Condition types, one per step of a run.
pub mod conditions {
    /// The 👀 reaction was (or could not be) added.
    pub const ACKNOWLEDGED: &str = "Acknowledged";
    /// The run got a sandbox slot.
    pub const ADMITTED: &str = "Admitted";
    /// The sandbox runs the agent.
    pub const SANDBOX_RUNNING: &str = "SandboxRunning";
    /// The agent's change was pushed (or refused, and nothing pushed).
    pub const DELIVERED: &str = "Delivered";
    /// The run ended; the reason says how.
    pub const FINISHED: &str = "Finished";
    /// The reply was (or could not be) posted on GitHub.
    pub const REPLIED: &str = "Replied";
    /// Set (false) when the run's check run was given up: the App lacks
    /// `checks: write`, or GitHub refused it for good. Never retried.
    pub const CHECK_RUN: &str = "CheckRun";
}

/// One status change: a condition, maybe a phase, and the status fields
/// that go with them, typed so a misspelt field cannot compile.
#[derive(Debug)]
pub struct Transition {
    phase: Option<Phase>,
    condition: &'static str,
    holds: bool,
    reason: &'static str,
    message: String,
    /// The other fields it sets; unset ones are left out of the merge
    /// patch, so they keep their stored values.
    fields: AgentRunStatus,
}

impl Transition {
    /// A transition that sets `condition` true.
    pub fn new(condition: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            phase: None,
            condition,
            holds: true,
            reason,
            message: message.into(),
            fields: AgentRunStatus::default(),
        }
    }

    /// Moves the run to `phase`.
    pub fn to(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }

    /// Sets the condition false instead.
    pub fn failing(mut self) -> Self {
        self.holds = false;
        self
    }

    /// Records the pull request head the agent checks out.
    pub fn head(mut self, head: PullRequestHead) -> Self {
        self.fields.head = Some(head);
        self
    }

    /// Records the run's sandbox.
    pub fn sandbox(mut self, sandbox: SandboxRef) -> Self {
        self.fields.sandbox = Some(sandbox);
        self
    }

    /// Records when the agent started.
    pub fn started_at(mut self, at: Time) -> Self {
        self.fields.started_at = Some(at);
        self
    }

    /// Records when the run ended and how long it took, for people.
    pub fn finished(mut self, at: Time, duration: String) -> Self {
        self.fields.finished_at = Some(at);
        self.fields.duration = Some(duration);
        self
    }

    /// Records how long the run held its sandbox.
    pub fn sandbox_seconds(mut self, seconds: i64) -> Self {
        self.fields.sandbox_seconds = Some(seconds);
        self
    }

    /// Records what became of the agent's change.
    pub fn change(mut self, change: ChangeDelivery) -> Self {
        self.fields.change = Some(change);
        self
    }

    /// Records the posted reply.
    pub fn reply(mut self, reply: PostedComment) -> Self {
        self.fields.reply = Some(reply);
        self
    }
}

/// `conditions` with `condition` in place of the one of its type; the
/// transition time moves only when the status does.
fn merge_condition(conditions: &[Condition], mut condition: Condition) -> Vec<Condition> {
    let mut merged: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != condition.type_)
        .cloned()
        .collect();
    if let Some(old) = conditions.iter().find(|c| c.type_ == condition.type_)
        && old.status == condition.status
    {
        condition.last_transition_time = old.last_transition_time.clone();
    }
    merged.push(condition);
    merged
}

/// The condition of `type_` on `run`, if set.
pub fn condition<'a>(run: &'a AgentRun, type_: &str) -> Option<&'a Condition> {
    run.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The merge patch of one transition: the status, guarded by the
/// resourceVersion the decision was made on.
#[derive(Debug, Serialize)]
struct StatusPatch<'a> {
    metadata: Guard<'a>,
    status: &'a AgentRunStatus,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Guard<'a> {
    resource_version: Option<&'a str>,
}

/// The status `transition` writes over `run`'s.
fn patched_status(run: &AgentRun, transition: &Transition) -> AgentRunStatus {
    let current = run
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = Condition {
        type_: transition.condition.to_owned(),
        status: if transition.holds { "True" } else { "False" }.to_owned(),
        reason: transition.reason.to_owned(),
        message: transition.message.clone(),
        last_transition_time: now(),
        observed_generation: run.metadata.generation,
    };
    AgentRunStatus {
        phase: transition.phase,
        conditions: merge_condition(current, condition),
        observed_generation: run.metadata.generation,
        message: Some(transition.message.clone()),
        ..transition.fields.clone()
    }
}

/// Records `fields` in `run`'s status, guarded by the resourceVersion they
/// were decided on, without a condition or an Event: what GitHub shows of
/// the run (its progress comment, its check run) changes often, and is
/// not a step of its story. Answers the run as the apiserver stored it.
pub async fn record(
    ctx: &Context,
    run: &AgentRun,
    fields: &AgentRunStatus,
) -> Result<AgentRun, Error> {
    let namespace = run.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AgentRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = StatusPatch {
        metadata: Guard {
            resource_version: run.metadata.resource_version.as_deref(),
        },
        status: fields,
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let stored = api
        .patch_status(&run.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    ctx.superseded.wrote_past(run);
    Ok(stored)
}

/// Writes `transition` to `run` and records its Event; answers the run as
/// the apiserver stored it, for a step that goes on without waiting for the
/// watch to bring it back.
pub async fn write(
    ctx: &Context,
    run: &AgentRun,
    transition: Transition,
) -> Result<AgentRun, Error> {
    let stored = record(ctx, run, &patched_status(run, &transition)).await?;
    if let Some(phase) = transition.phase {
        ctx.metrics.entered(phase);
        if phase.is_terminal() {
            ctx.slot_freed(run);
        }
    }
    let warning =
        !transition.holds || matches!(transition.phase, Some(Phase::Failed | Phase::Cancelled));
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: transition.reason.to_owned(),
        note: Some(transition.message),
        action: transition.condition.to_owned(),
        secondary: None,
    };
    // An Event is a courtesy: failing to record one must not fail the run.
    if let Err(error) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        tracing::warn!(%error, "could not record an Event");
    }
    Ok(stored)
}
