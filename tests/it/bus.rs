//! The bus runtime against a real Kafka-protocol broker (Tansu, or whatever
//! `HIXBUS_TEST_BOOTSTRAP_SERVERS` / Docker provide; see `support/broker.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::reader::{Start, TopicReader};
use hixbus_bus::{Consumer, EventContext, HandlerError, RunSummary, dlq, headers};
use hixbus_contracts::{
    EventRecord, LabResultReported, PrescriptionDispensed, PrescriptionIssued, samples,
};
use hixbus_storage::Database;
use hixbus_tests::{Backend, BusStack, Engine, Tansu, TestBroker, TestRegistry, unique};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Waits until `check` holds, failing the test after `limit`.
async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stopper() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// A consumer running in the background.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<RunSummary, ConsumerError>>,
}

impl Running {
    fn spawn(consumer: Consumer) -> Self {
        let (stop, shutdown) = stopper();
        Self {
            stop,
            task: tokio::spawn(consumer.run(shutdown)),
        }
    }

    /// Graceful shutdown; what the run did.
    async fn stop(self) -> RunSummary {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap()
    }
}

/// A consumer in a new group that sends every `E` that `keep` accepts down a channel.
fn forwarding<E: EventRecord>(
    stack: &BusStack,
    keep: impl Fn(&E) -> bool + Send + Sync + 'static,
) -> (Running, mpsc::UnboundedReceiver<(E, EventContext)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let keep = Arc::new(keep);
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("forward"))
        .on(move |e: E, ctx: EventContext| {
            if keep(&e) {
                let _ = tx.send((e, ctx));
            }
            async { Ok(()) }
        })
        .unwrap()
        .build()
        .unwrap();
    (Running::spawn(consumer), rx)
}

#[tokio::test]
async fn a_consumer_continues_the_publishers_trace_and_sees_the_event_as_sent() {
    let stack = BusStack::start().await;
    let patient = unique("patient");
    let event = samples::prescription_issued(&patient, 12);

    // The clinic publishes inside its own trace.
    let span = tracing::info_span!("clinic issues prescription");
    let producer_trace = hixbus_bus::trace::trace_id(&span).expect("tracing is on");
    let delivery = stack
        .publisher()
        .publish(&event)
        .instrument(span)
        .await
        .expect("published");
    assert_eq!(delivery.topic, "prescriptions");

    // The pharmacy, another service with its own group, consumes it.
    let wanted = patient.clone();
    let (running, mut seen) = forwarding(&stack, move |e: &PrescriptionIssued| {
        e.envelope.patient_ref == wanted
    });

    let (received, ctx) = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("event consumed in time")
        .expect("event");
    assert_eq!(
        received, event,
        "the consumer sees exactly what was published"
    );
    assert_eq!(ctx.trace_id.as_deref(), Some(producer_trace.as_str()));
    assert_eq!(
        (ctx.partition, ctx.offset),
        (delivery.partition, delivery.offset)
    );
    assert_eq!(
        headers::get(&ctx.headers, headers::EVENT_TYPE),
        Some("PrescriptionIssued")
    );
    assert_eq!(
        headers::get(&ctx.headers, headers::PRODUCER_ORG),
        Some(event.envelope.producer_org.as_str())
    );
    assert_eq!(
        headers::get(&ctx.headers, headers::SCHEMA_ID),
        Some(ctx.schema_id.to_string().as_str())
    );

    let summary = running.stop().await;
    assert!(summary.handled >= 1);
}

