//! Who may trigger a run: the allowlists of the old webhook worker, under the
//! same names, denying by default.

use std::collections::HashSet;
use std::fmt;

/// The allowlists. Logins, owners and repositories compare case-insensitively,
/// as GitHub treats them.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    actors: HashSet<String>,
    owners: HashSet<String>,
    repos: Option<HashSet<String>>,
    installations: Option<HashSet<u64>>,
}

/// Who asked, and where.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// The comment author's login.
    pub actor: &'a str,
    /// The repository, `owner/name`.
    pub repository: &'a str,
    /// The App installation that delivered the event, when the payload says.
    pub installation: Option<u64>,
}

/// Why a request was denied; logged and counted, never answered on GitHub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// `ALLOWED_ACTORS` is empty, so nobody may trigger.
    NoActorsConfigured,
    /// `ALLOWED_OWNERS` is empty, so no repository may trigger.
    NoOwnersConfigured,
    /// The author is not in `ALLOWED_ACTORS`.
    Actor(String),
    /// The repository owner is not in `ALLOWED_OWNERS`.
    Owner(String),
    /// The repository is not in `ALLOWED_REPOS`.
    Repository(String),
    /// The installation is not in `ALLOWED_INSTALLATIONS`, or unknown.
    Installation(Option<u64>),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoActorsConfigured => f.write_str("ALLOWED_ACTORS is empty"),
            Self::NoOwnersConfigured => f.write_str("ALLOWED_OWNERS is empty"),
            Self::Actor(login) => write!(f, "actor {login} is not in ALLOWED_ACTORS"),
            Self::Owner(owner) => write!(f, "owner {owner} is not in ALLOWED_OWNERS"),
            Self::Repository(repo) => write!(f, "repository {repo} is not in ALLOWED_REPOS"),
            Self::Installation(Some(id)) => {
                write!(f, "installation {id} is not in ALLOWED_INSTALLATIONS")
            }
            Self::Installation(None) => {
                f.write_str("the delivery names no installation and ALLOWED_INSTALLATIONS is set")
            }
        }
    }
}

fn lowercase_set(items: impl IntoIterator<Item = String>) -> HashSet<String> {
    items
        .into_iter()
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

impl Policy {
    /// A policy from the allowlists. Empty `repos` or `installations` mean
    /// "any"; empty `actors` or `owners` mean "nobody".
    pub fn new(
        actors: impl IntoIterator<Item = String>,
        owners: impl IntoIterator<Item = String>,
        repos: impl IntoIterator<Item = String>,
        installations: impl IntoIterator<Item = u64>,
    ) -> Self {
        let repos = lowercase_set(repos);
        let installations: HashSet<u64> = installations.into_iter().collect();
        Self {
            actors: lowercase_set(actors),
            owners: lowercase_set(owners),
            repos: (!repos.is_empty()).then_some(repos),
            installations: (!installations.is_empty()).then_some(installations),
        }
    }

    /// Why this policy lets nothing through, if it does.
    pub fn denies_everything(&self) -> Option<Denial> {
        if self.actors.is_empty() {
            Some(Denial::NoActorsConfigured)
        } else if self.owners.is_empty() {
            Some(Denial::NoOwnersConfigured)
        } else {
            None
        }
    }

    /// Allows `requester`, or says why not.
    pub fn check(&self, requester: Requester<'_>) -> Result<(), Denial> {
        if let Some(denial) = self.denies_everything() {
            return Err(denial);
        }
        let actor = requester.actor.to_ascii_lowercase();
        if !self.actors.contains(&actor) {
            return Err(Denial::Actor(requester.actor.to_owned()));
        }
        let repository = requester.repository.to_ascii_lowercase();
        let owner = repository.split('/').next().unwrap_or_default();
        if !self.owners.contains(owner) {
            let original = requester.repository.split('/').next().unwrap_or_default();
            return Err(Denial::Owner(original.to_owned()));
        }
        if let Some(repos) = &self.repos
            && !repos.contains(&repository)
        {
            return Err(Denial::Repository(requester.repository.to_owned()));
        }
        if let Some(installations) = &self.installations
            && !requester
                .installation
                .is_some_and(|id| installations.contains(&id))
        {
            return Err(Denial::Installation(requester.installation));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn policy(actors: &[&str], owners: &[&str], repos: &[&str], installations: &[u64]) -> Policy {
        Policy::new(
            strings(actors),
            strings(owners),
            strings(repos),
            installations.to_vec(),
        )
    }

    fn asking(
        actor: &'static str,
        repository: &'static str,
        installation: Option<u64>,
    ) -> Requester<'static> {
        Requester {
            actor,
            repository,
            installation,
        }
    }

    #[test]
    fn decides_each_case() {
        let octocat = asking("octocat", "octo-org/hello", Some(7));
        let cases: Vec<(&str, Policy, Requester<'_>, Result<(), Denial>)> = vec![
            (
                "allowed",
                policy(&["octocat"], &["octo-org"], &[], &[]),
                octocat,
                Ok(()),
            ),
            (
                "case-insensitive",
                policy(&["OctoCat"], &["Octo-Org"], &["OCTO-ORG/Hello"], &[7]),
                octocat,
                Ok(()),
            ),
            (
                "no actors",
                policy(&[], &["octo-org"], &[], &[]),
                octocat,
                Err(Denial::NoActorsConfigured),
            ),
            (
                "no owners",
                policy(&["octocat"], &[], &[], &[]),
                octocat,
                Err(Denial::NoOwnersConfigured),
            ),
            (
                "blank entries count as none",
                policy(&[" ", ""], &["octo-org"], &[], &[]),
                octocat,
                Err(Denial::NoActorsConfigured),
            ),
            (
                "other actor",
                policy(&["hubot"], &["octo-org"], &[], &[]),
                octocat,
                Err(Denial::Actor("octocat".into())),
            ),
            (
                "other owner",
                policy(&["octocat"], &["elsewhere"], &[], &[]),
                octocat,
                Err(Denial::Owner("octo-org".into())),
            ),
            (
                "repository not listed",
                policy(&["octocat"], &["octo-org"], &["octo-org/other"], &[]),
                octocat,
                Err(Denial::Repository("octo-org/hello".into())),
            ),
            (
                "installation not listed",
                policy(&["octocat"], &["octo-org"], &[], &[8]),
                octocat,
                Err(Denial::Installation(Some(7))),
            ),
            (
                "installation unknown",
                policy(&["octocat"], &["octo-org"], &[], &[7]),
                asking("octocat", "octo-org/hello", None),
                Err(Denial::Installation(None)),
            ),
            (
                "actors are not owners",
                policy(&["octocat"], &["octocat"], &[], &[]),
                octocat,
                Err(Denial::Owner("octo-org".into())),
            ),
        ];
        for (name, policy, requester, expected) in cases {
            assert_eq!(policy.check(requester), expected, "{name}");
        }
    }

    #[test]
    fn denials_name_the_setting_to_change() {
        let denial = policy(&["octocat"], &["octo-org"], &[], &[]).check(asking(
            "mallory",
            "octo-org/hello",
            None,
        ));
        assert_eq!(
            denial.expect_err("mallory is not listed").to_string(),
            "actor mallory is not in ALLOWED_ACTORS"
        );
    }
}
