//! What can go wrong in a read model a service keeps from the topics (a results inbox, an
//! insurer's feed): its database, or a stored document it can no longer read.

use hixbus_bus::HandlerError;

#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<ReadModelError> for HandlerError {
    /// A read model is a database: what fails there (a key taken by another replica meanwhile
    /// included) may work on a retry.
    fn from(e: ReadModelError) -> Self {
        HandlerError::transient(e)
    }
}
