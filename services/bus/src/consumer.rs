//! The consumer-group runner every hixbus service consumes through.
//!
//! A service registers one handler per event type; the runner subscribes to the topics those
//! types travel on and, for each record: decodes it, continues the producer's trace, calls the
//! handler, and stores the offset only after the handler succeeded (librdkafka commits stored
//! offsets in the background and on rebalance, so delivery is at-least-once; handlers make their
//! effects exactly-once by applying each event conditionally: see docs/bus.md).
//!
//! Each partition has its own lane: records of one partition are handled one at a time, in
//! order (a partition's order is the order of its effects, and one patient's events share a
//! partition), while different partitions proceed in parallel. A handler may also take a run of
//! consecutive records of its type at once ([`ConsumerBuilder::batch`]): when a lane has fallen
//! behind, what has queued up is then applied in one call (one database transaction instead of
//! one per record), and a run that fails is applied again one record at a time, so a bad record
//! is retried or dead-lettered alone. What goes wrong is sorted in two:
//! transient failures (registry or database down) retry with exponential backoff, holding that
//! partition only; records that can never succeed (undecodable, unknown schema, rejected by the
//! handler) go to `<topic>.dlq` with their cause, and the partition keeps flowing.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hixbus_contracts::codec::{Codec, DataError, Decoded};
use hixbus_contracts::{Catalog, Event, EventRecord};
use opentelemetry::KeyValue;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::{KafkaConfig, Role};
use crate::context::BusContext;
use crate::dlq::{self, CauseKind};
use crate::headers::HeaderList;
use crate::member::{Member, leave_off_thread};
use crate::publisher::{PublishError, Publisher};
use crate::reader::OwnedRecord;
use crate::telemetry::metrics;
use crate::trace;

/// What a handler knows about the record it is handling.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub schema_id: u32,
    pub group: String,
    /// The trace this handler runs in: the producer's, when it sent one.
    pub trace_id: Option<String>,
    /// 1 on first delivery to the handler, then 2, 3… on transient retries.
    pub attempt: u32,
    pub headers: HeaderList,
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (a dependency is down): retried with backoff.
    #[error("transient: {0}")]
    Transient(Box<dyn std::error::Error + Send + Sync>),
    /// Can never succeed (violates a business rule, references something that does not exist):
    /// dead-lettered with this reason.
    #[error("rejected: {0}")]
    Reject(String),
    /// Needs an event this consumer has not applied yet, one that travels on another topic or
    /// partition (a dispensing read before its prescription). Retried like a transient failure,
    /// but only [`RetryPolicy::not_yet_attempts`] times, then dead-lettered: an event that never
    /// comes must not stall the partition. Redrive it once the awaited event is there.
    #[error("waiting for: {0}")]
    NotYet(String),
}

impl HandlerError {
    pub fn transient(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError::Transient(error.into())
    }

    pub fn reject(reason: impl Into<String>) -> Self {
        HandlerError::Reject(reason.into())
    }

