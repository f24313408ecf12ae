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

/// Running tests: thread id → (test name, started, its limit).
type Running = HashMap<String, (String, Instant, Duration)>;

fn running() -> &'static Mutex<Running> {
    static RUNNING: OnceLock<Mutex<Running>> = OnceLock::new();
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
        let id = thread_key();
        let name = thread.name().unwrap_or("unnamed test").to_owned();
        if let Ok(mut running) = running().lock() {
            running.insert(id.clone(), (name, Instant::now(), limit));
        }
        *registered = Some(Registration(id));
    });
    static MONITOR: OnceLock<()> = OnceLock::new();
    MONITOR.get_or_init(|| {
        std::thread::Builder::new()
            .name("hixbus-test-watchdog".to_owned())
            .spawn(monitor)
            .map(drop)
            .expect("watchdog thread");
    });
}

/// The calling test's key in [`running`]: its thread (libtest runs each test on its own).
fn thread_key() -> String {
    format!("{:?}", std::thread::current().id())
}

fn limit() -> Duration {
    let secs = std::env::var("HIXBUS_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(360);
    Duration::from_secs(secs)
}

/// Gives the calling test `limit` instead of `HIXBUS_TEST_TIMEOUT_SECS` when that is longer: for
/// a test whose work is large by design (the 10,000-patient research run takes 195 s alone and
/// shares the two cores with another test). The watchdog is there for hangs, not for speed.
pub fn allow(limit: Duration) {
    watch();
    if let Ok(mut running) = running().lock()
        && let Some(entry) = running.get_mut(&thread_key())
    {
        entry.2 = entry.2.max(limit);
    }
}

fn monitor() {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let overdue: Vec<String> = match running().lock() {
            Ok(running) => running
                .values()
                .filter(|(_, started, limit)| started.elapsed() > *limit)
                .map(|(name, started, limit)| {
                    format!(
                        "{name} ({}s, more than its {}s)",
                        started.elapsed().as_secs(),
                        limit.as_secs()
                    )
                })
                .collect(),
            Err(_) => continue,
        };
        if !overdue.is_empty() {
            // Written to the stream itself: this thread was started from a test's, so libtest
            // captures what `eprintln!` prints here, and the capture dies with the process (a
            // CI run ended with status 124 and no name).
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\nhixbus test watchdog: {} ran too long (HIXBUS_TEST_TIMEOUT_SECS); ending the \
                 test process so the run fails instead of hanging",
                overdue.join(", "),
            );
            std::process::exit(124);
        }
    }
}
