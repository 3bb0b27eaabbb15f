//! smolpaws runs AI coding agents in Kubernetes sandboxes from GitHub
//! comments: a webhook intake turns a mention into an `AgentRun`, a
//! controller runs it in a sandbox, and the agent's reply goes back to the
//! thread.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
#[cfg(feature = "dev")]
pub mod controlplane;
#[cfg(feature = "dev")]
pub mod dev;
pub mod follow;
pub mod github;
pub mod intake;
pub mod keyed_limit;
pub mod logs;
#[cfg(feature = "dev")]
pub mod node;
pub mod operator;
pub mod process;
pub mod random;
pub mod runner;
pub mod sandbox;
pub mod secret_file;
pub mod telemetry;
pub mod tls;
