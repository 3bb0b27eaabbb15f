//! The `smolpaws` command line: one binary, one subcommand per component.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::api::Api;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::intake::{Intake, IntakeConfig, metrics::IntakeMetrics};
use crate::telemetry::{self, LogFormat};

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
            Command::Intake(config) => {
                telemetry::init(self.log_format);
                run_intake(config).await
            }
        }
    }
}

async fn run_intake(config: IntakeConfig) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration: run in a cluster or set KUBECONFIG")?;
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let rules = config.rules();
    if let Some(denial) = rules.policy.denies_everything() {
        warn!(%denial, "no delivery can trigger a run until ALLOWED_ACTORS and ALLOWED_OWNERS are set");
    }
    let mut registry = Registry::default();
    let metrics = IntakeMetrics::register(&mut registry);
    let intake = Intake::new(
        rules,
        config.secrets(),
        Api::namespaced(client, &namespace),
        metrics,
        Arc::new(registry),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(address = %config.listen, %namespace, trigger = %config.trigger, "intake listening");
    axum::serve(listener, intake.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the webhook server failed")
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends before it kills).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
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
        _ = interrupt => {},
        _ = terminated => {},
    }
    info!("shutting down");
}