/// Handles prescriptions for one patient: rejects those whose id is in `reject` while
/// `rejecting` is set, records the rest.
#[derive(Clone, Default)]
struct Pharmacy {
    handled: Arc<Mutex<Vec<String>>>,
    rejecting: Arc<AtomicBool>,
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_with_its_cause_and_the_partition_keeps_flowing() {
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let patient = unique("patient");
    let rx = |n: &str| {
        let mut e = samples::prescription_issued(&patient, 1);
        e.prescription_id = format!("{patient}-{n}");
        e
    };

    // Same key, so same partition, in this order: good, garbage, rejected, good.
    let first = publisher.publish(&rx("first")).await.unwrap();
    let garbage = publisher
        .send_raw(
            "prescriptions",
            patient.as_bytes(),
            b"not avro at all",
            &vec![],
        )
        .await
        .unwrap();
    let rejected = publisher.publish(&rx("unknown-pharmacy")).await.unwrap();
    let last = publisher.publish(&rx("last")).await.unwrap();
    assert!(
        [&garbage, &rejected, &last]
            .iter()
            .all(|d| d.partition == first.partition)
    );

    let pharmacy = Pharmacy::default();
    pharmacy.rejecting.store(true, Ordering::SeqCst);
    let group = unique("pharmacy");
    let start_consumer = |pharmacy: Pharmacy| {
        let wanted = patient.clone();
        Consumer::builder(&stack.kafka, stack.codec(), group.clone())
            .on(move |e: PrescriptionIssued, _ctx: EventContext| {
                let pharmacy = pharmacy.clone();
                let wanted = wanted.clone();
                async move {
                    if e.envelope.patient_ref != wanted {
                        return Ok(());
                    }
                    if e.prescription_id.ends_with("unknown-pharmacy")
                        && pharmacy.rejecting.load(Ordering::SeqCst)
                    {
                        return Err(HandlerError::reject("target pharmacy is not registered"));
                    }
                    pharmacy.handled.lock().unwrap().push(e.prescription_id);
                    Ok(())
                }
            })
            .unwrap()
            .build()
            .unwrap()
    };
    let running = Running::spawn(start_consumer(pharmacy.clone()));

    let handled = pharmacy.handled.clone();
    eventually(
        Duration::from_secs(30),
        "the record after the poison ones",
        || handled.lock().unwrap().len() >= 2,
    )
    .await;
    assert_eq!(
        *handled.lock().unwrap(),
        [format!("{patient}-first"), format!("{patient}-last")]
    );

    // Both poison records are on prescriptions.dlq, with the original bytes and the cause.
    let letters = own_letters_once(&stack, &patient, 2).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let bad = &letters[0];
    assert_eq!(bad.cause_kind.as_deref(), Some("undecodable"));
    assert!(
        bad.cause.as_deref().unwrap().contains("magic byte"),
        "{bad:?}"
    );
    assert_eq!(bad.source_topic.as_deref(), Some("prescriptions"));
    assert_eq!(bad.source_partition, Some(garbage.partition));
    assert_eq!(bad.source_offset, Some(garbage.offset));
    assert_eq!(bad.consumer_group.as_deref(), Some(group.as_str()));
    assert!(bad.failed_at.is_some());
    let raw = dlq::find(
        &stack.kafka,
        "prescriptions",
        bad.dlq_partition,
        bad.dlq_offset,
    )
    .await
    .unwrap();
    assert_eq!(raw.payload.as_deref(), Some(&b"not avro at all"[..]));
    let refused = &letters[1];
    assert_eq!(refused.cause_kind.as_deref(), Some("rejected"));
    assert_eq!(
        refused.cause.as_deref(),
        Some("target pharmacy is not registered")
    );
    assert_eq!(refused.source_offset, Some(rejected.offset));
    assert_eq!(refused.event_type.as_deref(), Some("PrescriptionIssued"));

    // The pharmacy gets registered; a redrive puts the rejected prescription back and it is
    // handled. The garbage comes back too, and is dead-lettered again.
    pharmacy.rejecting.store(false, Ordering::SeqCst);
    let redriven = dlq::redrive_one(
        &stack.kafka,
        &publisher,
        "prescriptions",
        refused.dlq_partition,
        refused.dlq_offset,
    )
    .await
    .unwrap();
    assert_eq!(redriven.to_topic, "prescriptions");
    eventually(Duration::from_secs(30), "the redriven prescription", || {
        handled.lock().unwrap().len() >= 3
    })
    .await;
    assert_eq!(
        handled.lock().unwrap()[2],
        format!("{patient}-unknown-pharmacy")
    );

    let summary = running.stop().await;
    assert!(summary.dead_lettered >= 2, "{summary:?}");
}

/// What a consumer with a batch handler did: every prescription of the test's patient it
/// applied, in order, and the size of each run its batch handler was given.
#[derive(Default, Clone)]
struct Batched {
    applied: Arc<Mutex<Vec<String>>>,
    runs: Arc<Mutex<Vec<usize>>>,
    failed_runs: Arc<AtomicU64>,
}

#[tokio::test]
async fn a_lane_behind_applies_its_queue_in_runs_and_a_failing_run_one_record_at_a_time() {
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let patient = unique("patient");
    let poison = format!("{patient}-17");
    // Queued before the consumer starts, on one partition (one key): the lane starts behind.
    let ids: Vec<String> = (0..40).map(|n| format!("{patient}-{n}")).collect();
    let events: Vec<PrescriptionIssued> = ids
        .iter()
        .map(|id| {
            let mut e = samples::prescription_issued(&patient, 1);
            e.prescription_id = id.clone();
            e
        })
        .collect();
    for e in &events {
        publisher.publish(e).await.unwrap();
    }

    let batched = Batched::default();
    let (single, run) = (batched.clone(), batched.clone());
    let (mine, mine_too, rejected) = (patient.clone(), patient.clone(), poison.clone());
    // A run holding any of these fails as a whole (the poison's statement would fail them all):
    // a range, so that some run surely holds one, whatever the runs' boundaries.
    let failing: BTreeSet<String> = ids[10..30].iter().cloned().collect();
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("batched"))
        .on(move |e: PrescriptionIssued, _ctx: EventContext| {
            let (single, mine, poison) = (single.clone(), mine.clone(), rejected.clone());
            async move {
                // Slower than a run, as one transaction per record is: the queue builds up.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if e.envelope.patient_ref != mine {
                    return Ok(());
                }
                if e.prescription_id == poison {
                    return Err(HandlerError::reject("violates a rule"));
                }
                single.applied.lock().unwrap().push(e.prescription_id);
                Ok(())
            }
        })
        .unwrap()
        .batch(move |events: Vec<PrescriptionIssued>| {
            let (run, mine, failing) = (run.clone(), mine_too.clone(), failing.clone());
            async move {
                run.runs.lock().unwrap().push(events.len());
                // All or nothing, as one statement is.
                if events.iter().any(|e| failing.contains(&e.prescription_id)) {
                    run.failed_runs.fetch_add(1, Ordering::SeqCst);
                    return Err(HandlerError::transient("constraint violated"));
                }
                run.applied.lock().unwrap().extend(
                    events
                        .into_iter()
                        .filter(|e| e.envelope.patient_ref == mine)
                        .map(|e| e.prescription_id),
                );
                Ok(())
            }
        })
        .unwrap()
        .build()
        .unwrap();
    let running = Running::spawn(consumer);

    let applied = batched.applied.clone();
    eventually(Duration::from_secs(60), "every good prescription", || {
        applied.lock().unwrap().len() >= 39
    })
    .await;
    let letters = own_letters_once(&stack, &patient, 1).await;
    let summary = running.stop().await;

    // Each good one applied once, in the order published; the poison alone dead-lettered.
    let expected: Vec<String> = ids.iter().filter(|id| **id != poison).cloned().collect();
    assert_eq!(*batched.applied.lock().unwrap(), expected);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].cause_kind.as_deref(), Some("rejected"));
    assert_eq!(letters[0].cause.as_deref(), Some("violates a rule"));
    assert!(summary.dead_lettered >= 1, "{summary:?}");
    // Runs did form, and those that failed were taken apart.
    let runs = batched.runs.lock().unwrap().clone();
    assert!(runs.iter().any(|&n| n > 1), "no run formed: {runs:?}");
    assert!(
        batched.failed_runs.load(Ordering::SeqCst) >= 1,
        "no failing run was taken apart"
    );
}

