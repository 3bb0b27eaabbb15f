//! The `smolpaws` binary: every component is a subcommand (see [`Cli`]).

use clap::Parser;
use smolpaws::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every HTTPS client of the process (reqwest's, kube's) uses it.
    smolpaws::tls::install_default_provider();
    Cli::parse().run().await
}
