//! How many runs one person, and one repository, may start per hour. The
//! allowlists say who may ask at all; these limits keep one allowed login (or
//! a stolen one, or a script gone wrong) from filling the cluster. They count
//! per intake replica.

use std::fmt;
use std::num::NonZeroU32;

use governor::Quota;

use crate::keyed_limit::KeyedLimit;

/// Runs per hour, each limit off when zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRates {
    /// Runs one comment author may start per hour.
    pub per_actor: u32,
    /// Runs one repository may start per hour.
    pub per_repository: u32,
}

impl Default for RunRates {
    fn default() -> Self {
        Self {
            per_actor: 30,
            per_repository: 120,
        }
    }
}

/// A run refused for its rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// The author started their hour's runs.
    Actor {
        /// The login.
        login: String,
        /// The limit.
        per_hour: u32,
    },
    /// The repository started its hour's runs.
    Repository {
        /// `owner/name`.
        repository: String,
        /// The limit.
        per_hour: u32,
    },
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Actor { login, per_hour } => write!(
                f,
                "{login} started {per_hour} runs in the last hour (SMOLPAWS_RUNS_PER_ACTOR_PER_HOUR); ask again later"
            ),
            Self::Repository {
                repository,
                per_hour,
            } => write!(
                f,
                "{repository} started {per_hour} runs in the last hour (SMOLPAWS_RUNS_PER_REPO_PER_HOUR); ask again later"
            ),
        }
    }
}

struct Limit {
    per_hour: u32,
    limit: KeyedLimit,
}

impl Limit {
    fn new(per_hour: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_hour)?;
        Some(Self {
            per_hour,
            limit: KeyedLimit::new(Quota::per_hour(rate)),
        })
    }

    fn admit(&self, key: String) -> bool {
        self.limit.admit(key)
    }
}

/// The intake's run rate limits.
pub struct Throttle {
    actors: Option<Limit>,
    repositories: Option<Limit>,
}

impl Throttle {
    /// Limits at `rates`.
    pub fn new(rates: RunRates) -> Self {
        Self {
            actors: Limit::new(rates.per_actor),
            repositories: Limit::new(rates.per_repository),
        }
    }

    /// Takes one run from `actor`'s and `repository`'s allowance, or says
    /// which is spent. Logins and repository names count without case, as
    /// GitHub compares them.
    ///
    /// The author is asked first: an author over their limit spends none
    /// of their repository's allowance, which others share.
    pub fn admit(&self, actor: &str, repository: &str) -> Result<(), Throttled> {
        if let Some(limit) = &self.actors
            && !limit.admit(actor.to_ascii_lowercase())
        {
            return Err(Throttled::Actor {
                login: actor.to_owned(),
                per_hour: limit.per_hour,
            });
        }
        if let Some(limit) = &self.repositories
            && !limit.admit(repository.to_ascii_lowercase())
        {
            return Err(Throttled::Repository {
                repository: repository.to_owned(),
                per_hour: limit.per_hour,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_and_a_repository_each_get_their_hour_s_runs() {
        let throttle = Throttle::new(RunRates {
            per_actor: 2,
            per_repository: 3,
        });
        assert_eq!(throttle.admit("ada", "o/r"), Ok(()));
        assert_eq!(
            throttle.admit("ADA", "o/r"),
            Ok(()),
            "logins count without case"
        );
        assert!(matches!(
            throttle.admit("ada", "o/other"),
            Err(Throttled::Actor { per_hour: 2, .. })
        ));
        assert_eq!(throttle.admit("bob", "O/R"), Ok(()));
        assert!(matches!(
            throttle.admit("carol", "o/r"),
            Err(Throttled::Repository { per_hour: 3, .. })
        ));
    }

    #[test]
    fn an_author_over_their_limit_spends_nothing_of_the_repository_s() {
        let throttle = Throttle::new(RunRates {
            per_actor: 1,
            per_repository: 2,
        });
        assert_eq!(throttle.admit("mallory", "o/r"), Ok(()));
        for _ in 0..10 {
            assert!(matches!(
                throttle.admit("mallory", "o/r"),
                Err(Throttled::Actor { .. })
            ));
        }
        assert_eq!(
            throttle.admit("ada", "o/r"),
            Ok(()),
            "the repository has room left"
        );
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let throttle = Throttle::new(RunRates {
            per_actor: 0,
            per_repository: 0,
        });
        for _ in 0..1000 {
            assert_eq!(throttle.admit("ada", "o/r"), Ok(()));
        }
    }
}