    /// `awaited` names what has not arrived, e.g. "prescription rx-1".
    pub fn not_yet(awaited: impl Into<String>) -> Self {
        HandlerError::NotYet(awaited.into())
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Dead-letter after this many handler attempts; `None` retries until shutdown, which is
    /// right when the failure is an outage that will end (the partition waits for it).
    pub max_attempts: Option<u32>,
    /// Attempts a [`HandlerError::NotYet`] gets before it is dead-lettered. With the default
    /// backoff, 12 attempts wait about two minutes: far longer than two topics drift apart in
    /// normal running, short enough that a missing event shows up in the DLQ the same day.
    pub not_yet_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_attempts: None,
            not_yet_attempts: 12,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The dead letter for a failure that `attempt` attempts did not cure, if it is time for one.
    fn give_up(&self, attempt: u32, retry: &Retry) -> Option<Failure> {
        let (limit, kind) = match retry.kind {
            RetryKind::Transient => (self.max_attempts, CauseKind::RetriesExhausted),
            RetryKind::NotYet => (
                Some(
                    self.not_yet_attempts
                        .min(self.max_attempts.unwrap_or(u32::MAX)),
                ),
                CauseKind::DependencyMissing,
            ),
        };
        limit.filter(|&max| attempt >= max).map(|_| Failure {
            kind,
            cause: format!("gave up after {attempt} attempts: {}", retry.reason),
        })
    }
}

/// What a run did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub handled: u64,
    pub dead_lettered: u64,
    /// Records of event types this consumer has no handler for.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("no handlers registered: a consumer must handle at least one event type")]
    NoHandlers,
    #[error("{0} has no topic in the event catalog")]
    NotInCatalog(&'static str),
    #[error(
        "a batch handler for {0} needs its one-record handler first: it is what a failed batch falls back to"
    )]
    BatchWithoutHandler(&'static str),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("dead-letter producer: {0}")]
    Publisher(#[from] PublishError),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(Event, EventContext) -> HandlerFuture + Send + Sync>;
type BatchHandler = Arc<dyn Fn(Vec<Event>) -> HandlerFuture + Send + Sync>;

/// Collects handlers, then builds the [`Consumer`].
pub struct ConsumerBuilder {
    config: KafkaConfig,
    codec: Arc<Codec>,
    group: String,
    handlers: HashMap<&'static str, Handler>,
    batches: HashMap<&'static str, BatchHandler>,
    topics: BTreeSet<String>,
    subscription: Option<BTreeSet<String>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// Handles events of type `E` with `handler`.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Result<Self, ConsumerError>
    where
        E: EventRecord,
        F: Fn(E, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let entry = Catalog::embedded()
            .entry(E::NAME)
            .ok_or(ConsumerError::NotInCatalog(E::NAME))?;
        if !entry.is_per_recipient() {
            self.topics.insert(entry.topic.clone());
        }
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |event: Event, ctx: EventContext| {
            let handler = handler.clone();
            Box::pin(async move {
                match E::try_from(event) {
                    Ok(typed) => handler(typed, ctx).await,
                    Err(other) => Err(HandlerError::reject(format!(
                        "handler for {} was given a {}",
                        E::NAME,
                        other.name()
                    ))),
                }
            }) as HandlerFuture
        });
        self.handlers.insert(E::NAME, erased);
        Ok(self)
    }

    /// Applies runs of consecutive `E` records of one partition with `handler`, all of them in
    /// one call. A run forms only from records already waiting in the lane, so a lane that keeps
    /// up still hands over one record at a time (to the handler given to [`Self::on`], which
    /// must come first); one that has fallen behind catches up a run at a time.
    ///
    /// The handler must apply all of a run or none of it (one transaction, one statement), or
    /// only effects that are harmless to apply twice: when it fails, for any reason, the run is
    /// applied again one record at a time through the one-record handler, whose retries and
    /// dead letters then single out the record that failed.
    pub fn batch<E, F, Fut>(mut self, handler: F) -> Result<Self, ConsumerError>
    where
        E: EventRecord,
        F: Fn(Vec<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        if !self.handlers.contains_key(E::NAME) {
            return Err(ConsumerError::BatchWithoutHandler(E::NAME));
        }
        let handler = Arc::new(handler);
        let erased: BatchHandler = Arc::new(move |events: Vec<Event>| {
            let handler = handler.clone();
            Box::pin(async move {
                let mut typed = Vec::with_capacity(events.len());
                for event in events {
                    match E::try_from(event) {
                        Ok(e) => typed.push(e),
                        Err(other) => {
                            return Err(HandlerError::reject(format!(
                                "batch handler for {} was given a {}",
                                E::NAME,
                                other.name()
                            )));
                        }
                    }
                }
                handler(typed).await
            }) as HandlerFuture
        });
        self.batches.insert(E::NAME, erased);
        Ok(self)
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Reads exactly `topics` rather than the handled types' catalog topics: an insurer reads
    /// its own topic (`hixbus_contracts::insurer_topic`), where several types travel.
    pub fn topics(mut self, topics: impl IntoIterator<Item = String>) -> Self {
        self.subscription = Some(topics.into_iter().collect());
        self
    }

    /// Handlers from here on get `state` (a cheap-to-clone handle: a read model, a store) as
    /// their first argument: `builder.with_state(view).on(ClinicView::issued)?`, with
    /// `async fn issued(self, e: PrescriptionIssued, ctx: EventContext) -> Result<(), HandlerError>`.
    pub fn with_state<S: Clone + Send + Sync + 'static>(self, state: S) -> StatefulBuilder<S> {
        StatefulBuilder {
            builder: self,
            state,
        }
    }

    /// Joins the group and subscribes to the handled event types' topics.
    pub fn build(self) -> Result<Consumer, ConsumerError> {
        if self.handlers.is_empty() {
            return Err(ConsumerError::NoHandlers);
        }
        let client = format!("{}-{}", self.config.client_id, self.group);
        let consumer: StreamConsumer<BusContext> = self
            .config
            .to_rdkafka(Role::GroupConsumer)
            .set("group.id", &self.group)
            .create_with_context(BusContext::for_group(client, &self.group))?;
        let topics: Vec<&str> = self
            .subscription
            .as_ref()
            .unwrap_or(&self.topics)
            .iter()
            .map(String::as_str)
            .collect();
        consumer.subscribe(&topics)?;
        crate::telemetry::zero_failure_series(&self.group, &topics);
        let dead_letters = Publisher::new(&self.config, self.codec.clone())?;
        Ok(Consumer {
            consumer: Arc::new(Member::new(consumer)),
            lane: Arc::new(Lane {
                codec: self.codec,
                group: self.group,
                handlers: self.handlers,
                batches: self.batches,
                retry: self.retry,
                dead_letters,
            }),
        })
    }
}

/// A [`ConsumerBuilder`] whose handlers take a state.
pub struct StatefulBuilder<S> {
    builder: ConsumerBuilder,
    state: S,
}

impl<S> std::fmt::Debug for StatefulBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatefulBuilder")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> StatefulBuilder<S> {
    /// Handles events of type `E` with `handler(state, event, context)`.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Result<Self, ConsumerError>
    where
        E: EventRecord,
        F: Fn(S, E, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.builder = self
            .builder
            .on(move |event: E, ctx: EventContext| handler(state.clone(), event, ctx))?;
        Ok(self)
    }

    /// Handles runs of `E` with `handler(state, events)`: see [`ConsumerBuilder::batch`].
    pub fn batch<E, F, Fut>(mut self, handler: F) -> Result<Self, ConsumerError>
    where
        E: EventRecord,
        F: Fn(S, Vec<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.builder = self
            .builder
            .batch(move |events: Vec<E>| handler(state.clone(), events))?;
        Ok(self)
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.builder = self.builder.retry(policy);
        self
    }

    /// See [`ConsumerBuilder::topics`].
    pub fn topics(mut self, topics: impl IntoIterator<Item = String>) -> Self {
        self.builder = self.builder.topics(topics);
        self
    }

    pub fn build(self) -> Result<Consumer, ConsumerError> {
        self.builder.build()
    }
}

