//! A hung test fails the run, with its name, instead of stalling CI until its time runs out.
//!
//! `cargo test` has no per-test timeout, and a test can hang where no `tokio::time::timeout`
//! reaches: in the runtime's teardown, dropping a client that blocks. Every helper that starts
//! something for a test registers the test (its thread) here; the entry goes when the test's
//! thread ends, after that teardown. A monitor thread ends the whole process once any test has
//! run longer than `HIXBUS_TEST_TIMEOUT_SECS` (default 360).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Running tests: thread id → (test name, started).
fn running() -> &'static Mutex<HashMap<String, (String, Instant)>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, (String, Instant)>>> = OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// Removes its test from [`running`] when the test's thread ends.
struct Registration(String);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut running) = running().lock() {
            running.remove(&self.0);
        }
    }
}

thread_local! {
    static REGISTERED: RefCell<Option<Registration>> = const { RefCell::new(None) };
}

/// Puts the calling test under the watchdog (once; later calls do nothing). Every helper calls
/// this first, so it also installs the TLS provider the tests' HTTP clients need.
pub fn watch() {
    hixbus_contracts::registry::install_tls_provider();
    let limit = limit();
    REGISTERED.with(|registered| {
        let mut registered = registered.borrow_mut();
        if registered.is_some() {
            return;
        }
        let thread = std::thread::current();
        let id = format!("{:?}", thread.id());
        let name = thread.name().unwrap_or("unnamed test").to_owned();
        if let Ok(mut running) = running().lock() {
            running.insert(id.clone(), (name, Instant::now()));
        }
        *registered = Some(Registration(id));
    });
    static MONITOR: OnceLock<()> = OnceLock::new();
    MONITOR.get_or_init(|| {
        std::thread::Builder::new()
            .name("hixbus-test-watchdog".to_owned())
            .spawn(move || monitor(limit))
            .map(drop)
            .expect("watchdog thread");
    });
}

fn limit() -> Duration {
    let secs = std::env::var("HIXBUS_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(360);
    Duration::from_secs(secs)
}

fn monitor(limit: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let overdue: Vec<String> = match running().lock() {
            Ok(running) => running
                .values()
                .filter(|(_, started)| started.elapsed() > limit)
                .map(|(name, started)| format!("{name} ({}s)", started.elapsed().as_secs()))
                .collect(),
            Err(_) => continue,
        };
        if !overdue.is_empty() {
            eprintln!(
                "\nhixbus test watchdog: {} ran longer than {}s (HIXBUS_TEST_TIMEOUT_SECS); \
                 ending the test process so the run fails instead of hanging",
                overdue.join(", "),
                limit.as_secs()
            );
            std::process::exit(124);
        }
    }
}
