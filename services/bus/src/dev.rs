//! The in-memory broker of `hixbus up`: librdkafka's mock cluster, for development only.
//!
//! It speaks the Kafka protocol on a real port (any Kafka client can connect), handles produce,
//! fetch, consumer groups and idempotence, and keeps everything in memory: nothing survives the
//! process. It cannot create topics through the admin API, so topics are created directly.
//! The mock picks its own port; a small TCP forwarder gives it a stable bootstrap address
//! (clients bootstrap there, then connect to the broker address the metadata advertises).

use std::net::SocketAddr;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot start the in-memory broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running in-memory broker.
pub struct DevCluster {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    mock_bootstrap: String,
    bootstrap: String,
    forwarder: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DevCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCluster")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl DevCluster {
    /// Starts the broker with `topics`, reachable at `listen` when given (else at the mock's own
    /// ephemeral port).
    pub async fn start(listen: Option<SocketAddr>, topics: &[TopicSpec]) -> Result<Self, DevError> {
        let cluster = MockCluster::new(1)?;
        for topic in topics {
            cluster.create_topic(&topic.name, topic.partitions, 1)?;
        }
        let mock_bootstrap = cluster.bootstrap_servers();
        let (bootstrap, forwarder) = match listen {
            None => (mock_bootstrap.clone(), None),
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| DevError::Listen { addr, source })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| DevError::Listen { addr, source })?;
                let target = mock_bootstrap.clone();
                (
                    local.to_string(),
                    Some(tokio::spawn(forward(listener, target))),
                )
            }
        };
        Ok(Self {
            _cluster: cluster,
            mock_bootstrap,
            bootstrap,
            forwarder,
        })
    }

    /// Where clients bootstrap.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The mock broker's own address (what metadata advertises).
    pub fn broker_address(&self) -> &str {
        &self.mock_bootstrap
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
    }
}

async fn forward(listener: TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %target, "dev broker forwarder cannot connect")
                }
            }
        });
    }
}