/// A running member of one consumer group.
pub struct Consumer {
    consumer: Arc<Member>,
    lane: Arc<Lane>,
}

/// How long a graceful stop waits for the member to commit and leave its group before it
/// carries on and lets the leaving finish in the background.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// What every partition lane shares: how to decode, whom to call, where dead letters go.
struct Lane {
    codec: Arc<Codec>,
    group: String,
    handlers: HashMap<&'static str, Handler>,
    batches: HashMap<&'static str, BatchHandler>,
    retry: RetryPolicy,
    dead_letters: Publisher,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.lane.group)
            .finish_non_exhaustive()
    }
}

/// Records fetched but not yet handled, per partition. A partition whose queue is full is
/// paused (see [`Held`]), so it holds back only itself.
const LANE_QUEUE: usize = 64;

/// How often records held for full lanes are offered to them again.
const HELD_RETRY: Duration = Duration::from_millis(5);

/// Records held for one full lane before its partition is paused. Held rather than paused at
/// once: a paused partition resumes from inside the producer's batch it stopped in, which Kafka
/// serves exactly but Tansu 0.6.0's memory engine (the tests' broker) does not — it answers a
/// fetch from inside a batch with the batches after it, so the rest of that batch is never read
/// (the rebuild bench lost 0.2 % of a million prescriptions that way; its SQLite engine is exact).
const HOLD: usize = 4_096;

/// The queue feeding one partition's worker.
type LaneQueue = mpsc::Sender<OwnedRecord>;

/// Tries a run gets as a run when its handler says an earlier event has not arrived, before
/// its records are applied one at a time (each then waiting on its own): with the default
/// backoff, about a second and a half of waiting, as long as a rebuild's topics usually drift
/// apart.
const RUN_NOT_YET_ATTEMPTS: u32 = 5;

/// The most records one batch handler call takes: what one lane can have waiting.
const MAX_RUN: usize = LANE_QUEUE + 1;

/// A lane's worker has ended (shutdown interrupted it).
struct LaneClosed;

/// Records read for lanes whose queue was full, per partition, in order. Waiting for room in
/// one lane's queue would hold back polling, and so every other partition: a partition whose
/// handler waits for an event on another topic (a dispensing for its prescription, as a rebuild
/// reads both topics at once) then waited for a record that was never handed to its lane, until
/// it gave up and dead-lettered. Such records are held here instead, and polling goes on; past
/// [`HOLD`] of them the partition is paused (librdkafka stops fetching it and drops what it had
/// prefetched), so what is held stays bounded. Once its lane has taken them all, a paused
/// partition resumes from the record after the last one read.
#[derive(Default)]
struct Held(HashMap<(String, i32), std::collections::VecDeque<OwnedRecord>>);

