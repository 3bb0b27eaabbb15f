//! The lifecycle phase of an AgentRun.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a run is in its life. A run moves forward only:
/// `Pending → Provisioning → Running → Succeeded | Failed | Cancelled`;
/// the last three are terminal.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Accepted and waiting for a sandbox slot.
    #[default]
    Pending,
    /// A sandbox is being created.
    Provisioning,
    /// The agent is working in its sandbox.
    Running,
    /// The agent replied.
    Succeeded,
    /// The run ended without a reply from the agent.
    Failed,
    /// The run was stopped on request.
    Cancelled,
}

impl Phase {
    /// Whether the run has ended and nothing more will happen to its sandbox.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The name used in the API and in printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn only_the_end_states_are_terminal() {
        let terminal: Vec<_> = [
            Phase::Pending,
            Phase::Provisioning,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Cancelled,
        ]
        .into_iter()
        .filter(|p| p.is_terminal())
        .collect();
        assert_eq!(
            terminal,
            [Phase::Succeeded, Phase::Failed, Phase::Cancelled]
        );
    }

    #[test]
    fn display_matches_the_wire_name() {
        for phase in [Phase::Pending, Phase::Cancelled] {
            let wire = serde_json::to_value(phase).expect("a unit enum serializes");
            assert_eq!(wire, phase.to_string());
        }
    }
}
