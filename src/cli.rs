//! The `smolpaws` command line: one binary, one subcommand per component.

use std::io::Write;

use clap::{Parser, Subcommand};

/// Runs AI coding agents in Kubernetes sandboxes from GitHub comments.
#[derive(Debug, Parser)]
#[command(name = "smolpaws", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the AgentRun CustomResourceDefinition as YAML (the source of
    /// `crds/agentrun.yaml`), e.g. `smolpaws crd | kubectl apply -f -`.
    Crd,
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
        }
    }
}
