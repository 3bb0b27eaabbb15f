//! The versions of runs this controller has written past. A pass that
//! writes a run goes on with the object the apiserver answered, so its
//! view (the watch's store) can hold the older version a moment longer; a
//! reconcile of that version would redo a step already taken (a guarded
//! write then fails on a conflict, but what came before it, a token
//! revoked, a queue counted, would act on a past the run has left). Such a
//! reconcile waits instead: the watch brings the newer version, which
//! brings the next reconcile.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;

use crate::api::AgentRun;

/// Runs tracked at once; past this, tracking starts over (a run whose
/// newer version never came back, being deleted, is otherwise kept).
const MAX_TRACKED: usize = 10_000;

/// Per run (by uid), the resourceVersions this controller wrote past.
#[derive(Debug, Default)]
pub struct Superseded {
    versions: Mutex<HashMap<String, Vec<String>>>,
}

impl Superseded {
    /// `run`, as it was read, has just been written over by this controller.
    pub fn wrote_past(&self, run: &AgentRun) {
        let (Some(uid), Some(version)) = (run.uid(), run.resource_version()) else {
            return;
        };
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if versions.len() >= MAX_TRACKED {
            versions.clear();
        }
        versions.entry(uid).or_default().push(version);
    }

    /// Whether `run` is a version this controller wrote past. A view that
    /// is not is the newest written or later, so what was kept for the run
    /// is no longer needed.
    pub fn is_stale(&self, run: &AgentRun) -> bool {
        let Some(uid) = run.metadata.uid.as_deref() else {
            return false;
        };
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(past) = versions.get(uid) else {
            return false;
        };
        let stale = run
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|version| past.iter().any(|p| p == version));
        if !stale {
            versions.remove(uid);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Phase, fixtures};

    fn version(uid: &str, version: &str) -> AgentRun {
        let mut run = fixtures::run("run-1", "o/r", Phase::Pending);
        run.metadata.uid = Some(uid.into());
        run.metadata.resource_version = Some(version.into());
        run
    }

    #[test]
    fn a_version_written_past_is_stale_until_a_newer_one_is_seen() {
        let superseded = Superseded::default();
        superseded.wrote_past(&version("u", "1"));
        superseded.wrote_past(&version("u", "2"));
        assert!(superseded.is_stale(&version("u", "1")));
        assert!(superseded.is_stale(&version("u", "2")));
        assert!(
            !superseded.is_stale(&version("other", "2")),
            "another run (or a new run under the same name)"
        );
        assert!(!superseded.is_stale(&version("u", "3")), "the newest");
        assert!(
            !superseded.is_stale(&version("u", "1")),
            "forgotten once the newest was seen: no older version comes back"
        );
    }

    #[test]
    fn a_run_never_written_is_never_stale() {
        assert!(!Superseded::default().is_stale(&version("u", "1")));
    }
}