#[tokio::test]
async fn a_run_waiting_for_an_earlier_event_waits_and_is_applied_again_as_a_run() {
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let patient = unique("patient");
    // Queued before the consumer starts, on one partition (one key): the lane starts behind.
    let ids: Vec<String> = (0..40).map(|n| format!("{patient}-{n}")).collect();
    for id in &ids {
        let mut e = samples::prescription_issued(&patient, 1);
        e.prescription_id = id.clone();
        publisher.publish(&e).await.unwrap();
    }

    // Each id applied, and whether alone or in a run; the first run of this patient's
    // prescriptions is told that an event it needs has not arrived yet (it has, by its next try).
    let applied: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let waited: Arc<Mutex<Vec<String>>> = Arc::default();
    let (alone, in_run, told) = (applied.clone(), applied.clone(), waited.clone());
    let (mine, mine_too) = (patient.clone(), patient.clone());
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("waiting"))
        .on(move |e: PrescriptionIssued, _ctx: EventContext| {
            let (alone, mine) = (alone.clone(), mine.clone());
            async move {
                // Slower than a run, as one transaction per record is: the queue builds up.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if e.envelope.patient_ref == mine {
                    alone.lock().unwrap().push((e.prescription_id, "alone"));
                }
                Ok(())
            }
        })
        .unwrap()
        .batch(move |events: Vec<PrescriptionIssued>| {
            let (in_run, told, mine) = (in_run.clone(), told.clone(), mine_too.clone());
            async move {
                let ids: Vec<String> = events
                    .into_iter()
                    .filter(|e| e.envelope.patient_ref == mine)
                    .map(|e| e.prescription_id)
                    .collect();
                {
                    let mut told = told.lock().unwrap();
                    if told.is_empty() && !ids.is_empty() {
                        *told = ids;
                        return Err(HandlerError::not_yet("the dispensing's prescription"));
                    }
                }
                in_run
                    .lock()
                    .unwrap()
                    .extend(ids.into_iter().map(|id| (id, "run")));
                Ok(())
            }
        })
        .unwrap()
        .build()
        .unwrap();
    let running = Running::spawn(consumer);
    let done = applied.clone();
    eventually(Duration::from_secs(60), "every prescription", || {
        done.lock().unwrap().len() >= ids.len()
    })
    .await;
    let summary = running.stop().await;

    let applied = applied.lock().unwrap().clone();
    let order: Vec<String> = applied.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(order, ids, "each applied once, in the order published");
    let waited = waited.lock().unwrap().clone();
    assert!(waited.len() > 1, "no run was told to wait: {waited:?}");
    // The run that waited was applied again as a run, not taken apart.
    for id in &waited {
        assert!(
            applied.contains(&(id.clone(), "run")),
            "{id} of the run that waited was applied alone: {applied:?}"
        );
    }
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
}

#[tokio::test]
async fn a_batch_handler_needs_its_one_record_handler_to_fall_back_to() {
    let stack = BusStack::start().await;
    let refused = Consumer::builder(&stack.kafka, stack.codec(), unique("batched"))
        .batch(|_: Vec<PrescriptionIssued>| async { Ok(()) })
        .expect_err("a batch handler alone is refused");
    assert!(
        matches!(
            refused,
            ConsumerError::BatchWithoutHandler("PrescriptionIssued")
        ),
        "{refused}"
    );
}

