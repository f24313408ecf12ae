//! Sends the hostile corpus (`hixbus_tests::hostile`) to running services, round after round,
//! and reports what came back; `tests/smoke/up.sh` runs it against `hixbus up` and watches the
//! process's memory meanwhile.
//!
//!   hostile GATEWAY_URL PHARMACY_URL REGISTRY_URL ROUNDS
//!
//! Keys come from `SAKURA_KEY` (a clinic), `AOZORA_KEY` and `MIDORI_KEY` (two pharmacies), as
//! `hixbus up` prints them. Exits 1 if any answer was not the one expected.

use hixbus_tests::hostile::{self, Target};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gateway, pharmacy, registry, rounds] = args.as_slice() else {
        eprintln!("usage: hostile GATEWAY_URL PHARMACY_URL REGISTRY_URL ROUNDS");
        return std::process::ExitCode::from(2);
    };
    let key = |name: &str| std::env::var(name).unwrap_or_default();
    let target = Target {
        gateway: gateway.clone(),
        pharmacy: pharmacy.clone(),
        registry: Some(registry.clone()),
        clinic_key: key("SAKURA_KEY"),
        pharmacy_key: key("AOZORA_KEY"),
        other_pharmacy_key: key("MIDORI_KEY"),
        foreign_prescription: None,
    };
    let cases = hostile::corpus(&target);
    let rounds: usize = rounds.parse().unwrap_or(1);
    let (mut requests, mut shed) = (0, 0);
    let mut failures = Vec::new();
    for _ in 0..rounds {
        let outcome = hostile::run(&cases, 32).await;
        requests += outcome.requests;
        shed += outcome.shed;
        failures.extend(outcome.failures);
    }
    println!(
        "{}",
        serde_json::json!({
            "kinds": cases.len(),
            "requests": requests,
            "shed": shed,
            "unexpected": failures.len(),
        })
    );
    failures.sort();
    failures.dedup();
    for failure in failures.iter().take(20) {
        eprintln!("unexpected: {failure}");
    }
    if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