impl Held {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands `record` to its lane, behind any held for its partition; pauses the partition when
    /// the lane has no room.
    fn send(
        &mut self,
        key: (String, i32),
        queue: &LaneQueue,
        record: OwnedRecord,
        consumer: &StreamConsumer<BusContext>,
    ) -> Result<(), LaneClosed> {
        if let Some(waiting) = self.0.get_mut(&key) {
            waiting.push_back(record);
            // Each further HOLD records (a pause can be undone by the partition being assigned
            // here again), so what is held stays bounded.
            if waiting.len() % HOLD == 0 {
                pause(consumer, &key, true);
            }
            return Ok(());
        }
        match queue.try_send(record) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.0.insert(key, [record].into());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LaneClosed),
        }
    }

    /// Offers held records to their lanes again; resumes each partition whose records all went.
    fn offer(
        &mut self,
        lanes: &HashMap<(String, i32), LaneQueue>,
        consumer: &StreamConsumer<BusContext>,
    ) -> Result<(), LaneClosed> {
        let mut emptied = Vec::new();
        for (key, waiting) in &mut self.0 {
            let Some(queue) = lanes.get(key) else {
                continue;
            };
            while let Some(record) = waiting.pop_front() {
                match queue.try_send(record) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(record)) => {
                        waiting.push_front(record);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(LaneClosed),
                }
            }
            if waiting.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.0.remove(&key);
            pause(consumer, &key, false);
        }
        Ok(())
    }
}

/// Pauses or resumes fetching one partition. A partition revoked meanwhile cannot be: its new
/// owner fetches it, and if it comes back here it comes back resumed by this call or by the
/// next time its lane has room.
fn pause(consumer: &StreamConsumer<BusContext>, (topic, partition): &(String, i32), on: bool) {
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(topic, *partition);
    let done = if on {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    if let Err(e) = done {
        tracing::debug!(topic, partition, pause = on, error = %e, "partition not paused or resumed");
    }
}

/// Where a record was read: its offset is stored once it is dealt with.
struct Position(String, i32, i64);

impl Position {
    fn of(record: &OwnedRecord) -> Self {
        Self(record.topic.clone(), record.partition, record.offset)
    }
}

/// What a lane does next with the records it has waiting.
enum Step {
    /// One record through its handler, already decoded when the lane looked at it (boxed: a
    /// decoded event is large, and a lane holds up to [`MAX_RUN`] steps).
    One(OwnedRecord, Option<Box<Decoded>>),
    /// Consecutive records of one type (two or more), with that type's batch handler.
    Run(BatchHandler, Vec<(OwnedRecord, Decoded)>),
}

/// What became of one record.
enum Outcome {
    Handled,
    DeadLettered,
    Skipped,
    /// Shutdown arrived while the record was waiting to be retried: its offset is not stored,
    /// so the next member of the group processes it.
    Interrupted,
}

/// Why a record cannot be handled.
struct Failure {
    kind: CauseKind,
    cause: String,
}

impl Consumer {
    pub fn builder(
        config: &KafkaConfig,
        codec: Arc<Codec>,
        group: impl Into<String>,
    ) -> ConsumerBuilder {
        ConsumerBuilder {
            config: config.clone(),
            codec,
            group: group.into(),
            handlers: HashMap::new(),
            batches: HashMap::new(),
            topics: BTreeSet::new(),
            subscription: None,
            retry: RetryPolicy::default(),
        }
    }

    pub fn group(&self) -> &str {
        &self.lane.group
    }

    /// Processes records until `shutdown` completes, then lets each partition finish the record
    /// in hand, commits the stored offsets and leaves the group. Records fetched but not started
    /// are left for the next member (their offsets were never stored).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunSummary, ConsumerError> {
        let (stop_tx, mut stop) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let group = self.lane.group.clone();
        tracing::info!(%group, handlers = ?self.lane.handlers.keys().collect::<Vec<_>>(), "consumer started");
        let mut lanes: HashMap<(String, i32), LaneQueue> = HashMap::new();
        // Owned by this future: if it is dropped (the task aborted, the process dying), every
        // lane goes with it and the member leaves the group, as a killed process would.
        let mut workers: JoinSet<RunSummary> = JoinSet::new();
        let mut held = Held::default();
        let mut retry = tokio::time::interval(HELD_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = retry.tick(), if !held.is_empty() => {
                    if held.offer(&lanes, &self.consumer).is_err() {
                        break;
                    }
                    continue;
                }
                received = self.consumer.recv() => received,
            };
            let record = match received {
                Ok(message) => OwnedRecord::from_message(&message),
                Err(e) => {
                    // librdkafka recovers from broker and network errors by itself; report and
                    // keep polling rather than tearing the group membership down.
                    tracing::warn!(%group, error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let key = (record.topic.clone(), record.partition);
            let queue = lanes
                .entry(key.clone())
                .or_insert_with(|| self.spawn_lane(&mut workers, stop.clone()));
            // A lane only ends early when shutdown interrupted it.
            if held.send(key, queue, record, &self.consumer).is_err() {
                break;
            }
        }
        drop(lanes);
        let mut summary = RunSummary::default();
        while let Some(done) = workers.join_next().await {
            if let Ok(lane) = done {
                summary.handled += lane.handled;
                summary.dead_lettered += lane.dead_lettered;
                summary.skipped += lane.skipped;
            }
        }
        watcher.abort();
        tracing::info!(%group, ?summary, "consumer stopping");
        self.close().await;
        Ok(summary)
    }

    /// Starts the worker of one partition: its records in order, offsets stored as they succeed.
    fn spawn_lane(
        &self,
        workers: &mut JoinSet<RunSummary>,
        mut stop: watch::Receiver<bool>,
    ) -> LaneQueue {
        let (queue, mut records) = mpsc::channel::<OwnedRecord>(LANE_QUEUE);
        let (consumer, lane) = (self.consumer.clone(), self.lane.clone());
        workers.spawn(async move {
            let mut summary = RunSummary::default();
            'lane: while let Some(first) = records.recv().await {
                let mut waiting = vec![first];
                if !lane.batches.is_empty() {
                    while waiting.len() < MAX_RUN {
                        match records.try_recv() {
                            Ok(record) => waiting.push(record),
                            Err(_) => break,
                        }
                    }
                }
                for step in lane.plan(waiting).await {
                    if *stop.borrow() {
                        break 'lane;
                    }
                    let outcomes = match step {
                        Step::One(record, decoded) => {
                            let position = Position::of(&record);
                            let decoded = decoded.map(|d| *d);
                            vec![(position, lane.process(record, decoded, &mut stop).await)]
                        }
                        Step::Run(handler, run) => lane.process_run(handler, run, &mut stop).await,
                    };
                    for (position, outcome) in outcomes {
                        match outcome {
                            Outcome::Interrupted => break 'lane,
                            Outcome::Handled => summary.handled += 1,
                            Outcome::DeadLettered => summary.dead_lettered += 1,
                            Outcome::Skipped => summary.skipped += 1,
                        }
                        let Position(topic, partition, offset) = position;
                        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                            // The partition was revoked meanwhile; its new owner processes the
                            // record again, and idempotent handlers make that harmless.
                            tracing::debug!(group = %lane.group, error = %e, "offset not stored");
                        }
                    }
                }
            }
            summary
        });
        queue
    }

    /// Commits what was stored, then leaves the group so its partitions move at once. All of it
    /// blocks, so it runs on a thread of its own; a member that cannot leave within
    /// [`LEAVE_TIMEOUT`] (the broker is gone) is left to finish in the background.
    async fn close(self) {
        let Consumer { consumer, lane } = self;
        let group = lane.group.clone();
        // The lanes have finished, so this is the last reference.
        let Some(consumer) = Arc::into_inner(consumer).and_then(Member::into_inner) else {
            tracing::warn!(%group, "consumer still shared at close; it leaves without a final commit");
            return;
        };
        let leaving = leave_off_thread(consumer, move |consumer| {
            let group = &lane.group;
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(%group, error = %e, "final commit failed"),
            }
            consumer.unsubscribe();
            if let Err(e) = lane.dead_letters.flush(Duration::from_secs(10)) {
                tracing::warn!(%group, error = %e, "dead-letter producer flush failed");
            }
        });
        if tokio::time::timeout(LEAVE_TIMEOUT, leaving).await.is_err() {
            tracing::warn!(%group, timeout = ?LEAVE_TIMEOUT, "consumer did not leave its group in time; leaving in the background");
        }
    }
}