/// A partition whose records wait for events on another topic (dispensings for their
/// prescriptions, as a rebuild reads both topics at once) fills its lane's queue. Before the
/// runner paused such a partition, it waited for room in that queue and so stopped polling: the
/// prescriptions were never handed to their lane, and every dispensing was retried until it was
/// dead-lettered.
#[tokio::test]
async fn a_partition_waiting_for_another_topic_does_not_hold_back_the_topic_it_waits_for() {
    const WAITING: usize = 150;
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let patient = unique("patient");
    // One key, one partition: more than a lane's queue holds.
    for n in 0..WAITING {
        let mut d = samples::prescription_dispensed(&patient);
        d.prescription_id = format!("{patient}-{n}");
        publisher.publish(&d).await.unwrap();
    }
    let issued: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let dispensed: Arc<Mutex<Vec<String>>> = Arc::default();
    let waits = Arc::new(AtomicU64::new(0));
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("pharmacy"))
        .on({
            let issued = issued.clone();
            move |e: PrescriptionIssued, _: EventContext| {
                issued.lock().unwrap().insert(e.prescription_id);
                async { Ok(()) }
            }
        })
        .unwrap()
        .on({
            let (issued, dispensed, waits) = (issued.clone(), dispensed.clone(), waits.clone());
            move |e: PrescriptionDispensed, _: EventContext| {
                let (issued, dispensed, waits) = (issued.clone(), dispensed.clone(), waits.clone());
                async move {
                    if !issued.lock().unwrap().contains(&e.prescription_id) {
                        waits.fetch_add(1, Ordering::SeqCst);
                        return Err(HandlerError::not_yet(format!(
                            "prescription {}",
                            e.prescription_id
                        )));
                    }
                    dispensed.lock().unwrap().push(e.prescription_id);
                    Ok(())
                }
            }
        })
        .unwrap()
        .build()
        .unwrap();
    let running = Running::spawn(consumer);
    // The dispensings' lane is stuck on its first record, its queue full behind it.
    let stuck = waits.clone();
    eventually(
        Duration::from_secs(60),
        "the first dispensing to wait",
        || stuck.load(Ordering::SeqCst) >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in 0..WAITING {
        let mut e = samples::prescription_issued(&patient, 1);
        e.prescription_id = format!("{patient}-{n}");
        publisher.publish(&e).await.unwrap();
    }
    let done = dispensed.clone();
    eventually(Duration::from_secs(60), "every dispensing recorded", || {
        done.lock().unwrap().len() >= WAITING
    })
    .await;
    let summary = running.stop().await;
    let expected: Vec<String> = (0..WAITING).map(|n| format!("{patient}-{n}")).collect();
    assert_eq!(*dispensed.lock().unwrap(), expected, "each once, in order");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
}

#[tokio::test]
async fn an_event_waiting_for_another_is_applied_when_it_comes_and_dead_lettered_if_it_never_does()
{
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let patient = unique("patient");
    let rx = |n: &str| {
        let mut e = samples::prescription_issued(&patient, 1);
        e.prescription_id = format!("{patient}-{n}");
        e
    };
    // Same key, same partition, in this order.
    publisher.publish(&rx("late")).await.unwrap();
    let never = publisher.publish(&rx("never")).await.unwrap();
    publisher.publish(&rx("last")).await.unwrap();

    // "late" waits for something that comes by its third attempt; "never" for something that
    // never comes.
    let handled: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let wanted = patient.clone();
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("clinic-view"))
        .on({
            let handled = handled.clone();
            move |e: PrescriptionIssued, ctx: EventContext| {
                let (handled, wanted) = (handled.clone(), wanted.clone());
                async move {
                    if e.envelope.patient_ref != wanted {
                        return Ok(());
                    }
                    let id = e.prescription_id;
                    if id.ends_with("-never") || (id.ends_with("-late") && ctx.attempt < 3) {
                        return Err(HandlerError::not_yet(format!("the order for {id}")));
                    }
                    handled.lock().unwrap().push((id, ctx.attempt));
                    Ok(())
                }
            }
        })
        .unwrap()
        .retry(hixbus_bus::RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_attempts: None,
            not_yet_attempts: 5,
        })
        .build()
        .unwrap();
    let running = Running::spawn(consumer);
    eventually(
        Duration::from_secs(30),
        "the record after the waiting ones",
        || handled.lock().unwrap().len() >= 2,
    )
    .await;
    assert_eq!(
        *handled.lock().unwrap(),
        [
            (format!("{patient}-late"), 3),
            (format!("{patient}-last"), 1)
        ]
    );

    let letters = own_letters_once(&stack, &patient, 1).await;
    assert_eq!(
        letters.len(),
        1,
        "only the one that never came: {letters:#?}"
    );
    assert_eq!(letters[0].cause_kind.as_deref(), Some("dependency_missing"));
    assert_eq!(
        letters[0].cause.as_deref(),
        Some(
            format!("gave up after 5 attempts: the order for {patient}-never has not arrived")
                .as_str()
        )
    );
    assert_eq!(letters[0].source_offset, Some(never.offset));
    running.stop().await;
}

