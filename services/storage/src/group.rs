//! Group commit: writes that arrive at the same moment (concurrent requests) go to the database
//! together, in one statement, instead of one round trip each. At the clinic gateway's
//! saturation every prescription cost five statements, two of them one-row writes that many
//! requests make at once (docs/performance.md "Capacity").
//!
//! A caller still waits for its own write to commit, and learns its own outcome: a group that
//! fails is written again item by item, so one item the database refuses fails only its caller.
//! The writes run in a task of their own, so a request cancelled while it waits (its client went
//! away) does not take its item with it. With no concurrency a group is one item, and the cost is
//! two task hand-offs.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// How one kind of item is written, many at a time.
pub trait GroupWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;

    /// Writes all of `items` or none (one statement, or one transaction).
    fn write_all(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Items waiting for the writer at most, in groups of `most`: a caller that finds the queue full
/// waits for room.
const QUEUED_GROUPS: usize = 4;

/// A handle to one group writer; clones share it. The writer ends with the last handle.
pub struct Grouped<W: GroupWrite> {
    queue: mpsc::Sender<Pending<W::Item>>,
}

struct Pending<T> {
    item: T,
    written: oneshot::Sender<Result<(), sqlx::Error>>,
}

impl<W: GroupWrite> Clone for Grouped<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<W: GroupWrite> std::fmt::Debug for Grouped<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped")
            .field("writer", &std::any::type_name::<W>())
            .finish_non_exhaustive()
    }
}

impl<W: GroupWrite> Grouped<W> {
    /// Starts the writer (on the current Tokio runtime), taking up to `most` items a group.
    pub fn spawn(writer: W, most: usize) -> Self {
        let most = most.max(1);
        let (queue, waiting) = mpsc::channel(most * QUEUED_GROUPS);
        tokio::spawn(run(writer, waiting, most));
        Self { queue }
    }

    /// Writes `item` with whatever else is waiting; returns once it is committed or refused.
    pub async fn write(&self, item: W::Item) -> Result<(), sqlx::Error> {
        let (written, outcome) = oneshot::channel();
        // The writer outlives every handle; only a runtime shutting down ends it first.
        self.queue
            .send(Pending { item, written })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        outcome.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))
    }
}

async fn run<W: GroupWrite>(writer: W, mut waiting: mpsc::Receiver<Pending<W::Item>>, most: usize) {
    let mut group = Vec::with_capacity(most);
    while waiting.recv_many(&mut group, most).await > 0 {
        let (items, callers): (Vec<W::Item>, Vec<_>) =
            group.drain(..).map(|p| (p.item, p.written)).unzip();
        match writer.write_all(&items).await {
            Ok(()) => {
                for caller in callers {
                    // A caller that went away needs no answer; its item is written.
                    let _ = caller.send(Ok(()));
                }
            }
            Err(e) if items.len() == 1 => {
                if let Some(caller) = callers.into_iter().next() {
                    let _ = caller.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    items = items.len(),
                    writer = std::any::type_name::<W>(),
                    "group not written; writing its items one by one"
                );
                for (item, caller) in items.chunks(1).zip(callers) {
                    let _ = caller.send(writer.write_all(item).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records each group it is given; refuses any group holding a negative number.
    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<Vec<i64>>>>);

    impl GroupWrite for Log {
        type Item = i64;
        async fn write_all(&self, items: &[i64]) -> Result<(), sqlx::Error> {
            if items.iter().any(|i| *i < 0) {
                return Err(sqlx::Error::Protocol("negative".into()));
            }
            self.0.lock().unwrap().push(items.to_vec());
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrent_writes_go_in_groups_of_at_most_most_and_a_refused_item_fails_alone() {
        let groups = Arc::default();
        let grouped = Grouped::spawn(Log(Arc::clone(&groups)), 16);
        let items: Vec<i64> = (0..40).map(|i| if i == 20 { -1 } else { i }).collect();
        let outcomes = futures::future::join_all(items.iter().map(|i| grouped.write(*i))).await;
        for (item, outcome) in items.iter().zip(&outcomes) {
            assert_eq!(outcome.is_err(), *item < 0, "{item}: {outcome:?}");
        }
        let groups = groups.lock().unwrap();
        assert!(groups.iter().all(|g| g.len() <= 16), "{groups:?}");
        // All 40 were queued before the writer ran: they went in groups, not one by one
        // (the group holding -1 was written again item by item).
        assert!(groups.iter().any(|g| g.len() == 16), "{groups:?}");
        let mut written: Vec<i64> = groups.iter().flatten().copied().collect();
        written.sort_unstable();
        assert_eq!(
            written,
            items
                .iter()
                .copied()
                .filter(|i| *i >= 0)
                .collect::<Vec<_>>()
        );
    }

    /// A caller that goes away after handing its item over (a request cancelled when its
    /// client disconnected) still has it written.
    #[tokio::test]
    async fn an_item_handed_over_is_written_even_if_its_caller_goes_away() {
        let groups = Arc::default();
        let grouped = Grouped::spawn(Log(Arc::clone(&groups)), 16);
        let mut call = Box::pin(grouped.write(1));
        assert!(futures::poll!(call.as_mut()).is_pending());
        drop(call);
        grouped.write(2).await.unwrap();
        let written: Vec<i64> = groups.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(written, [1, 2]);
    }
}