impl Lane {
    /// Sorts the waiting records into steps, in order: runs of a type with a batch handler,
    /// and single records. Decodes only when there is a run to look for.
    async fn plan(&self, waiting: Vec<OwnedRecord>) -> Vec<Step> {
        // Only a lane with batch handlers takes more than one record at a time.
        if waiting.len() < 2 {
            return waiting.into_iter().map(|r| Step::One(r, None)).collect();
        }
        let mut steps = Vec::new();
        let mut run = Run::default();
        for record in waiting {
            let decoded = match record.payload.as_deref() {
                Some(payload) => self.codec.decode(payload).await.ok().and_then(Result::ok),
                None => None,
            };
            let batched = decoded
                .as_ref()
                .and_then(|d| self.batches.get_key_value(d.event.name()));
            if batched.map(|(name, _)| *name) != run.name() {
                run.flush(&mut steps);
            }
            match (batched, decoded) {
                (Some((_, handler)), Some(decoded)) => run.push(handler, record, decoded),
                (_, decoded) => steps.push(Step::One(record, decoded.map(Box::new))),
            }
        }
        run.flush(&mut steps);
        steps
    }

    /// The span of processing one record or a run starting at `first`, with OpenTelemetry's
    /// messaging attributes for a Kafka consumer. What differs between the two (the record's
    /// offset and id, or the run's length) is declared empty here and recorded by the caller:
    /// `tracing` takes a span's fields only where it is created.
    fn consume_span(&self, first: &OwnedRecord) -> tracing::Span {
        tracing::info_span!(
            "hixbus.consume",
            otel.kind = "consumer",
            otel.name = %format!("process {}", first.topic),
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %first.topic,
            messaging.destination.partition.id = %first.partition,
            messaging.consumer.group.name = %self.group,
            messaging.kafka.offset = tracing::field::Empty,
            messaging.message.id = tracing::field::Empty,
            messaging.batch.message_count = tracing::field::Empty,
            group = %self.group,
            event_type = tracing::field::Empty,
            event_id = tracing::field::Empty,
        )
    }

