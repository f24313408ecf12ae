//! Logging set up once per process. `HIXBUS_LOG` (or `RUST_LOG`) takes tracing's filter syntax;
//! `HIXBUS_LOG_FORMAT=json` switches to one JSON object per line for log shippers.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("HIXBUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let json = std::env::var("HIXBUS_LOG_FORMAT").is_ok_and(|f| f == "json");
    // try_init: a second call (in tests) keeps the first subscriber instead of panicking.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
