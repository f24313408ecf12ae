use std::net::SocketAddr;
use std::sync::Arc;

use hixbus_access::Directory;

use crate::domain::CompatibilityLevel;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub listen: SocketAddr,
    /// `postgres://…`, `sqlite://path.db` (created if missing) or `sqlite::memory:`.
    pub database_url: String,
    /// Level used by subjects without their own, until changed through `PUT /config`.
    pub default_compatibility: CompatibilityLevel,
    /// Largest request body accepted; Avro schemas are small, so this guards memory, not use.
    pub max_body_bytes: usize,
    /// Who may read and change schemas (see `auth.rs`); `None` leaves the registry open.
    pub organizations: Option<Arc<Directory>>,
    /// With `organizations`: reads need no credentials, changes still need an operator. For the
    /// dev stack, whose README commands (`curl /subjects`, `hixbus tail`) send no key.
    pub anonymous_reads: bool,
}

impl RegistryConfig {
    pub fn new(listen: SocketAddr, database_url: impl Into<String>) -> Self {
        Self {
            listen,
            database_url: database_url.into(),
            default_compatibility: CompatibilityLevel::Backward,
            max_body_bytes: 1024 * 1024,
            organizations: None,
            anonymous_reads: false,
        }
    }
}