    /// Applies a run with its type's batch handler; if that fails, applies each record on its
    /// own (decoded again: the batch handler consumed the events).
    async fn process_run(
        &self,
        handler: BatchHandler,
        run: Vec<(OwnedRecord, Decoded)>,
        stop: &mut watch::Receiver<bool>,
    ) -> Vec<(Position, Outcome)> {
        let name = run[0].1.event.name();
        let (records, events): (Vec<OwnedRecord>, Vec<Event>) =
            run.into_iter().map(|(r, d)| (r, d.event)).unzip();
        // One span for the run, linked to the trace of each record in it (OpenTelemetry's
        // messaging conventions for a batch).
        let span = self.consume_span(&records[0]);
        span.record("messaging.batch.message_count", records.len());
        span.record("event_type", name);
        for record in &records {
            trace::link_trace(&span, &record.headers);
        }
        let call = handler(events).instrument(span.clone());
        let mut result = self.measured(name, &records, call).await;
        // A run waiting for an earlier event waits as a run, for a while: applied one at a time
        // at once, every record of it would take a statement of its own (a rebuild, reading
        // dispensings ahead of their prescriptions, would then crawl).
        let mut attempt = 1;
        while let Err(HandlerError::NotYet(awaited)) = &result
            && attempt < RUN_NOT_YET_ATTEMPTS
        {
            self.count_retry(RetryKind::NotYet);
            let wait = self.retry.backoff(attempt);
            tracing::info!(parent: &span, attempt, ?wait, %awaited, records = records.len(), "run waiting for an earlier event");
            if sleep_or_stop(wait, stop).await {
                return vec![(Position::of(&records[0]), Outcome::Interrupted)];
            }
            // The handler took the events; the records are decoded again.
            let Some(events) = self.decode_all(&records).await else {
                break;
            };
            attempt += 1;
            let call = handler(events).instrument(span.clone());
            result = self.measured(name, &records, call).await;
        }
        match result {
            Ok(()) => records
                .iter()
                .map(|r| (Position::of(r), Outcome::Handled))
                .collect(),
            Err(e) => {
                tracing::info!(parent: &span, error = %e, records = records.len(), "run not applied; applying its records one at a time");
                let mut outcomes = Vec::with_capacity(records.len());
                for record in records {
                    let position = Position::of(&record);
                    let outcome = self.process(record, None, stop).await;
                    let interrupted = matches!(outcome, Outcome::Interrupted);
                    outcomes.push((position, outcome));
                    if interrupted {
                        break;
                    }
                }
                outcomes
            }
        }
    }

