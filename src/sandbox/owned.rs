//! The metadata every Kubernetes object a run makes carries: the run's
//! label and an owner reference, so deleting the run deletes them.

use std::collections::BTreeMap;

use kube::Resource;
use kube::api::ObjectMeta;

use crate::api::AgentRun;

/// The label naming the run a pod or Secret belongs to.
pub const RUN_LABEL: &str = "smolpaws.dev/run";

/// The label selecting everything smolpaws made.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "smolpaws");

/// The run's name: what its pod is called, and its Secret's prefix.
pub fn run_name(run: &AgentRun) -> String {
    run.metadata.name.clone().unwrap_or_default()
}

/// Metadata of an object named `name` in the run's namespace, owned by it.
pub fn metadata(run: &AgentRun, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: run.metadata.namespace.clone(),
        labels: Some(BTreeMap::from([
            (RUN_LABEL.to_owned(), run_name(run)),
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        ])),
        owner_references: run.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// Whether `meta` (of an object found under a run's name) belongs to `run`:
/// its controller owner reference names the run's uid. Anything else was
/// made by someone else and is never adopted.
pub fn is_owned_by(meta: &ObjectMeta, run: &AgentRun) -> bool {
    let Some(uid) = run.metadata.uid.as_deref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}
