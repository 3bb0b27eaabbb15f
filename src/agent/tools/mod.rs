//! The agent's tools: a shell and a file editor, confined to the workspace.
//! Their failures are answers for the model (what went wrong, what to do),
//! not errors of the agent.

pub mod files;
pub mod shell;
pub mod workspace;

/// A tool call the model got wrong, or that failed; shown to the model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    /// A tool error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
