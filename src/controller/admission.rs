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

/// What this controller knows about sandbox slots before its view of the
/// runs does: runs it admitted that the view still shows Pending, and runs
/// it ended that the view still shows holding a sandbox. Without the
/// second, a run woken by a freed slot would look at a view where the slot
/// is still taken, and wait for its next poll.
#[derive(Debug, Default)]
pub struct Ahead {
    admitted: HashSet<String>,
    ended: HashSet<String>,
}

impl Ahead {
    /// `key` was admitted.
    pub fn admit(&mut self, key: String) {
        self.admitted.insert(key);
    }

    /// `key` ended and let its sandbox go.
    pub fn end(&mut self, key: String) {
        self.admitted.remove(&key);
        self.ended.insert(key);
    }

    /// `key` is being deleted.
    pub fn forget(&mut self, key: &str) {
        self.admitted.remove(key);
        self.ended.remove(key);
    }

    /// Drops what `runs` (the view) now shows for itself.
    pub fn settle(&mut self, runs: &[Arc<AgentRun>]) {
        if self.admitted.is_empty() && self.ended.is_empty() {
            return;
        }
        let mut admitted = HashSet::new();
        let mut ended = HashSet::new();
        for run in runs {
            let key = key(run);
            let phase = run.phase();
            if phase == Phase::Pending && self.admitted.contains(&key) {
                admitted.insert(key);
            } else if matches!(phase, Phase::Provisioning | Phase::Running)
                && self.ended.contains(&key)
            {
                ended.insert(key);
            }
        }
        self.admitted = admitted;
        self.ended = ended;
    }

    fn holds_sandbox(&self, run: &AgentRun) -> bool {
        let holding = matches!(run.phase(), Phase::Provisioning | Phase::Running);
        if self.admitted.is_empty() && self.ended.is_empty() {
            return holding;
        }
        let key = key(run);
        (holding && !self.ended.contains(&key))
            || (self.admitted.contains(&key) && !run.phase().is_terminal())
    }
}

/// The order runs are admitted in: oldest first, then by namespace and name.
fn queue_order(
    run: &AgentRun,
) -> (
    Option<k8s_openapi::jiff::Timestamp>,
    Option<&str>,
    Option<&str>,
) {
    (
        run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        run.metadata.namespace.as_deref(),
        run.metadata.name.as_deref(),
    )
}

fn same(a: &AgentRun, b: &AgentRun) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

/// The Pending runs that may take a sandbox now, oldest first: one pass
/// over `runs` (the view, with `candidate` in it whether the view has it
/// yet or not) and one sort, without allocating per comparison.
fn admissible<'a>(
    limits: Limits,
    runs: &'a [Arc<AgentRun>],
    ahead: &Ahead,
    candidate: Option<&'a AgentRun>,
) -> Vec<&'a AgentRun> {
    let mut global = 0;
    let mut per_repository: HashMap<&str, usize> = HashMap::new();
    let mut waiting: Vec<&AgentRun> = Vec::new();
    for run in runs.iter().map(Arc::as_ref) {
        if ahead.holds_sandbox(run) {
            global += 1;
            *per_repository
                .entry(&run.spec.github.repository)
                .or_default() += 1;
        } else if run.phase() == Phase::Pending
            && run.metadata.deletion_timestamp.is_none()
            && !candidate.is_some_and(|candidate| same(run, candidate))
        {
            waiting.push(run);
        }
    }
    waiting.extend(candidate);
    waiting.sort_unstable_by(|a, b| queue_order(a).cmp(&queue_order(b)));
    let mut admitted = Vec::new();
    for run in waiting {
        if global >= limits.global {
            break;
        }
        let in_repository = per_repository
            .entry(run.spec.github.repository.as_str())
            .or_default();
        if *in_repository >= limits.per_repository {
            continue;
        }
        global += 1;
        *in_repository += 1;
        admitted.push(run);
    }
    admitted
}

/// Whether `candidate` may take a sandbox now, given `runs` (the
/// controller's view of all runs) and what the controller knows `ahead` of
/// it.
pub fn admits(limits: Limits, runs: &[Arc<AgentRun>], ahead: &Ahead, candidate: &AgentRun) -> bool {
    admissible(limits, runs, ahead, Some(candidate))
        .iter()
        .any(|run| same(run, candidate))
}

/// The Pending runs that may take a sandbox now: the ones to wake when a
/// slot frees, rather than every queued run.
pub fn next_up<'a>(limits: Limits, runs: &'a [Arc<AgentRun>], ahead: &Ahead) -> Vec<&'a AgentRun> {
    admissible(limits, runs, ahead, None)
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
        let none = Ahead::default();
        assert!(admits(LIMITS, &runs, &none, &runs[0]));
        assert!(admits(LIMITS, &runs, &none, &runs[1]));
        assert!(
            !admits(LIMITS, &runs, &none, &runs[2]),
            "two older runs take both slots"
        );
        let woken: Vec<_> = next_up(LIMITS, &runs, &none)
            .iter()
            .map(|run| run.name_any())
            .collect();
        assert_eq!(
            woken,
            ["a", "b"],
            "only the runs a slot waits for are woken"
        );
    }

    #[test]
    fn a_full_repository_does_not_block_others() {
        let runs = vec![
            run("busy", "o/one", 1, Phase::Running),
            run("same-repo", "o/one", 2, Phase::Pending),
            run("other-repo", "o/two", 3, Phase::Pending),
        ];
        let none = Ahead::default();
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
        let mut ahead = Ahead::default();
        ahead.admit("ns/a".to_owned());
        ahead.admit("ns/b".to_owned());
        assert!(!admits(LIMITS, &runs, &ahead, &runs[2]));
        let done = vec![
            run("a", "o/one", 1, Phase::Succeeded),
            runs[1].clone(),
            runs[2].clone(),
        ];
        assert!(
            admits(LIMITS, &done, &ahead, &done[2]),
            "a finished run frees its slot"
        );
        ahead.settle(&done);
        assert!(ahead.admitted.contains("ns/b") && !ahead.admitted.contains("ns/a"));
    }

    #[test]
    fn a_run_ended_but_not_yet_seen_frees_its_slot_at_once() {
        let runs = vec![
            run("a", "o/one", 1, Phase::Running),
            run("b", "o/two", 2, Phase::Running),
            run("c", "o/three", 3, Phase::Pending),
        ];
        let mut ahead = Ahead::default();
        assert!(!admits(LIMITS, &runs, &ahead, &runs[2]));
        ahead.end("ns/a".to_owned());
        assert!(admits(LIMITS, &runs, &ahead, &runs[2]));
        ahead.settle(&runs);
        assert!(ahead.ended.contains("ns/a"), "kept until the view shows it");
        let seen = vec![run("a", "o/one", 1, Phase::Succeeded), runs[1].clone()];
        ahead.settle(&seen);
        assert!(ahead.ended.is_empty());
    }
}