    /// The events of `records`, decoded again; `None` if one no longer decodes (the registry is
    /// out of reach, say): the records then go one at a time, which sorts that out.
    async fn decode_all(&self, records: &[OwnedRecord]) -> Option<Vec<Event>> {
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let payload = record.payload.as_deref()?;
            events.push(self.codec.decode(payload).await.ok()?.ok()?.event);
        }
        Some(events)
    }

    /// Awaits the handler's `call` for `records` (one, or a run) and counts it: how long it
    /// took and, when it succeeded, each record consumed and how old it was by then.
    async fn measured(
        &self,
        name: &'static str,
        records: &[OwnedRecord],
        call: impl Future<Output = Result<(), HandlerError>>,
    ) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = call.await;
        let labels = [
            KeyValue::new("group", self.group.clone()),
            KeyValue::new("event_type", name),
        ];
        metrics()
            .handler_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        if result.is_ok() {
            metrics().consumed.add(records.len() as u64, &labels);
            for record in records {
                self.record_latency(record, name);
            }
        }
        result
    }

    /// How old `record` was when its handler finished (from the producer's timestamp).
    fn record_latency(&self, record: &OwnedRecord, name: &'static str) {
        let Some(sent_ms) = record.timestamp_ms else {
            return;
        };
        let age_ms = Utc::now().timestamp_millis().saturating_sub(sent_ms);
        // A producer's clock ahead of ours gives a negative age: not a latency.
        if age_ms >= 0 {
            let labels = [
                KeyValue::new("group", self.group.clone()),
                KeyValue::new("topic", record.topic.clone()),
                KeyValue::new("event_type", name),
            ];
            metrics()
                .delivery_latency
                .record(age_ms as f64 / 1000.0, &labels);
        }
    }

    async fn process(
        &self,
        record: OwnedRecord,
        decoded: Option<Decoded>,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let span = self.consume_span(&record);
        span.record("messaging.kafka.offset", record.offset);
        trace::continue_trace(&span, &record.headers);
        self.process_in_span(record, decoded, &span, stop)
            .instrument(span.clone())
            .await
    }

    async fn process_in_span(
        &self,
        record: OwnedRecord,
        mut decoded: Option<Decoded>,
        span: &tracing::Span,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let mut attempt = 0u32;
        let failure = loop {
            attempt += 1;
            match self.attempt(&record, decoded.take(), span, attempt).await {
                Ok(outcome) => return outcome,
                Err(Attempt::Failed(failure)) => {
                    self.count_error(failure.kind.as_str());
                    break failure;
                }
                Err(Attempt::Retry(retry)) => {
                    self.count_retry(retry.kind);
                    if let Some(failure) = self.retry.give_up(attempt, &retry) {
                        break failure;
                    }
                    let wait = self.retry.backoff(attempt);
                    let reason = &retry.reason;
                    match retry.kind {
                        RetryKind::Transient => {
                            tracing::warn!(attempt, ?wait, %reason, "transient failure; retrying")
                        }
                        RetryKind::NotYet => {
                            tracing::info!(attempt, ?wait, %reason, "waiting for an earlier event")
                        }
                    }
                    if sleep_or_stop(wait, stop).await {
                        return Outcome::Interrupted;
                    }
                }
            }
        };
        self.dead_letter(&record, failure, stop).await
    }

    /// A failure that will be tried again: an error of its kind, and a retry.
    fn count_retry(&self, kind: RetryKind) {
        self.count_error(kind.as_str());
        let labels = [KeyValue::new("group", self.group.clone())];
        metrics().handler_retries.add(1, &labels);
    }

    fn count_error(&self, kind: &'static str) {
        let labels = [
            KeyValue::new("group", self.group.clone()),
            KeyValue::new("kind", kind),
        ];
        metrics().handler_errors.add(1, &labels);
    }

    /// One try at decoding (unless that was done) and handling the record.
    async fn attempt(
        &self,
        record: &OwnedRecord,
        decoded: Option<Decoded>,
        span: &tracing::Span,
        attempt: u32,
    ) -> Result<Outcome, Attempt> {
        let decoded = match decoded {
            Some(decoded) => decoded,
            None => self.decode(record).await?,
        };
        let name = decoded.event.name();
        span.record("event_type", name);
        span.record("event_id", decoded.event.envelope().event_id.as_str());
        span.record(
            "messaging.message.id",
            decoded.event.envelope().event_id.as_str(),
        );
        let Some(handler) = self.handlers.get(name) else {
            tracing::debug!(event_type = name, "no handler for this event type; skipped");
            return Ok(Outcome::Skipped);
        };
        let ctx = EventContext {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            schema_id: decoded.schema_id,
            group: self.group.clone(),
            trace_id: trace::trace_id(span),
            attempt,
            headers: record.headers.clone(),
        };
        let call = handler(decoded.event, ctx);
        match self
            .measured(name, std::slice::from_ref(record), call)
            .await
        {
            Ok(()) => Ok(Outcome::Handled),
            Err(HandlerError::Reject(reason)) => Err(Attempt::Failed(Failure {
                kind: CauseKind::Rejected,
                cause: reason,
            })),
            Err(HandlerError::Transient(e)) => Err(Attempt::Retry(Retry::transient(e))),
            Err(HandlerError::NotYet(awaited)) => Err(Attempt::Retry(Retry {
                kind: RetryKind::NotYet,
                reason: format!("{awaited} has not arrived"),
            })),
        }
    }

    async fn decode(&self, record: &OwnedRecord) -> Result<Decoded, Attempt> {
        let Some(payload) = record.payload.as_deref() else {
            return Err(Attempt::Failed(Failure {
                kind: CauseKind::Undecodable,
                cause: "record has no value".to_owned(),
            }));
        };
        match self.codec.decode(payload).await {
            Err(transient) => Err(Attempt::Retry(Retry::transient(transient))),
            Ok(Err(data)) => Err(Attempt::Failed(data_failure(&data))),
            Ok(Ok(decoded)) => Ok(decoded),
        }
    }

    /// Sends the record to `<topic>.dlq`, retrying until the broker takes it: the offset must
    /// not move past a record that is neither handled nor safely dead-lettered.
    async fn dead_letter(
        &self,
        record: &OwnedRecord,
        failure: Failure,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let dlq_topic = crate::dlq_topic(&record.topic);
        tracing::warn!(
            dlq = %dlq_topic,
            cause_kind = failure.kind.as_str(),
            cause = %failure.cause,
            "dead-lettering record"
        );
        let list = dlq::dead_letter_headers(
            record,
            failure.kind,
            &failure.cause,
            &self.group,
            Utc::now(),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .dead_letters
                .send_raw(
                    &dlq_topic,
                    record.key.as_deref().unwrap_or_default(),
                    record.payload.as_deref().unwrap_or_default(),
                    &list,
                )
                .await;
            match sent {
                Ok(_) => {
                    let labels = [
                        KeyValue::new("group", self.group.clone()),
                        KeyValue::new("topic", record.topic.clone()),
                        KeyValue::new("cause_kind", failure.kind.as_str()),
                    ];
                    metrics().dead_lettered.add(1, &labels);
                    return Outcome::DeadLettered;
                }
                Err(e) => {
                    let wait = self.retry.backoff(attempt);
                    tracing::error!(error = %e, ?wait, "cannot write the dead letter; retrying");
                    if sleep_or_stop(wait, stop).await {
                        return Outcome::Interrupted;
                    }
                }
            }
        }
    }
}

