//! Builds the research export from its configuration: the projects and keys, the consumer,
//! the releaser, and the researchers' API.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hixbus_bus::reader::{ReadError, Start, TopicReader};
use hixbus_bus::topics::TopicsError;
use hixbus_bus::{Publisher, topics};
use hixbus_consent::ConsentBook;
use hixbus_contracts::Event;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::config::Config;
use crate::export::{self, Export};
use crate::projects::{self, Keys, Project};
use crate::release::{Batching, Releaser};
use crate::routes::{self, AppState};
use crate::store::Store;

/// The service's name (health answers, logs, `hixbus serve research`).
pub const NAME: &str = "research";
/// The longest releases wait at start for the consent decisions to be read.
const PRELOAD_AT_MOST: Duration = Duration::from_secs(10);

/// The consumer group of every replica (unless `consumer_group` says otherwise).
pub const GROUP: &str = "hixbus-research";

/// Reads the projects and keys (refusing to start on anything it does not understand),
/// migrates its tables, creates the projects' topics and starts consuming and releasing.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    if !(10..=100_000).contains(&config.batch_records) {
        return Err(StartupError::Invalid(
            "batch_records is from 10 to 100000".to_owned(),
        ));
    }
    if !(100..=3_600_000).contains(&config.batch_wait_ms) {
        return Err(StartupError::Invalid(
            "batch_wait_ms is from 100 to 3600000".to_owned(),
        ));
    }
    let invalid = |e: projects::ProjectsError| StartupError::Invalid(e.to_string());
    let projects: Vec<Project> = match &config.projects {
        Some(path) => projects::load(path, &deps.directory).map_err(invalid)?,
        None => Vec::new(),
    };
    let keys = match &config.project_keys {
        Some(path) => Keys::load(path).map_err(invalid)?,
        None => Keys::default(),
    };
    for p in &projects {
        if keys.of(&p.id).is_none() {
            tracing::warn!(project = %p.id, "research project without a pseudonymization key: its events are dead-lettered until one is added");
        }
    }
    let projects = Arc::new(projects);
    let keys = Arc::new(keys);
    let db = deps.database()?;
    let store = Store::new(db.clone()).await?;
    let consents = ConsentBook::new(db.clone()).await?;
    let audit = AuditLog::new(db.clone()).await?;
    create_project_topics(&deps, &projects).await;
    let consumer = export::consumer(
        &deps.kafka,
        deps.codec.clone(),
        &config.consumer_group,
        Export {
            store: store.clone(),
            consents: consents.clone(),
            projects: projects.clone(),
            keys: keys.clone(),
        },
    )?;
    let stopping = CancellationToken::new();
    let releaser = Releaser {
        store: store.clone(),
        consents,
        publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
        audit: audit.clone(),
        projects: projects.clone(),
        keys,
        batching: Batching {
            records: config.batch_records,
            wait: Duration::from_millis(config.batch_wait_ms),
            ..Batching::default()
        },
    };
    // Releases begin once every consent decision on the bus is in the book (a replay from the
    // start must know each opt-out before its first release), or after a bounded wait, with a
    // warning: the consumer fills the book too, and each release checks it as it is made.
    let preload = (deps.clone(), releaser.consents.clone());
    let stop = stopping.clone();
    tokio::spawn(async move {
        let (deps, book) = preload;
        match tokio::time::timeout(PRELOAD_AT_MOST, load_consents(&deps, &book)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "consent decisions not read before releasing"),
            Err(_) => tracing::warn!(
                "consent decisions not all read within {PRELOAD_AT_MOST:?}; releasing as the consumer reads them"
            ),
        }
        releaser.run(stop).await;
    });
    let state = AppState {
        directory: deps.directory.clone(),
        store,
        projects,
    };
    Service::bind(
        NAME,
        config.listen,
        app(state, audit),
        vec![consumer],
        Some(db),
        stopping,
    )
    .await
}

/// Reads every consent decision on the bus into the book before anything is consumed or
/// released: a replay from the start (a new database, a reset group) reads clinical events
/// and consents concurrently, and an opt-out must be known before the first release, not
/// whenever its topic's turn comes.
async fn load_consents(deps: &Deps, book: &ConsentBook) -> Result<(), StartupError> {
    let topic = hixbus_contracts::Catalog::embedded()
        .entry("ConsentChanged")
        .map(|e| e.topic.clone())
        .unwrap_or_else(|| "consents".to_owned());
    // The reader reads past Tansu's short partition ends (docs/bus.md), so one read to the
    // end holds every decision made before the export started.
    let mut reader = match TopicReader::open(&deps.kafka, &topic, Start::Beginning) {
        Ok(reader) => reader,
        Err(ReadError::UnknownTopic(_)) => return Ok(()),
        Err(e) => return Err(StartupError::Invalid(format!("reading {topic}: {e}"))),
    };
    let mut loaded = 0;
    // Applied as read, not held whole: the topic holds every decision ever made.
    while let Some(record) = reader.next(true).await {
        let record = record.map_err(|e| StartupError::Invalid(format!("reading {topic}: {e}")))?;
        let Some(payload) = record.payload else {
            continue;
        };
        // Records that do not decode were dead-lettered by the live consumers.
        if let Ok(Ok(decoded)) = deps.codec.decode(&payload).await
            && let Event::ConsentChanged(c) = decoded.event
        {
            book.put(&c)
                .await
                .map_err(|e| StartupError::Invalid(format!("consent book: {e}")))?;
            loaded += 1;
        }
    }
    tracing::info!(
        consents = loaded,
        "consent decisions read before the export starts"
    );
    Ok(())
}

/// Creates each project's topic where it is missing; a cluster whose operators create topics
/// themselves refuses, which is logged (docs/research.md lists the topics).
async fn create_project_topics(deps: &Deps, projects: &[Project]) {
    let ids = projects.iter().map(|p| p.id.as_str());
    let result = match topics::research_specs(topics::EMBEDDED, ids) {
        // Bounded: librdkafka's in-memory cluster (`hixbus up`) has been seen not to answer.
        Ok(specs) => {
            tokio::time::timeout(Duration::from_secs(5), topics::create(&deps.kafka, &specs))
                .await
                .unwrap_or_else(|_| Err(TopicsError::Metadata("no answer within 5 s".to_owned())))
                .map(drop)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "research topics not created; create them as docs/research.md says");
    }
}

pub fn app(state: AppState, audit: AuditLog) -> Router {
    let directory = state.directory.clone();
    hixbus_service::api(
        Router::new().route("/research/releases", get(routes::releases)),
        directory,
        audit,
        16 * 1024,
    )
    .with_state(state)
}
