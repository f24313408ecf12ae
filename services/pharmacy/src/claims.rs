//! A limit on wrong access codes.
//!
//! An access code is eight characters from a 31-letter alphabet, about 8.5 × 10¹¹ codes, and a
//! claim with a right code takes whatever open prescription it names. Unlimited, a pharmacy key
//! (or a stolen one) could try codes until one matched some patient's prescription, so wrong
//! codes are limited: [`FAILURES_PER_MINUTE`] per pharmacy and client address, and
//! [`ORG_FAILURES_PER_MINUTE`] per pharmacy from all its addresses together. At 20 a minute, one
//! hit among a million open prescriptions takes about eighty years.
//!
//! Only wrong codes count. A counter that also counted right ones would let someone guessing
//! from one terminal lock the whole pharmacy out of its real claims; counted per address, the
//! guesser locks out only the address it guesses from, and the pharmacy-wide ceiling still
//! bounds a guesser with many addresses. Refusals are logged once a minute per pharmacy and
//! address with how many there were, not once each: one guesser must not flood the log.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wrong codes a pharmacy may send per minute from one client address.
pub const FAILURES_PER_MINUTE: usize = 20;
/// Wrong codes a pharmacy may send per minute from all its addresses together.
pub const ORG_FAILURES_PER_MINUTE: usize = 100;

const WINDOW: Duration = Duration::from_secs(60);

/// Recent failures per key, in a sliding one-minute window.
#[derive(Debug, Default)]
struct Window {
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Window {
    /// `Err(wait)` when `key` has `max` failures in the last minute.
    fn check(&mut self, key: &str, max: usize, now: Instant) -> Result<(), Duration> {
        let Some(times) = self.failures.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.is_empty() {
            self.failures.remove(key);
            return Ok(());
        }
        match times.front() {
            Some(oldest) if times.len() >= max => Err(WINDOW - now.duration_since(*oldest)),
            _ => Ok(()),
        }
    }

    fn record(&mut self, key: &str, max: usize, now: Instant) {
        let times = self.failures.entry(key.to_owned()).or_default();
        times.push_back(now);
        while times.len() > max {
            times.pop_front();
        }
    }

    /// Forgets keys whose failures are all older than the window: memory stays bounded by the
    /// keys active in the last minute.
    fn sweep(&mut self, now: Instant) {
        self.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < WINDOW)
        });
    }
}

#[derive(Debug, Default)]
struct State {
    by_client: Window,
    by_org: Window,
    /// When each (pharmacy, address) was last logged, and refusals not logged since.
    warned: HashMap<String, (Instant, u64)>,
    last_sweep: Option<Instant>,
}

/// Wrong-code limits for every pharmacy on this replica.
#[derive(Debug, Default)]
pub struct ClaimLimiter {
    state: Mutex<State>,
}

fn client_key(org: &str, client: Option<IpAddr>) -> String {
    match client {
        Some(ip) => format!("{org}@{ip}"),
        None => format!("{org}@unknown"),
    }
}

impl ClaimLimiter {
    /// Whether `org` may try a code from `client` now; `Err` says how long until it may.
    pub fn check(&self, org: &str, client: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= WINDOW)
        {
            state.by_client.sweep(now);
            state.by_org.sweep(now);
            state
                .warned
                .retain(|_, (t, _)| now.duration_since(*t) < WINDOW * 2);
            state.last_sweep = Some(now);
        }
        let key = client_key(org, client);
        let refused = state
            .by_client
            .check(&key, FAILURES_PER_MINUTE, now)
            .and_then(|()| state.by_org.check(org, ORG_FAILURES_PER_MINUTE, now));
        if refused.is_err() {
            match state.warned.get_mut(&key) {
                Some((last, suppressed)) if now.duration_since(*last) < WINDOW => {
                    *suppressed += 1;
                }
                earlier => {
                    let before = earlier.map_or(0, |(_, suppressed)| *suppressed);
                    tracing::warn!(%org, client = %key, refused_since_last_log = before, "access-code claims over the limit; refused");
                    state.warned.insert(key, (now, 0));
                }
            }
        }
        refused
    }

    /// Counts one wrong code by `org` from `client`.
    pub fn failed(&self, org: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .by_client
            .record(&client_key(org, client), FAILURES_PER_MINUTE, now);
        state.by_org.record(org, ORG_FAILURES_PER_MINUTE, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn wrong_codes_lock_out_only_the_address_they_come_from_and_right_ones_are_free() {
        let limiter = ClaimLimiter::default();
        for _ in 0..FAILURES_PER_MINUTE {
            assert!(limiter.check("pharmacy-aozora", ip(1)).is_ok());
            limiter.failed("pharmacy-aozora", ip(1));
        }
        let wait = limiter.check("pharmacy-aozora", ip(1)).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert!(
            limiter.check("pharmacy-aozora", ip(2)).is_ok(),
            "the pharmacy's counter terminal is not locked out by a guesser elsewhere"
        );
        assert!(limiter.check("pharmacy-midori", ip(1)).is_ok());
        // Successful claims are never recorded: any number of them stays allowed.
        for _ in 0..1000 {
            assert!(limiter.check("pharmacy-midori", ip(3)).is_ok());
        }
    }

    #[test]
    fn a_guesser_with_many_addresses_meets_the_pharmacy_wide_ceiling() {
        let limiter = ClaimLimiter::default();
        for n in 0..ORG_FAILURES_PER_MINUTE {
            let from = ip(u8::try_from(n / FAILURES_PER_MINUTE).unwrap());
            assert!(limiter.check("pharmacy-aozora", from).is_ok(), "{n}");
            limiter.failed("pharmacy-aozora", from);
        }
        assert!(limiter.check("pharmacy-aozora", ip(200)).is_err());
        assert!(limiter.check("pharmacy-midori", ip(200)).is_ok());
    }
}
