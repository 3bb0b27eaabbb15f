//! The `smolpaws` command line: one binary, one subcommand per component.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::{ControllerArgs, ResultArgs};
use crate::intake::IntakeArgs;
use crate::operator::{self, Operator};
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
    pub args: crate::agent::AgentArgs,
}

/// `smolpaws agent serve`.
#[derive(Debug, Subcommand)]
pub enum AgentServe {
    /// The runner: `POST /run`, conversations with streamed events, and a
    /// remote workspace (`/api/bash`, `/api/file`, `/api/git`).
    Serve(crate::runner::RunnerArgs),
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
    Intake(IntakeArgs),
    /// Reconcile AgentRuns into sandboxes and replies (leader-elected).
    Controller {
        /// Settings of the controller.
        #[command(flatten)]
        controller: ControllerArgs,
        /// The result endpoint.
        #[command(flatten)]
        results: ResultArgs,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "SMOLPAWS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_listen: SocketAddr,
    },
    /// Intake and controller in one process: what the Helm chart runs.
    Operator {
        /// Settings of the intake.
        #[command(flatten)]
        intake: IntakeArgs,
        /// Settings of the controller.
        #[command(flatten)]
        controller: ControllerArgs,
        /// The result endpoint.
        #[command(flatten)]
        results: ResultArgs,
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
    #[cfg(feature = "dev")]
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
            #[cfg(feature = "dev")]
            Command::Dev(args) => crate::dev::run(args, self.log_format, stop_on_signal()).await,
            Command::Run(args) => {
                let phase = crate::follow::run(client().await?, args).await?;
                if phase != crate::api::Phase::Succeeded {
                    anyhow::bail!("the run ended {phase}");
                }
                Ok(())
            }
            Command::Agent(AgentCommand {
                serve: Some(AgentServe::Serve(args)),
                ..
            }) => {
                telemetry::init(self.log_format, Output::Stderr);
                crate::runner::serve(args, stop_on_signal()).await
            }
            Command::Agent(AgentCommand { args, .. }) => {
                telemetry::init(self.log_format, Output::Stdout);
                Ok(crate::agent::run(args).await?)
            }
            Command::Intake(intake) => {
                telemetry::init(self.log_format, Output::Stderr);
                let operator = Operator::new(client().await?).intake(intake.config());
                Ok(operator
                    .run(bind(intake.listen).await?, stop_on_signal())
                    .await?)
            }
            Command::Controller {
                controller,
                results,
                metrics_listen,
            } => {
                telemetry::init(self.log_format, Output::Stderr);
                let client = client().await?;
                let operator = Operator::new(client.clone());
                let operator = with_controller(operator, &client, &controller, &results).await?;
                Ok(operator
                    .run(bind(metrics_listen).await?, stop_on_signal())
                    .await?)
            }
            Command::Operator {
                intake,
                controller,
                results,
            } => {
                telemetry::init(self.log_format, Output::Stderr);
                let config = intake.config();
                if let Some(gap) =
                    operator::redelivery_gap(config.rules.max_age, controller.ttl.into())
                {
                    anyhow::bail!(gap);
                }
                let client = client().await?;
                let operator = Operator::new(client.clone()).intake(config);
                let operator = with_controller(operator, &client, &controller, &results).await?;
                Ok(operator
                    .run(bind(intake.listen).await?, stop_on_signal())
                    .await?)
            }
        }
    }
}

/// `operator` with the controller its flags describe, on the cluster's
/// sandboxes.
async fn with_controller(
    operator: Operator,
    client: &kube::Client,
    args: &ControllerArgs,
    results: &ResultArgs,
) -> anyhow::Result<Operator> {
    let environment = operator::agent_environment(args, &results.result_url);
    let sandboxes = operator::cluster_sandboxes(client, args, &environment);
    let parts = operator::controller_parts(args, sandboxes)?;
    Ok(operator.controller(args.config(), parts, bind(results.result_listen).await?))
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration: run in a cluster or set KUBECONFIG")
}

/// A listener on `address`.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// Cancelled on SIGINT or SIGTERM (what Kubernetes sends before it kills).
fn stop_on_signal() -> CancellationToken {
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
