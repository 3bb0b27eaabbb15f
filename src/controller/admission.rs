//! Concurrency limits: which Pending runs may take a sandbox now. Runs are
//! admitted oldest first, within a global limit and a per-repository limit;
//! the rest wait in Pending.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{AgentRun, Phase};

/// The limits on runs holding a sandbox at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Across all repositories.
    pub global: usize,
    /// In one repository.
    pub per_repository: usize,
    /// Runs of one repository waiting in Pending for a slot; a run that
    /// would wait behind more ends at once, so a flood cannot queue without
    /// bound, and one repository's flood does not turn others away.
    pub pending_per_repository: usize,
}

/// `namespace/name`, the key runs are tracked by.
pub fn key(run: &AgentRun) -> String {
    format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any())
}

/// Whether `candidate` may take a sandbox now.
///
/// `runs` is the controller's view of all runs; `admitted` names runs this
/// controller admitted whose new phase may not have reached that view yet.
pub fn admits(
    limits: Limits,
    runs: &[Arc<AgentRun>],
    admitted: &HashSet<String>,
    candidate: &AgentRun,
) -> bool {
    let candidate_key = key(candidate);
    let holds_sandbox = |run: &AgentRun| {
        matches!(run.phase(), Phase::Provisioning | Phase::Running)
            || (admitted.contains(&key(run)) && !run.phase().is_terminal())
    };
    let mut global = 0;
    let mut per_repository: HashMap<&str, usize> = HashMap::new();
    let mut waiting: Vec<&AgentRun> = Vec::new();
    for run in runs.iter().map(Arc::as_ref) {
        if holds_sandbox(run) {
            global += 1;
            *per_repository
                .entry(&run.spec.github.repository)
                .or_default() += 1;
        } else if run.phase() == Phase::Pending
            && run.metadata.deletion_timestamp.is_none()
            && key(run) != candidate_key
        {
            waiting.push(run);
        }
    }
    waiting.push(candidate);
    waiting.sort_by(|a, b| {
        let created = |run: &AgentRun| run.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| key(a).cmp(&key(b)))
    });
    for run in waiting {
        if global >= limits.global {
            return false;
        }
        let repository = run.spec.github.repository.as_str();
        let in_repository = per_repository.entry(repository).or_default();
        if *in_repository >= limits.per_repository {
            continue;
        }
        if key(run) == candidate_key {
            return true;
        }
        global += 1;
        *in_repository += 1;
    }
    false
}

/// How many Pending runs of `candidate`'s repository wait ahead of it
/// (made before it).
pub fn waiting_ahead(runs: &[Arc<AgentRun>], candidate: &AgentRun) -> usize {
    let created = |run: &AgentRun| run.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let candidate_key = key(candidate);
    let repository = candidate.spec.github.repository.to_ascii_lowercase();
    runs.iter()
        .map(Arc::as_ref)
        .filter(|run| {
            run.phase() == Phase::Pending
                && run.spec.github.repository.to_ascii_lowercase() == repository
                && run.metadata.deletion_timestamp.is_none()
                && key(run) != candidate_key
                && (created(run), key(run)) < (created(candidate), candidate_key.clone())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::fixtures;

    fn run(name: &str, repository: &str, created: i64, phase: Phase) -> Arc<AgentRun> {
        let mut run = fixtures::run(name, repository, phase);
        run.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(created).expect("a valid time")));
        Arc::new(run)
    }

    const LIMITS: Limits = Limits {
        global: 2,
        per_repository: 1,
        pending_per_repository: 100,
    };

    #[test]
    fn the_queue_ahead_counts_the_repository_s_older_pending_runs_only() {
        let runs = vec![
            run("a", "o/one", 1, Phase::Pending),
            run("b", "o/two", 2, Phase::Running),
            run("c", "o/one", 3, Phase::Pending),
            run("d", "O/One", 5, Phase::Pending),
            run("e", "o/two", 6, Phase::Pending),
        ];
        assert_eq!(waiting_ahead(&runs, &runs[0]), 0);
        assert_eq!(waiting_ahead(&runs, &runs[2]), 1);
        assert_eq!(waiting_ahead(&runs, &runs[3]), 2);
        assert_eq!(
            waiting_ahead(&runs, &runs[4]),
            0,
            "another repository's queue"
        );
    }

    #[test]
    fn oldest_first_within_the_global_limit() {
        let runs = vec![
            run("a", "o/one", 1, Phase::Pending),
            run("b", "o/two", 2, Phase::Pending),
            run("c", "o/three", 3, Phase::Pending),
        ];
        let none = HashSet::new();
        assert!(admits(LIMITS, &runs, &none, &runs[0]));
        assert!(admits(LIMITS, &runs, &none, &runs[1]));
        assert!(
            !admits(LIMITS, &runs, &none, &runs[2]),
            "two older runs take both slots"
        );
    }

    #[test]
    fn a_full_repository_does_not_block_others() {
        let runs = vec![
            run("busy", "o/one", 1, Phase::Running),
            run("same-repo", "o/one", 2, Phase::Pending),
            run("other-repo", "o/two", 3, Phase::Pending),
        ];
        let none = HashSet::new();
        assert!(!admits(LIMITS, &runs, &none, &runs[1]));
        assert!(admits(LIMITS, &runs, &none, &runs[2]));
    }

    #[test]
    fn runs_admitted_but_not_yet_seen_count() {
        let runs = vec![
            run("a", "o/one", 1, Phase::Pending),
            run("b", "o/two", 2, Phase::Pending),
            run("c", "o/three", 3, Phase::Pending),
        ];
        let admitted = HashSet::from(["ns/a".to_owned(), "ns/b".to_owned()]);
        assert!(!admits(LIMITS, &runs, &admitted, &runs[2]));
        let done = vec![
            run("a", "o/one", 1, Phase::Succeeded),
            runs[1].clone(),
            runs[2].clone(),
        ];
        assert!(
            admits(LIMITS, &done, &admitted, &done[2]),
            "a finished run frees its slot"
        );
    }
}
