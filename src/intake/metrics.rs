//! The intake's Prometheus metrics.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::delivery::TRIGGER_EVENTS;

/// How a delivery ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// An AgentRun was created.
    Accepted,
    /// The delivery was seen before; its AgentRun exists.
    Duplicate,
    /// Nothing to do (other events, edits, bots, no mention, pings).
    Ignored,
    /// The policy refused the request.
    Denied,
    /// The signature was missing or wrong.
    BadSignature,
    /// The request was malformed.
    Invalid,
    /// The apiserver could not store the run; GitHub may redeliver.
    Unavailable,
    /// The author or the repository started too many runs this hour.
    Throttled,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Denied => "denied",
            Self::BadSignature => "bad_signature",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
            Self::Throttled => "throttled",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event: &'static str,
    outcome: Outcome,
}

/// Counters and histograms of the webhook endpoint.
#[derive(Clone)]
pub struct IntakeMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    latency: Histogram,
}

impl IntakeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            // 1 ms to about 16 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        };
        registry.register(
            "smolpaws_intake_deliveries",
            "Webhook deliveries by event and outcome",
            metrics.deliveries.clone(),
        );
        registry.register(
            "smolpaws_intake_request_duration_seconds",
            "Time from a webhook request to its answer",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Counts one delivery of `event` that ended in `outcome`.
    pub fn delivery(&self, event: Option<&str>, outcome: Outcome) {
        // The event name comes from the request: only known names become
        // label values, so nobody can grow the series without bound.
        let event = match event {
            Some("ping") => "ping",
            Some(name) => TRIGGER_EVENTS
                .into_iter()
                .find(|known| *known == name)
                .unwrap_or("other"),
            None => "none",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels { event, outcome })
            .inc();
    }

    /// Records how long one webhook request took.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }
}
