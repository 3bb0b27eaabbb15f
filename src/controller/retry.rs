//! How long a run whose reconcile keeps failing waits before the next try:
//! what the error asks for at first, then doubling with jitter up to five
//! minutes, so an outage (GitHub's, the apiserver's) is not hammered by
//! every run in step.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The longest wait between tries.
const MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// Runs whose failures are counted at once.
const MAX_TRACKED: usize = 10_000;

/// Failures in a row, per run.
#[derive(Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, u32>>,
}

impl Failures {
    /// Records a failure of run `key` whose error asks for `base`; returns
    /// how long to wait.
    pub fn failed(&self, key: String, base: Duration) -> Duration {
        let attempt = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            // Runs deleted while failing are never seen again: past this
            // many, counts start over rather than grow without bound.
            if counts.len() >= MAX_TRACKED {
                counts.clear();
            }
            let count = counts.entry(key).or_default();
            *count = count.saturating_add(1);
            *count
        };
        wait(base, attempt)
    }

    /// Forgets run `key`'s failures: it reconciled.
    pub fn succeeded(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.is_empty() {
            counts.remove(key);
        }
    }
}

/// The shortest first wait: an error asking for none (`Retry-After: 0`)
/// would otherwise never grow.
const MIN_WAIT: Duration = Duration::from_millis(200);

/// The wait before try `attempt + 1` (the first failure is attempt 1).
fn wait(base: Duration, attempt: u32) -> Duration {
    let base = base.max(MIN_WAIT);
    let most = MAX_WAIT.max(base);
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(most)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(most)
        .min(most)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_at_what_the_error_asks_grow_and_stop_growing() {
        let base = Duration::from_secs(1);
        let first = wait(base, 1);
        assert!(first >= base && first < base * 2, "{first:?}");
        let fifth = wait(base, 5);
        assert!(fifth >= base * 16 && fifth <= base * 32, "{fifth:?}");
        assert_eq!(wait(base, 40), MAX_WAIT);
        assert!(
            wait(Duration::ZERO, 5) >= MIN_WAIT * 16,
            "no wait asked still grows"
        );
        let asked = Duration::from_secs(600);
        assert!(
            wait(asked, 1) >= asked,
            "a Retry-After longer than the cap is honoured"
        );
    }

    #[test]
    fn a_success_starts_the_count_again() {
        let failures = Failures::default();
        let base = Duration::from_secs(1);
        for _ in 0..6 {
            failures.failed("ns/run".into(), base);
        }
        assert!(failures.failed("ns/run".into(), base) >= base * 64);
        failures.succeeded("ns/run");
        assert!(failures.failed("ns/run".into(), base) < base * 2);
    }
}
