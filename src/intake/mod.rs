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
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::api::{Api, ListParams};
use prometheus_client::registry::Registry;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::api::AgentRun;
pub use config::IntakeConfig;
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
    registry: Arc<Registry>,
}

impl Intake {
    /// An intake that creates runs through `runs` (an Api scoped to the run
    /// namespace), counts in `metrics` and serves `registry` (which may hold
    /// other components' metrics too) at `/metrics`.
    pub fn new(
        rules: Rules,
        secrets: WebhookSecrets,
        runs: Api<AgentRun>,
        metrics: IntakeMetrics,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            rules,
            secrets,
            runs,
            metrics,
            registry,
        }
    }

    /// The HTTP routes: the webhook, probes and metrics.
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
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics_text))
            .layer(TraceLayer::new_for_http())
            .with_state(state)
    }
}

/// Ready when the apiserver answers for AgentRuns in the run namespace,
/// which also proves the CRD is installed and the intake may read it.
async fn ready(State(intake): State<Arc<Intake>>) -> impl IntoResponse {
    let one = ListParams::default().limit(1);
    let probe = intake.runs.list_metadata(&one);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok".to_owned()),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the apiserver refused to list AgentRuns: {error}"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the apiserver did not answer within 2s".to_owned(),
        ),
    }
}

async fn metrics_text(State(intake): State<Arc<Intake>>) -> Response {
    crate::telemetry::metrics_response(&intake.registry)
}
