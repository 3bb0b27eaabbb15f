//! A run's change, from the agent's bundle to a branch and a pull request
//! on GitHub. The sandbox never gets to write: it hands its commits over
//! through the result contract, and the controller checks them
//! ([`verify`]) and pushes them with a token of its own, scoped to the one
//! repository and revoked as soon as the change is delivered
//! ([`deliver`]).

pub mod deliver;
pub mod git;
pub mod stored;
pub mod verify;

use std::time::Duration;

use crate::api::ChangesMode;

/// How the controller delivers changes.
#[derive(Clone, Debug)]
pub struct ChangeSettings {
    /// What becomes of a change when the run does not say.
    pub mode: ChangesMode,
    /// Branches never pushed to (glob patterns, `*` matching anything),
    /// beside the repository's default branch.
    pub protected: Vec<String>,
    /// Where repositories are pushed to, e.g. `https://github.com`; also
    /// the base of the links in the reply.
    pub server_url: String,
    /// The longest one git command may take.
    pub git_timeout: Duration,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        Self {
            mode: ChangesMode::default(),
            protected: Vec::new(),
            server_url: "https://github.com".into(),
            git_timeout: Duration::from_secs(120),
        }
    }
}

impl ChangeSettings {
    /// Whether `branch` matches one of the protected patterns.
    pub fn protects(&self, branch: &str) -> bool {
        self.protected.iter().any(|pattern| {
            let pattern = format!("^{}$", regex::escape(pattern).replace(r"\*", ".*"));
            regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(branch))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_patterns_match_whole_names() {
        let settings = ChangeSettings {
            protected: vec!["release/*".into(), "prod".into()],
            ..ChangeSettings::default()
        };
        assert!(settings.protects("release/1.2"));
        assert!(settings.protects("prod"));
        assert!(!settings.protects("production"));
        assert!(!settings.protects("smolpaws/7-abc"));
    }
}
