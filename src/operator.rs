//! The composition root: one place wires a process's parts. It takes typed
//! configs and the parts a caller chooses (which sandboxes, GitHub or
//! none), owns the metrics registry, and serves the admin routes
//! (`/healthz`, `/readyz`, `/metrics`) beside the webhook. The CLI, dev
//! mode, the tests and the benches all start smolpaws through it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use kube::api::{Api, ListParams};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{AgentRun, SandboxBackend};
use crate::controller::credential::RunAuth;
use crate::controller::gateway::{Gateway, GatewayConfig};
use crate::controller::leader::{self, LeaderError};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::run_key::{RunKey, RunKeyError};
use crate::controller::{self, ControllerArgs, ControllerConfig, ControllerParts};
use crate::github::GitHub;
use crate::intake::delivery::CLOCK_SKEW;
use crate::intake::metrics::IntakeMetrics;
use crate::intake::{Intake, IntakeConfig};
use crate::sandbox::Sandboxes;
use crate::sandbox::daytona::DaytonaSandboxes;
use crate::sandbox::env::{AgentEnvironment, GitHubUrls};
use crate::sandbox::pod::PodSandboxes;

/// Why a process stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A server failed.
    #[error("the server on {address} failed: {source}")]
    Serve {
        /// Where it listened.
        address: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Leading ended badly.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// The key for run credentials could not be had.
    #[error(transparent)]
    RunKey(#[from] RunKeyError),
}

/// A controller to run, with where its sandboxes report and call the LLM.
struct ControllerRole {
    config: ControllerConfig,
    parts: ControllerParts,
    metrics: ControllerMetrics,
    gateway: Arc<Gateway>,
    results: TcpListener,
}

/// The parts of one smolpaws process.
pub struct Operator {
    client: Client,
    registry: Registry,
    intake: Option<Intake>,
    controller: Option<ControllerRole>,
    readiness: Api<AgentRun>,
}

impl Operator {
    /// A process talking to the apiserver through `client`, with nothing to
    /// run yet.
    pub fn new(client: Client) -> Self {
        Self {
            readiness: Api::all(client.clone()),
            client,
            registry: Registry::default(),
            intake: None,
            controller: None,
        }
    }

    /// Adds the webhook intake.
    pub fn intake(mut self, config: IntakeConfig) -> Self {
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| self.client.default_namespace().to_owned());
        if let Some(denial) = config.rules.policy.denies_everything() {
            warn!(%denial, "no delivery can trigger a run until ALLOWED_ACTORS and ALLOWED_OWNERS are set");
        }
        info!(%namespace, trigger = %config.rules.mention, "intake configured");
        let metrics = IntakeMetrics::register(&mut self.registry);
        let runs = Api::namespaced(self.client.clone(), &namespace);
        self.readiness = runs.clone();
        self.intake = Some(Intake::new(config, runs, metrics));
        self
    }

    /// Adds the controller, its result endpoint served on `results`.
    pub fn controller(
        mut self,
        config: ControllerConfig,
        parts: ControllerParts,
        results: TcpListener,
    ) -> Self {
        if self.intake.is_none()
            && let Some(namespace) = &config.watch_namespace
        {
            self.readiness = Api::namespaced(self.client.clone(), namespace);
        }
        let metrics = ControllerMetrics::register(&mut self.registry);
        let gateway = Gateway::new(
            self.client.clone(),
            parts.gateway.clone(),
            &mut self.registry,
        );
        self.controller = Some(ControllerRole {
            config,
            parts,
            metrics,
            gateway: Arc::new(gateway),
            results,
        });
        self
    }

    /// The routes `run` serves on its front listener, for a caller that
    /// serves them itself; a controller added is not run.
    pub fn front(self) -> Router {
        let admin = Admin {
            registry: self.registry,
            readiness: self.readiness,
        };
        front(self.intake, admin)
    }

    /// Runs every part until `stop` is cancelled or one of them ends, the
    /// webhook and admin routes on `front`.
    pub async fn run(
        self,
        front: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), OperatorError> {
        let admin = Admin {
            registry: self.registry,
            readiness: self.readiness,
        };
        let front = serve(front, self::front(self.intake, admin), stop.clone());
        let Some(role) = self.controller else {
            return front.await;
        };
        let key_namespace = role
            .config
            .lease
            .as_ref()
            .and_then(|lease| lease.namespace.clone())
            .unwrap_or_else(|| self.client.default_namespace().to_owned());
        let key = Arc::new(
            RunKey::shared(
                &self.client,
                &key_namespace,
                role.config.deployment.as_deref(),
            )
            .await?,
        );
        let auth = Arc::new(RunAuth::new(self.client.clone(), key.clone()));
        // Sandboxes reach one listener: the result endpoint and the gateway.
        let sandbox_facing =
            controller::report::router(auth.clone()).merge(role.gateway.router(auth));
        let results = serve(role.results, sandbox_facing, stop.clone());
        let reconcile = reconcile(
            self.client,
            role.config,
            role.parts,
            key,
            role.metrics,
            stop,
        );
        tokio::try_join!(front, results, reconcile)?;
        Ok(())
    }
}

