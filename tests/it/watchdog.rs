//! The test watchdog (tests/support/watchdog.rs) ends a hung run with the hung test's name.

use std::process::Command;
use std::time::Duration;

/// Runs itself again as a child with a one-second limit, in which it hangs; the child must end
/// with status 124 and name this test on its error stream. Its message used to go through
/// `eprintln!`, which libtest captured and lost with the process: a CI run ended with status 124
/// and no name.
#[test]
fn a_hung_test_ends_the_run_and_is_named() {
    if std::env::var_os("HIXBUS_WATCHDOG_HANG").is_some() {
        hixbus_tests::watch();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watchdog::a_hung_test_ends_the_run_and_is_named"])
        .env("HIXBUS_WATCHDOG_HANG", "1")
        .env("HIXBUS_TEST_TIMEOUT_SECS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(124), "{stderr}");
    assert!(
        stderr.contains("hixbus test watchdog: watchdog::a_hung_test_ends_the_run_and_is_named"),
        "{stderr}"
    );
}