/// `patient`'s dead letters once there are at least `count` (or after 10 s, whatever is there).
async fn own_letters_once(stack: &BusStack, patient: &str, count: usize) -> Vec<dlq::DeadLetter> {
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = own_letters(stack, patient).await;
        if letters.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    letters
}

async fn own_letters(stack: &BusStack, patient: &str) -> Vec<dlq::DeadLetter> {
    dlq::list(&stack.kafka, "prescriptions")
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.as_deref() == Some(patient))
        .collect()
}

#[tokio::test]
async fn every_kind_of_bad_record_is_dead_lettered_and_a_pending_redrive_replays_each_once() {
    let stack = BusStack::start().await;
    if !stack.broker.is_own() {
        return; // the redrive group's position spans every test's dead letters on a shared cluster
    }
    let publisher = stack.publisher();
    // Too short to be framed; framed with a schema id the registry never issued; framed with
    // a real id but a body that is not that schema's.
    let real_id = stack.codec().schema_id("LabResultReported").await.unwrap();
    let mut wrong_body = vec![0];
    wrong_body.extend_from_slice(&real_id.to_be_bytes());
    wrong_body.extend_from_slice(&[0xff; 3]);
    let poison: [&[u8]; 3] = [
        b"\x00\x00\x00\x00",
        b"\x00\x00\x01\x86\x9f\x02",
        &wrong_body,
    ];
    for (n, bytes) in poison.iter().enumerate() {
        publisher
            .send_raw("lab-results", format!("p{n}").as_bytes(), bytes, &vec![])
            .await
            .unwrap();
    }
    let consumer = Consumer::builder(&stack.kafka, stack.codec(), unique("lab"))
        .on(|_: LabResultReported, _| async { Ok(()) })
        .unwrap()
        .build()
        .unwrap();
    let running = Running::spawn(consumer);
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = dlq::list(&stack.kafka, "lab-results").await.unwrap();
        if letters.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 3);
    let mut causes: Vec<(String, String)> = letters
        .iter()
        .map(|l| (l.key.clone().unwrap(), l.cause_kind.clone().unwrap()))
        .collect();
    causes.sort();
    assert_eq!(
        causes,
        [
            ("p0".to_owned(), "undecodable".to_owned()),
            ("p1".to_owned(), "unknown_schema".to_owned()),
            ("p2".to_owned(), "undecodable".to_owned()),
        ]
    );
    let unknown = letters
        .iter()
        .find(|l| l.key.as_deref() == Some("p1"))
        .unwrap();
    assert!(
        unknown.cause.as_deref().unwrap().contains("99999"),
        "{unknown:?}"
    );
    running.stop().await;

    let first = dlq::redrive_pending(&stack.kafka, &publisher, "lab-results")
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let second = dlq::redrive_pending(&stack.kafka, &publisher, "lab-results")
        .await
        .unwrap();
    assert!(second.is_empty(), "already redriven: {second:?}");
    let back = TopicReader::open(&stack.kafka, "lab-results", Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let redriven: Vec<_> = back
        .iter()
        .filter(|r| headers::get(&r.headers, dlq::REDRIVEN_FROM).is_some())
        .collect();
    assert_eq!(redriven.len(), 3);
    assert!(
        redriven
            .iter()
            .all(|r| headers::get(&r.headers, dlq::CAUSE).is_none())
    );
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_and_restarted_neither_loses_nor_double_applies() {
    let stack = BusStack::start().await;
    let db = dispensing_database().await;
    let group = unique("pharmacy");

    let patient = unique("patient");
    let publisher = stack.publisher();
    let total = 40;
    for n in 0..total {
        let mut e = samples::prescription_issued(&patient, 1);
        e.prescription_id = format!("{patient}-{n}");
        publisher.publish(&e).await.unwrap();
    }

    let calls = Arc::new(AtomicU64::new(0));
    let redelivered = Arc::new(AtomicU64::new(0));
    // The first instance dies right after committing its 15th effect, before the runner can
    // store that record's offset: the crash window at-least-once delivery leaves open.
    let build = |die_after: Option<u64>| {
        dispensing_consumer(
            &stack,
            &db,
            &group,
            std::slice::from_ref(&patient),
            &calls,
            &redelivered,
            die_after,
        )
    };
    let die_after = Some(15u64);

    let (_never, shutdown) = stopper();
    let first = tokio::spawn(build(die_after).run(shutdown));
    let counter = calls.clone();
    eventually(
        Duration::from_secs(30),
        "the first instance to apply 15 effects",
        || counter.load(Ordering::SeqCst) >= 15,
    )
    .await;
    first.abort(); // killed mid-batch: no graceful shutdown
    let _ = first.await;

    let second = Running::spawn(build(None));
    wait_for_queue(&db, total as i64).await;
    second.stop().await;

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, prescription_id FROM dispensing_queue")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let distinct: BTreeSet<&str> = rows.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(rows.len(), total as usize, "each effect exactly once");
    assert_eq!(distinct.len(), total as usize);
    assert!(
        redelivered.load(Ordering::SeqCst) >= 1,
        "the record in flight when the first instance died was delivered again and skipped"
    );
}

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_nothing_the_publisher_reported_sent() {
    let mut tansu = Tansu::start(Engine::Sqlite, None);
    let broker = TestBroker::external(tansu.bootstrap());
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let stack = BusStack::on(broker, registry).await;
    let publisher = stack.publisher();
    let patient = unique("patient");

    let total = 300usize;
    let restarted = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let sender = {
        let publisher = publisher.clone();
        let restarted = restarted.clone();
        let acked = acked.clone();
        let patient = patient.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0usize;
            let mut acked_after_restart = 0usize;
            for n in 0..total {
                let mut e = samples::lab_result_reported(&format!("{patient}-{}", n % 7));
                e.order_id = format!("order-{n}");
                match publisher.publish(&e).await {
                    Ok(_) => {
                        acknowledged.push(e.envelope.event_id.clone());
                        acked.fetch_add(1, Ordering::SeqCst);
                        if restarted.load(Ordering::SeqCst) {
                            acked_after_restart += 1;
                        }
                    }
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acknowledged, failed, acked_after_restart)
        })
    };
    let counter = acked.clone();
    eventually(Duration::from_secs(30), "the stream to be flowing", || {
        counter.load(Ordering::SeqCst) >= 50
    })
    .await;
    tansu.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tansu.restart();
    restarted.store(true, Ordering::SeqCst);
    let (acknowledged, failed, acked_after_restart) = sender.await.unwrap();
    eprintln!(
        "acknowledged {}, failed {failed}, acknowledged after the restart {acked_after_restart}",
        acknowledged.len()
    );
    assert!(acknowledged.len() - acked_after_restart >= 50);
    assert!(
        acked_after_restart > 0,
        "the publisher recovered once the broker came back"
    );

    let codec = stack.codec();
    let stored = TopicReader::open(&stack.kafka, "lab-results", Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let mut on_broker: HashMap<String, usize> = HashMap::new();
    for record in &stored {
        let decoded = codec
            .decode(record.payload.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        *on_broker
            .entry(decoded.event.envelope().event_id.clone())
            .or_default() += 1;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !on_broker.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}",
        lost.len()
    );
    let duplicated = on_broker.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated, 0, "the idempotent producer wrote duplicates");
}

