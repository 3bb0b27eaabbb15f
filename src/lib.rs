//! smolpaws runs AI coding agents in Kubernetes sandboxes from GitHub
//! comments: a webhook intake turns a mention into an `AgentRun`, a
//! controller runs it in a sandbox, and the agent's reply goes back to the
//! thread.

pub mod api;
pub mod cli;
pub mod controlplane;
pub mod intake;
pub mod telemetry;
