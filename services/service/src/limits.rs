//! Bounds on what one client can hold at once, so one organization cannot starve the others:
//! concurrent heavy reads, open live streams. Each organization has its own allowance; what is
//! over it is answered at once (429 with `Retry-After`) instead of queueing behind the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// At most `max` holders per key at a time.
#[derive(Debug)]
pub struct PerKeyLimit {
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One unit of a key's allowance, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<PerKeyLimit>,
    key: String,
}

impl PerKeyLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit for `key`, or `None` when `key` already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, key: &str) -> Option<Permit> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Permit {
            limit: self.clone(),
            key: key.to_owned(),
        })
    }

    /// How many permits `key` holds now.
    pub fn held(&self, key: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self
            .limit
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_allowance_and_dropping_gives_it_back() {
        let limit = PerKeyLimit::new(2);
        let a1 = limit.try_acquire("a").unwrap();
        let _a2 = limit.try_acquire("a").unwrap();
        assert!(limit.try_acquire("a").is_none());
        assert!(limit.try_acquire("b").is_some(), "b is not held back by a");
        drop(a1);
        assert_eq!(limit.held("a"), 1);
        assert!(limit.try_acquire("a").is_some());
    }
}