/// Confluent's Python client (confluent-kafka with its AvroSerializer/AvroDeserializer, which
/// `tests/run` installs) reads what the runtime publishes and writes records the runtime reads.
#[tokio::test]
async fn confluents_own_client_reads_what_we_publish_and_we_consume_what_it_writes() {
    let python = std::env::var("HIXBUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let stack = BusStack::start().await;
    let patient = unique("患者");
    let publisher = stack.publisher();
    let mut sent = Vec::new();
    for n in 0..3 {
        let mut e = samples::lab_result_reported(&patient);
        e.order_id = format!("order-{n}");
        publisher.publish(&e).await.unwrap();
        sent.push(e);
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/bus_interop.py");
    let output = tokio::process::Command::new(&python)
        .args([
            script,
            &stack.broker.bootstrap,
            &stack.registry.url,
            "lab-results",
            &patient,
            "3",
        ])
        .output()
        .await
        .expect("run Confluent's Python client (use tests/run, which installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), 3);
    for (value, ours) in theirs.iter().zip(&sent) {
        assert_eq!(
            value["envelope"]["event_id"],
            ours.envelope.event_id.as_str()
        );
        assert_eq!(value["order_id"], ours.order_id.as_str());
        assert_eq!(
            value["results"].as_array().unwrap().len(),
            ours.results.len()
        );
    }

    // Python wrote them back with "py-" ids; the runtime consumes and decodes them.
    let wanted = patient.clone();
    let (running, mut seen) = forwarding(&stack, move |e: &LabResultReported| {
        e.envelope.patient_ref == wanted && e.envelope.event_id.starts_with("py-")
    });
    let mut from_python = Vec::new();
    while from_python.len() < 3 {
        let (e, _) = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("records written by Confluent's client arrive")
            .unwrap();
        from_python.push(e);
    }
    let summary = running.stop().await;
    assert_eq!(summary.dead_lettered, 0);
    from_python.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    for (mut theirs, ours) in from_python.into_iter().zip(sent) {
        assert_eq!(
            theirs.envelope.event_id,
            format!("py-{}", ours.envelope.event_id)
        );
        theirs.envelope.event_id = ours.envelope.event_id.clone();
        assert_eq!(
            theirs, ours,
            "every field survives the trip through Confluent's client"
        );
    }
}

/// A pharmacy that queues each prescription of `patients` for dispensing exactly once, the way
/// hixbus's services make effects idempotent: the effect is keyed by the event id and applied
/// conditionally (`ON CONFLICT DO NOTHING`), so a redelivery finds it done. `die_after` makes
/// it hang forever right after its n-th effect committed.
fn dispensing_consumer(
    stack: &BusStack,
    db: &Database,
    group: &str,
    patients: &[String],
    calls: &Arc<AtomicU64>,
    redelivered: &Arc<AtomicU64>,
    die_after: Option<u64>,
) -> Consumer {
    let db = db.clone();
    let (calls, redelivered) = (calls.clone(), redelivered.clone());
    let patients: Arc<BTreeSet<String>> = Arc::new(patients.iter().cloned().collect());
    Consumer::builder(&stack.kafka, stack.codec(), group)
        .on(move |e: PrescriptionIssued, _ctx: EventContext| {
            let (db, calls, redelivered) = (db.clone(), calls.clone(), redelivered.clone());
            let ours = patients.contains(&e.envelope.patient_ref);
            async move {
                if !ours {
                    return Ok(());
                }
                let applied = sqlx::query(
                    "INSERT INTO dispensing_queue VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(&e.envelope.event_id)
                .bind(&e.prescription_id)
                .execute(&db.pool)
                .await
                .map_err(HandlerError::transient)?
                .rows_affected();
                if applied == 0 {
                    redelivered.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if die_after == Some(n) {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .unwrap()
        .build()
        .unwrap()
}

async fn dispensing_database() -> Database {
    let database = hixbus_tests::fresh_database(Backend::Postgres).await;
    let db = Database::connect(&database).await.unwrap();
    sqlx::query(
        "CREATE TABLE dispensing_queue (event_id TEXT PRIMARY KEY, prescription_id TEXT NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

/// Waits until `total` prescriptions are queued, failing after a minute.
async fn wait_for_queue(db: &Database, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while queued(db).await.0 < total {
        assert!(
            Instant::now() < deadline,
            "effects missing: {:?}",
            queued(db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (rows, distinct prescriptions) in the dispensing queue.
async fn queued(db: &Database) -> (i64, i64) {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT COUNT(*), COUNT(DISTINCT prescription_id) FROM dispensing_queue",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn members_joining_and_leaving_mid_stream_neither_lose_nor_double_apply() {
    let stack = BusStack::start().await;
    let db = dispensing_database().await;
    let group = unique("pharmacy");
    let patients: Vec<String> = (0..12).map(|_| unique("patient")).collect();
    let calls = Arc::new(AtomicU64::new(0));
    let redelivered = Arc::new(AtomicU64::new(0));
    let member = || dispensing_consumer(&stack, &db, &group, &patients, &calls, &redelivered, None);

    // The stream flows while members come and go: A alone, then A and B (rebalance), then B
    // alone after A shuts down (rebalance again).
    let total = 240;
    let publisher = stack.publisher();
    let producing = {
        let patients = patients.clone();
        tokio::spawn(async move {
            for n in 0..total {
                let patient = &patients[n % patients.len()];
                let mut e = samples::prescription_issued(patient, 1);
                e.prescription_id = format!("{patient}-{n}");
                publisher.publish(&e).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let a = Running::spawn(member());
    let progress = calls.clone();
    eventually(Duration::from_secs(30), "A to be working", || {
        progress.load(Ordering::SeqCst) >= 40
    })
    .await;
    let b = Running::spawn(member());
    let progress = calls.clone();
    eventually(
        Duration::from_secs(30),
        "the group to make progress",
        || progress.load(Ordering::SeqCst) >= 120,
    )
    .await;
    let summary_a = a.stop().await;
    producing.await.unwrap();

    wait_for_queue(&db, total as i64).await;
    let summary_b = b.stop().await;
    assert_eq!(
        queued(&db).await,
        (total as i64, total as i64),
        "every prescription queued exactly once (A: {summary_a:?}, B: {summary_b:?})"
    );
    assert!(
        summary_b.handled > 0,
        "B took over partitions: {summary_b:?}"
    );
}

#[tokio::test]
async fn a_partition_waiting_out_a_transient_failure_does_not_hold_up_the_others() {
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    // Two patients whose records land on different partitions.
    let stuck = unique("patient");
    let first = publisher
        .publish(&samples::prescription_issued(&stuck, 1))
        .await
        .unwrap();
    let mut other = unique("patient");
    let mut probe = publisher
        .publish(&samples::prescription_issued(&other, 1))
        .await
        .unwrap();
    while probe.partition == first.partition {
        other = unique("patient");
        probe = publisher
            .publish(&samples::prescription_issued(&other, 1))
            .await
            .unwrap();
    }
    for _ in 0..4 {
        publisher
            .publish(&samples::prescription_issued(&other, 1))
            .await
            .unwrap();
    }

    let handled = Arc::new(AtomicU64::new(0));
    let attempts_on_stuck = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (stuck, other) = (stuck.clone(), other.clone());
        let (handled, attempts) = (handled.clone(), attempts_on_stuck.clone());
        Consumer::builder(&stack.kafka, stack.codec(), unique("pharmacy"))
            .on(move |e: PrescriptionIssued, _: EventContext| {
                let (handled, attempts) = (handled.clone(), attempts.clone());
                let (is_stuck, is_other) = (
                    e.envelope.patient_ref == stuck,
                    e.envelope.patient_ref == other,
                );
                async move {
                    if is_stuck {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        return Err(HandlerError::transient("the pharmacy system is down"));
                    }
                    if is_other {
                        handled.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                }
            })
            .unwrap()
            .build()
            .unwrap()
    };
    let running = Running::spawn(consumer);
    let progress = handled.clone();
    eventually(
        Duration::from_secs(30),
        "the other partition's records",
        || progress.load(Ordering::SeqCst) >= 5,
    )
    .await;
    let attempts = attempts_on_stuck.clone();
    eventually(
        Duration::from_secs(30),
        "the stuck record to keep being retried",
        || attempts.load(Ordering::SeqCst) >= 3,
    )
    .await;
    let summary = running.stop().await;
    assert_eq!(
        summary.dead_lettered, 0,
        "a transient failure is never dead-lettered"
    );
}

/// Leaving a consumer group blocks until librdkafka reports the consumer closed, which with the
/// broker gone may be never (rust-rdkafka #509). Neither a graceful stop nor a runner dropped
/// mid-flight may hang on that: CI once hung for 90 minutes in exactly this teardown.
#[tokio::test]
async fn a_consumer_whose_broker_died_still_stops_and_never_stalls_its_runtime() {
    let mut tansu = Tansu::start(Engine::Memory, None);
    let broker = TestBroker::external(tansu.bootstrap());
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let stack = BusStack::on(broker, registry).await;
    let patient = unique("patient");
    stack
        .publisher()
        .publish(&samples::prescription_issued(&patient, 1))
        .await
        .unwrap();

    // Two members that have joined and consumed: one to stop gracefully, one to abort.
    let wanted = patient.clone();
    let (graceful, mut seen) = forwarding(&stack, move |e: &PrescriptionIssued| {
        e.envelope.patient_ref == wanted
    });
    let wanted = patient.clone();
    let (aborted, mut also_seen) = forwarding(&stack, move |e: &PrescriptionIssued| {
        e.envelope.patient_ref == wanted
    });
    for receiver in [&mut seen, &mut also_seen] {
        tokio::time::timeout(Duration::from_secs(30), receiver.recv())
            .await
            .expect("both members consume")
            .expect("event");
    }

    tansu.kill();

    // The graceful stop gives up waiting for the dead broker after its leave timeout.
    let started = Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(60), graceful.stop())
        .await
        .expect("a member stops even when its broker is gone");
    assert_eq!(summary.handled, 1);
    assert!(started.elapsed() < Duration::from_secs(30));

    // Aborting the other drops it on this runtime; the runtime keeps running regardless.
    // (A test runtime has one thread: a blocking drop would stall this very sleep.)
    aborted.task.abort();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropping a consumer blocked the runtime for {:?}",
        started.elapsed()
    );
    drop(aborted.stop);
}

/// Publishes one consent decision for each of `patients` at once (so they share batches) and
/// waits until every one is acknowledged.
async fn publish_together(publisher: &hixbus_bus::Publisher, patients: &[String]) {
    let sends = patients.iter().map(|p| {
        let publisher = publisher.clone();
        let event = samples::consent_changed(p);
        async move { publisher.publish(&event).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
}

/// The patients whose consent decisions a read of `consents` to the end returns (the records'
/// keys).
async fn patients_read_to_the_end(kafka: &hixbus_bus::KafkaConfig) -> BTreeSet<String> {
    TopicReader::open(kafka, "consents", Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.key.as_deref())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Tansu 0.6.0 reports a partition's end as one past the first record of its last
/// multi-record batch: reading "to the end" stopped there and dropped the rest (6 of 40 here,
/// before the fix; a rebuild could miss consent decisions). Records published concurrently
/// share batches; every one is read.
#[tokio::test]
async fn reading_to_the_end_gets_every_record_of_batched_publishes() {
    let stack = BusStack::start().await;
    let patients: Vec<String> = (0..40).map(|n| unique(&format!("batched-{n}"))).collect();
    publish_together(&stack.publisher(), &patients).await;
    let read = patients_read_to_the_end(&stack.kafka).await;
    let missing: Vec<_> = patients.iter().filter(|p| !read.contains(*p)).collect();
    assert!(missing.is_empty(), "{} of 40 not read", missing.len());
}

/// Reading past the reported end must still end on a topic written to all the time, as a
/// service's rebuild at start does under load (an earlier fix that read on until a moment of
/// quiet never ended there), and must get everything written before it opened.
#[tokio::test]
async fn reading_to_the_end_ends_while_the_topic_is_written_to_and_misses_nothing_before() {
    let stack = BusStack::start().await;
    let publisher = stack.publisher();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (publisher, acked, stop) = (publisher.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Bursts of eight share batches, so the reported ends fall short.
                let burst: Vec<String> = (0..8).map(|i| unique(&format!("live-{n}-{i}"))).collect();
                publish_together(&publisher, &burst).await;
                acked.lock().unwrap().extend(burst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: BTreeSet<String> = acked.lock().unwrap().clone();
    let started = Instant::now();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        patients_read_to_the_end(&stack.kafka),
    )
    .await
    .expect("a read to the end ends while the topic is written to");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        before.len() >= 40,
        "the writer wrote {} first",
        before.len()
    );
    let missing: Vec<_> = before.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged before the read were not read (in {took:?})",
        missing.len(),
        before.len()
    );
}
