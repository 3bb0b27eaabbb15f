//! The controller's Prometheus metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{Phase, SandboxBackend};

impl EncodeLabelValue for Phase {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: Phase,
}

impl EncodeLabelValue for SandboxBackend {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let name = match self {
            SandboxBackend::Pod => "pod",
            SandboxBackend::Daytona => "daytona",
            SandboxBackend::Local => "local",
        };
        std::fmt::Write::write_str(encoder, name)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: SandboxBackend,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    kind: &'static str,
}

/// Counters and latency histograms of runs.
#[derive(Clone)]
pub struct ControllerMetrics {
    runs: Family<PhaseLabel, Counter>,
    reconcile_errors: Family<ErrorLabel, Counter>,
    reconcile_duration: Histogram,
    to_sandbox: Histogram,
    to_running: Histogram,
    to_reply: Histogram,
    held: Family<BackendLabel, Histogram>,
}

fn seconds_histogram() -> Histogram {
    // 50 ms to about 14 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

impl ControllerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            reconcile_errors: Family::default(),
            // 1 ms to about 16 s: most reconciles are one or two API calls.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            to_sandbox: seconds_histogram(),
            to_running: seconds_histogram(),
            to_reply: seconds_histogram(),
            held: Family::new_with_constructor(seconds_histogram),
        };
        registry.register(
            "smolpaws_runs",
            "AgentRuns that entered each phase",
            metrics.runs.clone(),
        );
        registry.register(
            "smolpaws_reconcile_errors",
            "Reconciles that failed and were retried, by the kind of failure",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "smolpaws_reconcile_duration_seconds",
            "How long one reconcile took",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "smolpaws_run_sandbox_created_seconds",
            "Time from AgentRun creation to its sandbox pod being created",
            metrics.to_sandbox.clone(),
        );
        registry.register(
            "smolpaws_run_running_seconds",
            "Time from AgentRun creation to its agent running",
            metrics.to_running.clone(),
        );
        registry.register(
            "smolpaws_run_replied_seconds",
            "Time from AgentRun creation to its reply being posted",
            metrics.to_reply.clone(),
        );
        registry.register(
            "smolpaws_sandbox_held_seconds",
            "How long each run held its sandbox, by backend",
            metrics.held.clone(),
        );
        metrics
    }

    /// A run entered `phase`.
    pub fn entered(&self, phase: Phase) {
        self.runs.get_or_create(&PhaseLabel { phase }).inc();
    }

    /// A reconcile failed with an error of `kind`.
    pub fn reconcile_failed(&self, kind: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabel { kind })
            .inc();
    }

    /// A reconcile took `seconds`.
    pub fn reconciled(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    /// A sandbox was created `seconds` after its run.
    pub fn sandbox_created(&self, seconds: f64) {
        self.to_sandbox.observe(seconds);
    }

    /// An agent started `seconds` after its run was created.
    pub fn running(&self, seconds: f64) {
        self.to_running.observe(seconds);
    }

    /// A run held its `backend` sandbox for `seconds`.
    pub fn held(&self, backend: SandboxBackend, seconds: f64) {
        self.held
            .get_or_create(&BackendLabel { backend })
            .observe(seconds);
    }

    /// A reply was posted `seconds` after its run was created.
    pub fn replied(&self, seconds: f64) {
        self.to_reply.observe(seconds);
    }
}