/// The webhook (with an intake) and the admin routes, as one router.
fn front(intake: Option<Intake>, admin: Admin) -> Router {
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(admin));
    match intake {
        Some(intake) => intake.router().merge(admin),
        None => admin,
    }
}

/// Reconciles (while leading, when a Lease is configured); whenever that
/// ends, everything else in the process stops too.
async fn reconcile(
    client: Client,
    config: ControllerConfig,
    parts: ControllerParts,
    key: Arc<RunKey>,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) -> Result<(), OperatorError> {
    let outcome = match &config.lease {
        Some(lease) => {
            leader::lead(client, &config, lease, parts, key, metrics, stop.clone()).await
        }
        None => {
            controller::run(
                client,
                &config,
                parts,
                key,
                metrics,
                stop.clone().cancelled_owned(),
            )
            .await;
            Ok(())
        }
    };
    stop.cancel();
    Ok(outcome?)
}

/// Serves `router` on `listener` until `stop` is cancelled.
async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> Result<(), OperatorError> {
    let address = listener
        .local_addr()
        .map_or_else(|_| "an unknown address".to_owned(), |a| a.to_string());
    info!(%address, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|source| OperatorError::Serve { address, source })
}

/// What the admin routes read.
struct Admin {
    registry: Registry,
    readiness: Api<AgentRun>,
}

/// Ready when the apiserver answers for AgentRuns where this process works,
/// which also proves the CRD is installed and the process may read it.
async fn ready(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let one = ListParams::default().limit(1);
    let probe = admin.readiness.list_metadata(&one);
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

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    crate::telemetry::metrics_response(&admin.registry)
}

/// Why a run kept `ttl` could be asked for twice: a comment redelivered
/// after its run is deleted would start a second run and post a second
/// reply, unless the intake refuses it as too old first.
pub fn redelivery_gap(max_comment_age: Option<Duration>, ttl: Duration) -> Option<String> {
    let Some(max_age) = max_comment_age else {
        return Some(
            "SMOLPAWS_MAX_COMMENT_AGE is 0s (any age): a comment redelivered after its run's \
             SMOLPAWS_RUN_TTL would be answered twice; set an age below the TTL"
                .to_owned(),
        );
    };
    let oldest = max_age + CLOCK_SKEW;
    (ttl <= oldest).then(|| {
        format!(
            "SMOLPAWS_RUN_TTL ({}) must be longer than SMOLPAWS_MAX_COMMENT_AGE ({}) plus {} of \
             clock skew: a comment redelivered after its run is deleted would be answered twice",
            humantime::format_duration(ttl),
            humantime::format_duration(max_age),
            humantime::format_duration(CLOCK_SKEW),
        )
    })
}

/// The sandboxes a cluster runs: pods, and Daytona when its key is set.
pub fn cluster_sandboxes(
    client: &Client,
    args: &ControllerArgs,
    environment: &Arc<AgentEnvironment>,
) -> Sandboxes {
    let pods = PodSandboxes::new(client.clone(), environment.clone());
    let sandboxes = Sandboxes::new().with(SandboxBackend::Pod, Arc::new(pods));
    match DaytonaSandboxes::new(&args.daytona, environment.clone()) {
        Some(daytona) => sandboxes.with(SandboxBackend::Daytona, Arc::new(daytona)),
        None => sandboxes,
    }
}

/// The controller's parts from its flags, `sandboxes` chosen by the caller.
pub fn controller_parts(
    args: &ControllerArgs,
    sandboxes: Sandboxes,
) -> Result<ControllerParts, crate::github::Error> {
    Ok(ControllerParts {
        github: args.github.app().map(|app| GitHub::new(&app)).transpose()?,
        sandboxes,
        gateway: GatewayConfig {
            base_url: args.sandbox.llm.base_url.clone(),
            api_key: args.sandbox.llm.clone().take_api_key(),
            max_requests: args.llm_max_requests_per_run,
            max_tokens: args.llm_max_tokens_per_run,
            timeout: args.llm_timeout.into(),
            model: args.sandbox.llm.model.clone(),
        },
    })
}

/// What the agents of a controller configured by `args` are told, their
/// reports going to `result_url`.
pub fn agent_environment(args: &ControllerArgs, result_url: &str) -> Arc<AgentEnvironment> {
    Arc::new(AgentEnvironment {
        settings: args.sandbox.clone(),
        result_url: result_url.to_owned(),
        github: GitHubUrls {
            api: args.github.api_url.clone(),
            server: args.github.server_url.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_must_outlive_the_redeliveries_the_intake_accepts() {
        let hour = Duration::from_secs(3600);
        assert_eq!(redelivery_gap(Some(hour), 24 * hour), None);
        let gap = redelivery_gap(Some(hour), hour).expect("a TTL of the comment age is too short");
        assert!(gap.contains("SMOLPAWS_RUN_TTL (1h)"), "{gap}");
        assert!(gap.contains("plus 5m of"), "{gap}");
        assert!(
            redelivery_gap(None, 24 * hour).is_some(),
            "any age outlives any TTL"
        );
    }
}
