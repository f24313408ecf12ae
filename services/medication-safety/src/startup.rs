//! Builds the check: its state rebuilt from the topics, the consumer that keeps checking, and
//! health endpoints for the orchestrator (it has no other API).

use axum::Router;
use hixbus_bus::Publisher;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};

use crate::config::Config;
use crate::rules::Rules;
use crate::service;

/// The service's name (health answers, logs, `hixbus serve medication-safety`).
pub const NAME: &str = "medication-safety";

/// Rebuilds the state (waiting for the broker if it is away) and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let rules = Rules::embedded().map_err(|e| StartupError::Invalid(format!("rules: {e}")))?;
    let publisher = Publisher::new(&deps.kafka, deps.codec.clone())?;
    let consumer = service::start(&deps.kafka, publisher, rules)
        .await
        .map_err(|e| StartupError::Invalid(e.to_string()))?;
    Service::bind(
        NAME,
        config.listen,
        Router::new()
            .fallback(hixbus_service::no_such_route)
            .method_not_allowed_fallback(hixbus_service::method_not_allowed),
        vec![consumer],
        None,
        CancellationToken::new(),
    )
    .await
}
