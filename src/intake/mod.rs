//! The webhook intake: GitHub deliveries in, AgentRuns out.
//!
//! A delivery is verified (signature), judged ([`delivery::decide`]: event,
//! action, sender, mention, policy) and, when it asks for a run, stored as an
//! AgentRun named after its delivery id. The apiserver is the queue: the
//! intake answers 202 only once the run is stored, and 503 when it cannot be,
//! so GitHub can redeliver.

pub mod config;
pub mod delivery;
mod handler;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod signature;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use kube::api::Api;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::api::AgentRun;
pub use config::{IntakeArgs, IntakeConfig, RuleArgs};
use delivery::Rules;
use metrics::IntakeMetrics;
use signature::WebhookSecrets;

/// GitHub caps webhook payloads at 25 MiB; anything larger is not GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// How long storing a run may take before the delivery is answered 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(8);

/// Everything the handlers share.
pub struct Intake {
    rules: Rules,
    secrets: WebhookSecrets,
    runs: Api<AgentRun>,
    metrics: IntakeMetrics,
}

impl Intake {
    /// An intake that judges deliveries by `config`, creates runs through
    /// `runs` (an Api scoped to the run namespace) and counts in `metrics`.
    pub fn new(config: IntakeConfig, runs: Api<AgentRun>, metrics: IntakeMetrics) -> Self {
        Self {
            rules: config.rules,
            secrets: config.secrets,
            runs,
            metrics,
        }
    }

    /// The webhook route; the process's probes and metrics are served
    /// beside it by the composition root.
    pub fn router(self) -> Router {
        let state = Arc::new(self);
        let webhook = Router::new()
            .route("/webhooks/github", post(handler::webhook))
            // Refuses a declared oversize body before reading any of it, and
            // stops reading an undeclared one at the limit.
            .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                handler::record_latency,
            ));
        Router::new()
            .merge(webhook)
            .layer(TraceLayer::new_for_http())
            .with_state(state)
    }
}