/// The run a lane is gathering: consecutive records of one batched type.
#[derive(Default)]
struct Run {
    handler: Option<(&'static str, BatchHandler)>,
    records: Vec<(OwnedRecord, Decoded)>,
}

impl Run {
    fn name(&self) -> Option<&'static str> {
        self.handler.as_ref().map(|(name, _)| *name)
    }

    fn push(&mut self, handler: &BatchHandler, record: OwnedRecord, decoded: Decoded) {
        let name = decoded.event.name();
        self.handler.get_or_insert_with(|| (name, handler.clone()));
        self.records.push((record, decoded));
    }

    /// Ends the run: two or more records become a [`Step::Run`], one goes alone.
    fn flush(&mut self, steps: &mut Vec<Step>) {
        let Some((_, handler)) = self.handler.take() else {
            return;
        };
        let mut records = std::mem::take(&mut self.records);
        match records.len() {
            1 => {
                let (record, decoded) = records.remove(0);
                steps.push(Step::One(record, Some(Box::new(decoded))));
            }
            _ => steps.push(Step::Run(handler, records)),
        }
    }
}

enum Attempt {
    Retry(Retry),
    Failed(Failure),
}

/// A failed attempt that may succeed later.
struct Retry {
    kind: RetryKind,
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryKind {
    /// Something is down; wait as long as the policy's `max_attempts` allows.
    Transient,
    /// An earlier event has not been applied; wait `not_yet_attempts` at most.
    NotYet,
}

impl RetryKind {
    fn as_str(self) -> &'static str {
        match self {
            RetryKind::Transient => "transient",
            RetryKind::NotYet => "not_yet",
        }
    }
}

impl Retry {
    fn transient(error: impl std::fmt::Display) -> Self {
        Self {
            kind: RetryKind::Transient,
            reason: error.to_string(),
        }
    }
}

fn data_failure(error: &DataError) -> Failure {
    let kind = match error {
        DataError::UnknownSchemaId(_)
        | DataError::UnknownEventType { .. }
        | DataError::InvalidWriterSchema { .. }
        | DataError::Incompatible { .. } => CauseKind::UnknownSchema,
        DataError::Framing(_) | DataError::Body { .. } => CauseKind::Undecodable,
    };
    Failure {
        kind,
        cause: error.to_string(),
    }
}

/// Sleeps for `wait`; true if shutdown was requested first.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => true,
        () = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let waits: Vec<_> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn an_outage_is_waited_out_but_a_missing_event_is_dead_lettered_after_its_budget() {
        let outage = Retry::transient("database down");
        let missing = Retry {
            kind: RetryKind::NotYet,
            reason: "prescription rx-1 has not arrived".to_owned(),
        };
        let unbounded = RetryPolicy::default();
        assert!(unbounded.give_up(1_000, &outage).is_none());
        assert!(unbounded.give_up(11, &missing).is_none());
        let failure = unbounded.give_up(12, &missing).expect("budget spent");
        assert_eq!(failure.kind, CauseKind::DependencyMissing);
        assert_eq!(
            failure.cause,
            "gave up after 12 attempts: prescription rx-1 has not arrived"
        );

        // A tighter overall limit binds both kinds.
        let bounded = RetryPolicy {
            max_attempts: Some(3),
            ..RetryPolicy::default()
        };
        assert_eq!(
            bounded.give_up(3, &outage).map(|f| f.kind),
            Some(CauseKind::RetriesExhausted)
        );
        assert_eq!(
            bounded.give_up(3, &missing).map(|f| f.kind),
            Some(CauseKind::DependencyMissing)
        );
    }

    #[test]
    fn unknown_schemas_and_bad_bytes_are_told_apart() {
        assert_eq!(
            data_failure(&DataError::UnknownSchemaId(9)).kind,
            CauseKind::UnknownSchema
        );
        let framing = DataError::Framing(hixbus_contracts::wire::WireError::BadMagic(7));
        let failure = data_failure(&framing);
        assert_eq!(failure.kind, CauseKind::Undecodable);
        assert!(failure.cause.contains("magic"), "{}", failure.cause);
    }
}
