//! The webhook intake: GitHub deliveries in, AgentRuns out.
//!
//! A delivery is verified (signature), judged ([`delivery::decide`]: event,
//! action, sender, mention, age, policy) and, when it asks for a run, stored
//! as an AgentRun named after the signed comment it answers, so replays and
//! redeliveries collide with the first run. The apiserver is the queue: the
//! intake answers 202 only once the run is stored, and 503 when it cannot be,
//! so GitHub can redeliver.

pub mod config;
pub mod delivery;
mod handler;
pub mod metrics;
mod payload;
pub mod policy;
pub mod run;
pub mod signature;
pub mod throttle;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use kube::api::Api;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::api::AgentRun;
pub use config::{DEFAULT_MAX_BODY_BYTES, IntakeArgs, IntakeConfig, IntakeLimits, RuleArgs};
use delivery::Rules;
use metrics::IntakeMetrics;
use signature::WebhookSecrets;
use throttle::Throttle;

/// How long storing a run may take before the delivery is answered 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(8);

/// Everything the handlers share.
pub struct Intake {
    rules: Rules,
    secrets: WebhookSecrets,
    limits: IntakeLimits,
    throttle: Throttle,
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
            throttle: Throttle::new(config.limits.rates),
            limits: config.limits,
            runs,
            metrics,
        }
    }

    /// The webhook route; the process's probes and metrics are served
    /// beside it by the composition root.
    pub fn router(self) -> Router {
        let limits = self.limits;
        let state = Arc::new(self);
        let webhook = Router::new()
            .route("/webhooks/github", post(handler::webhook))
            // Refuses a declared oversize body before reading any of it, and
            // stops reading an undeclared one at the limit.
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .layer(DefaultBodyLimit::disable())
            // Past the limit a delivery is answered 503 at once (GitHub
            // redelivers) rather than queued holding its connection.
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many deliveries at once; redeliver later",
                        )
                    }))
                    .load_shed()
                    .concurrency_limit(limits.max_in_flight),
            )
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
