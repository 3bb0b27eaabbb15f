//! A rate limit per key (a login, a repository, a run) that forgets keys
//! gone quiet, so a stream of new keys cannot grow it without bound.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys past this many are pruned of those whose allowance has refilled.
const PRUNE_ABOVE: usize = 10_000;

/// One quota, counted per key.
pub struct KeyedLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl KeyedLimit {
    /// Each key gets `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Takes one from `key`'s allowance; false when it is spent.
    pub fn admit(&self, key: String) -> bool {
        if self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn keys_are_counted_apart() {
        let limit = KeyedLimit::new(Quota::per_hour(NonZeroU32::MIN));
        assert!(limit.admit("a".into()));
        assert!(!limit.admit("a".into()));
        assert!(limit.admit("b".into()));
    }

    #[test]
    fn keys_whose_allowance_refilled_are_forgotten() {
        let per_second = NonZeroU32::new(1_000).expect("non-zero");
        let limit = KeyedLimit::new(Quota::per_second(per_second));
        for key in 0..=PRUNE_ABOVE {
            assert!(limit.admit(key.to_string()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(limit.admit("late".into()));
        assert!(
            limit.limiter.len() < 10,
            "{} keys kept",
            limit.limiter.len()
        );
    }
}
