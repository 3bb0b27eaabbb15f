//! Status writes. Each transition is one merge patch of the status
//! subresource, made on the resourceVersion the decision was based on (a
//! stale decision fails with a conflict and is made again), plus a condition
//! and a Kubernetes Event so `kubectl describe` tells the story.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

use super::{Context, Error};
use crate::api::{AgentRun, Phase};

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
    /// The run ended; the reason says how.
    pub const FINISHED: &str = "Finished";
    /// The reply was (or could not be) posted on GitHub.
    pub const REPLIED: &str = "Replied";
}

/// The current time as Kubernetes writes it.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// One status change.
pub struct Transition {
    /// The phase to move to, if it changes.
    pub phase: Option<Phase>,
    /// The condition it sets.
    pub condition: &'static str,
    /// Whether the condition holds.
    pub holds: bool,
    /// A CamelCase reason, also the Event's reason.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
    /// Other status fields to set.
    pub fields: Map<String, Value>,
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
            fields: Map::new(),
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

    /// Also sets status field `name`.
    pub fn with(mut self, name: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).expect("status fields serialize");
        self.fields.insert(name.to_owned(), value);
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

/// Writes `transition` to `run` and records its Event.
pub async fn write(ctx: &Context, run: &AgentRun, transition: Transition) -> Result<(), Error> {
    let namespace = run.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AgentRun> = Api::namespaced(ctx.client.clone(), &namespace);
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
    let mut status = transition.fields;
    status.insert(
        "conditions".into(),
        json!(merge_condition(current, condition)),
    );
    status.insert("observedGeneration".into(), json!(run.metadata.generation));
    status.insert("message".into(), json!(transition.message));
    if let Some(phase) = transition.phase {
        status.insert("phase".into(), json!(phase));
    }
    let patch = json!({
        "metadata": { "resourceVersion": run.resource_version() },
        "status": status,
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&run.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    if let Some(phase) = transition.phase {
        ctx.metrics.entered(phase);
        if phase.is_terminal() {
            ctx.wake_queued();
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
    Ok(())
}
