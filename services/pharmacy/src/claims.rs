//! A limit on access-code claims, per pharmacy.
//!
//! An access code is eight characters from a 31-letter alphabet, about 8.5 × 10¹¹ codes, and a
//! claim with a right code takes whatever open prescription it names. Unlimited, a pharmacy (or
//! a stolen pharmacy key) could try codes until one matched some patient's prescription. A real
//! counter serves patients one at a time, so a few claims a minute is plenty; the limit keeps
//! guessing hopeless (at 20 a minute, one hit among a million open prescriptions takes about
//! eighty years) and each refusal is logged with the organization for the operators.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Claims a pharmacy may make per minute (bursts included).
pub const CLAIMS_PER_MINUTE: u32 = 20;

/// Claim attempts, right or wrong, counted per organization.
#[derive(Debug)]
pub struct ClaimLimiter {
    limiter: RateLimiter<String, HashMapStateStore<String>, DefaultClock>,
    clock: DefaultClock,
}

impl ClaimLimiter {
    pub fn per_minute(claims: NonZeroU32) -> Self {
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::hashmap_with_clock(Quota::per_minute(claims), clock.clone()),
            clock,
        }
    }

    /// Counts one claim by `org`; `Err` says how long until it may claim again.
    pub fn check(&self, org: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&org.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

impl Default for ClaimLimiter {
    fn default() -> Self {
        Self::per_minute(NonZeroU32::new(CLAIMS_PER_MINUTE).unwrap_or(NonZeroU32::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pharmacy_has_its_own_allowance_and_is_told_when_to_retry() {
        let limiter = ClaimLimiter::per_minute(NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            assert!(limiter.check("pharmacy-aozora").is_ok());
        }
        let wait = limiter.check("pharmacy-aozora").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limiter.check("pharmacy-midori").is_ok(),
            "another pharmacy is not held back"
        );
    }
}
