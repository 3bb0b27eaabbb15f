//! The `smolpaws` command line: one binary, one subcommand per component.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use kube::api::Api;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::{self, ControllerConfig, metrics::ControllerMetrics};
use crate::intake::{Intake, IntakeConfig, metrics::IntakeMetrics};
use crate::telemetry::{self, LogFormat, Output};

/// Runs AI coding agents in Kubernetes sandboxes from GitHub comments.
#[derive(Debug, Parser)]
#[command(name = "smolpaws", version, about)]
pub struct Cli {
    /// How log lines are written.
    #[arg(
        long,
        env = "SMOLPAWS_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `smolpaws agent`: one run, or the runner.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    /// Serve the runner API instead of working on one run.
    #[command(subcommand)]
    pub serve: Option<AgentServe>,
    /// Settings of one run.
    #[command(flatten)]
    pub config: crate::agent::AgentConfig,
}

/// `smolpaws agent serve`.
#[derive(Debug, Subcommand)]
pub enum AgentServe {
    /// The runner: `POST /run`, conversations with streamed events, and a
    /// remote workspace (`/api/bash`, `/api/file`, `/api/git`).
    Serve(crate::runner::RunnerConfig),
}

/// The subcommands.
// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the AgentRun CustomResourceDefinition as YAML (the source of
    /// `crds/agentrun.yaml`), e.g. `smolpaws crd | kubectl apply -f -`.
    Crd,
    /// Serve the GitHub webhook: signed comment deliveries become AgentRuns.
    Intake(IntakeConfig),
    /// Reconcile AgentRuns into sandboxes and replies (leader-elected).
    Controller {
        /// Settings of the controller.
        #[command(flatten)]
        controller: ControllerConfig,
        /// Address of /metrics and /healthz.
        #[arg(long, env = "SMOLPAWS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_listen: SocketAddr,
    },
    /// Intake and controller in one process: what the Helm chart runs.
    Operator {
        /// Settings of the intake.
        #[command(flatten)]
        intake: IntakeConfig,
        /// Settings of the controller.
        #[command(flatten)]
        controller: ControllerConfig,
    },
    /// Work on one AgentRun inside its sandbox and report the reply (the
    /// sandbox's entry point); `agent serve` runs the runner API.
    Agent(AgentCommand),
    /// Create an AgentRun by hand in the current kube context and follow it
    /// to its reply (exit code 0 when it succeeds).
    Run(crate::follow::RunArgs),
    /// Follow the output of a run's sandbox.
    Logs(crate::logs::LogsArgs),
    /// The whole system on this machine: a local control plane, the
    /// operator, sandboxes as local processes, and local repositories in
    /// place of GitHub unless an App is configured.
    Dev(crate::dev::DevArgs),
    /// Copy this binary to PATH: how the sandbox's init container puts the
    /// agent into any image.
    Install {
        /// Where to put the binary.
        path: PathBuf,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crd => {
                let yaml = crate::api::crd_yaml()?;
                std::io::stdout().lock().write_all(yaml.as_bytes())?;
                Ok(())
            }
            Command::Install { path } => install(&path),
            Command::Logs(args) => crate::logs::run(client().await?, args).await,
            Command::Dev(args) => crate::dev::run(args, self.log_format, stop_on_signal()).await,
            Command::Run(args) => {
                let phase = crate::follow::run(client().await?, args).await?;
                if phase != crate::api::Phase::Succeeded {
                    anyhow::bail!("the run ended {phase}");
                }
                Ok(())
            }
            Command::Agent(AgentCommand {
                serve: Some(AgentServe::Serve(config)),
                ..
            }) => {
                telemetry::init(self.log_format, Output::Stderr);
                crate::runner::serve(config, stop_on_signal()).await
            }
            Command::Agent(AgentCommand { config, .. }) => {
                telemetry::init(self.log_format, Output::Stdout);
                Ok(crate::agent::run(config).await?)
            }
            Command::Intake(config) => {
                telemetry::init(self.log_format, Output::Stderr);
                let client = client().await?;
                let stop = stop_on_signal();
                let intake = build_intake(&config, &client, Registry::default());
                serve(config.listen, intake.router(), stop).await
            }
            Command::Controller {
                controller,
                metrics_listen,
            } => {
                telemetry::init(self.log_format, Output::Stderr);
                let client = client().await?;
                let stop = stop_on_signal();
                let mut registry = Registry::default();
                let metrics = ControllerMetrics::register(&mut registry);
                let registry = Arc::new(registry);
                let metrics_router = Router::new()
                    .route("/healthz", get(|| async { "ok" }))
                    .route(
                        "/metrics",
                        get(move || {
                            let registry = registry.clone();
                            async move { telemetry::metrics_response(&registry) }
                        }),
                    );
                let front = serve(metrics_listen, metrics_router, stop.clone());
                let results = bind(controller.result_listen).await?;
                run_controller(client, &controller, metrics, results, stop, front).await
            }
            Command::Operator { intake, controller } => {
                telemetry::init(self.log_format, Output::Stderr);
                let client = client().await?;
                let stop = stop_on_signal();
                let mut registry = Registry::default();
                let metrics = ControllerMetrics::register(&mut registry);
                let router = build_intake(&intake, &client, registry).router();
                let front = serve(intake.listen, router, stop.clone());
                let results = bind(controller.result_listen).await?;
                run_controller(client, &controller, metrics, results, stop, front).await
            }
        }
    }
}

