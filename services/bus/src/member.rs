//! Group members that never block an async task when they go.
//!
//! Closing a librdkafka consumer blocks the thread that does it: rust-rdkafka's drop polls until
//! librdkafka reports the consumer closed, which, with the broker gone, may be never
//! (rust-rdkafka #509). On an async task that stalls the whole runtime — in a test, the whole
//! test, and with it CI. So a [`Member`] is never closed on the caller's thread: whoever drops
//! the last reference (a graceful stop, a runner aborted mid-flight, a reader that is done)
//! hands it to a thread of its own.

use rdkafka::consumer::StreamConsumer;
use tokio::sync::oneshot;

use crate::context::BusContext;

/// A consumer that closes on a thread of its own.
pub(crate) struct Member(Option<StreamConsumer<BusContext>>);

impl Member {
    pub(crate) fn new(consumer: StreamConsumer<BusContext>) -> Self {
        Self(Some(consumer))
    }

    /// The consumer itself, for a caller that closes it deliberately (see [`leave_off_thread`]).
    pub(crate) fn into_inner(mut self) -> Option<StreamConsumer<BusContext>> {
        self.0.take()
    }
}

impl std::ops::Deref for Member {
    type Target = StreamConsumer<BusContext>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("only into_inner and drop take the consumer")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            leave_off_thread(consumer, |_| {});
        }
    }
}

/// Runs `before` (blocking work that must precede closing, such as a final commit) and then
/// closes `consumer`, both on a new thread; the receiver completes once it is closed.
pub(crate) fn leave_off_thread(
    consumer: StreamConsumer<BusContext>,
    before: impl FnOnce(&StreamConsumer<BusContext>) + Send + 'static,
) -> oneshot::Receiver<()> {
    let (left, leaving) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("hixbus-leave".to_owned())
        .spawn(move || {
            before(&consumer);
            drop(consumer);
            let _ = left.send(());
        });
    if let Err(e) = spawned {
        // Out of threads: the consumer is leaked rather than closed here (the process is in
        // trouble anyway, and blocking would make it worse).
        tracing::error!(error = %e, "cannot start a thread to close a consumer");
    }
    leaving
}