/// The controller (while leading), its result endpoint on `results`, and
/// `front` (the process's other server), until one of them ends.
pub(crate) async fn run_controller(
    client: kube::Client,
    config: &ControllerConfig,
    metrics: ControllerMetrics,
    results: TcpListener,
    stop: CancellationToken,
    front: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let router = controller::report::router(client.clone());
    tokio::try_join!(
        front,
        serve_on(results, router, stop.clone()),
        lead(client, config, metrics, stop),
    )?;
    Ok(())
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration: run in a cluster or set KUBECONFIG")
}

/// The intake, its metrics added to `registry`, which it serves at /metrics.
pub(crate) fn build_intake(
    config: &IntakeConfig,
    client: &kube::Client,
    mut registry: Registry,
) -> Intake {
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let rules = config.rules();
    if let Some(denial) = rules.policy.denies_everything() {
        warn!(%denial, "no delivery can trigger a run until ALLOWED_ACTORS and ALLOWED_OWNERS are set");
    }
    info!(%namespace, trigger = %config.trigger, "intake configured");
    let metrics = IntakeMetrics::register(&mut registry);
    Intake::new(
        rules,
        config.secrets(),
        Api::namespaced(client.clone(), &namespace),
        metrics,
        Arc::new(registry),
    )
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// Serves `router` on `address` until `stop` is cancelled.
async fn serve(address: SocketAddr, router: Router, stop: CancellationToken) -> anyhow::Result<()> {
    serve_on(bind(address).await?, router, stop).await
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub(crate) async fn serve_on(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    info!(%address, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .with_context(|| format!("the server on {address} failed"))
}

/// Leads (see [`controller::leader`]); whenever that ends, everything else
/// in the process stops too.
async fn lead(
    client: kube::Client,
    config: &ControllerConfig,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let outcome = controller::leader::lead(client, config, metrics, stop.clone()).await;
    stop.cancel();
    Ok(outcome?)
}

/// Cancelled on SIGINT or SIGTERM (what Kubernetes sends before it kills).
pub(crate) fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = terminated => {},
        }
        info!("shutting down");
        token.cancel();
    });
    stop
}

/// Copies the running executable to `path`, executable by anyone.
fn install(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().context("cannot find the running executable")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::copy(&me, path)
        .with_context(|| format!("cannot copy {} to {}", me.display(), path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))?;
    Ok(())
}
