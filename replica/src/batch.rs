//! Dynamic batching with Ray's `@serve.batch` semantics, for any deployment.
//!
//! Callers `submit` one item and await its result; a background task groups queued items into
//! batches of at most `max_batch_size`, waiting at most `batch_wait_timeout` after a batch's
//! first item for more to arrive, and runs the handler on at most `max_concurrent_batches`
//! batches at a time. The next batch is only collected once a slot is free, so items that arrive
//! while the handler is busy join one large batch rather than many small ones. An item whose
//! caller has gone (the request was cancelled) leaves the batch before the handler sees it.
//! Items submitted together (`submit_many`) reach the queue as one group, so a request's items
//! are not split between batches by a race with the collecting task; a group is split only
//! where a batch is full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::deployment::DeploymentError;
use crate::metrics::BatchMetrics;

/// Ray's `@serve.batch` arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    /// Most items in one batch (Ray's default 10).
    pub max_batch_size: usize,
    /// How long a batch waits for more items after its first (Ray's default 0.01 s).
    pub batch_wait_timeout: Duration,
    /// Batches handled at the same time (Ray's default 1).
    pub max_concurrent_batches: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { max_batch_size: 10, batch_wait_timeout: Duration::from_millis(10), max_concurrent_batches: 1 }
    }
}

impl BatchOptions {
    /// Checks the options, naming the offending key under `prefix` (e.g. `user_config`).
    pub fn validate(&self, prefix: &str) -> Result<(), DeploymentError> {
        if self.max_batch_size == 0 {
            return Err(DeploymentError(format!("{prefix}.max_batch_size must be at least 1")));
        }
        if self.max_concurrent_batches == 0 {
            return Err(DeploymentError(format!("{prefix}.max_concurrent_batches must be at least 1")));
        }
        Ok(())
    }
}

/// What a batch handler returns: one result per input, in order.
pub type BatchFuture<O> = Pin<Box<dyn Future<Output = Vec<Result<O, DeploymentError>>> + Send>>;

/// Handles one batch of inputs.
pub type BatchHandler<I, O> = Arc<dyn Fn(Vec<I>) -> BatchFuture<O> + Send + Sync>;

struct Pending<I, O> {
    input: I,
    reply: oneshot::Sender<Result<O, DeploymentError>>,
}

/// A queue that feeds a batch handler. Dropping it lets queued items finish, then stops the
/// collecting task.
pub struct Batcher<I, O> {
    queue: mpsc::UnboundedSender<Vec<Pending<I, O>>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the collecting task on the current Tokio runtime.
    pub fn new(options: BatchOptions, metrics: BatchMetrics, handler: BatchHandler<I, O>) -> Self {
        let (queue, items) = mpsc::unbounded_channel();
        tokio::spawn(collect(items, options, metrics, handler));
        Batcher { queue }
    }

    /// Queues one item and waits for its result.
    pub async fn submit(&self, input: I) -> Result<O, DeploymentError> {
        self.submit_many(vec![input]).await.pop().unwrap_or_else(|| Err(dropped()))
    }

    /// Queues all `inputs` at once (so they can share a batch) and waits for their results,
    /// in order.
    pub async fn submit_many(&self, inputs: Vec<I>) -> Vec<Result<O, DeploymentError>> {
        let (group, waiting): (Vec<_>, Vec<_>) = inputs
            .into_iter()
            .map(|input| {
                let (reply, result) = oneshot::channel();
                (Pending { input, reply }, result)
            })
            .unzip();
        if self.queue.send(group).is_err() {
            return waiting.iter().map(|_| Err(closed())).collect();
        }
        let mut out = Vec::with_capacity(waiting.len());
        for result in waiting {
            out.push(result.await.unwrap_or_else(|_| Err(dropped())));
        }
        out
    }
}

fn closed() -> DeploymentError {
    DeploymentError("batch queue is closed".into())
}

fn dropped() -> DeploymentError {
    DeploymentError("the batch handler dropped this item".into())
}

async fn collect<I: Send + 'static, O: Send + 'static>(
    mut groups: mpsc::UnboundedReceiver<Vec<Pending<I, O>>>,
    options: BatchOptions,
    metrics: BatchMetrics,
    handler: BatchHandler<I, O>,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrent_batches));
    // Items received but not batched yet (the rest of a group that did not fit).
    let mut held = std::collections::VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        if held.is_empty() {
            let Some(group) = groups.recv().await else { return };
            held.extend(group);
        }
        let deadline = tokio::time::Instant::now() + options.batch_wait_timeout;
        let mut batch = Vec::new();
        loop {
            while batch.len() < options.max_batch_size {
                let Some(item) = held.pop_front() else { break };
                batch.push(item);
            }
            if batch.len() >= options.max_batch_size {
                break;
            }
            // Groups already queued are taken even when the wait is over.
            match tokio::time::timeout_at(deadline, groups.recv()).await {
                Ok(Some(group)) => held.extend(group),
                Ok(None) | Err(_) => break,
            }
        }
        // Cancelled requests leave the batch.
        batch.retain(|item| !item.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics.record(batch.len());
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (inputs, replies): (Vec<I>, Vec<_>) = batch.into_iter().map(|p| (p.input, p.reply)).unzip();
            let count = inputs.len();
            let mut results = handler(inputs).await.into_iter();
            for reply in replies {
                let result = results.next().unwrap_or_else(|| {
                    Err(DeploymentError(format!("the batch handler returned fewer results than the {count} inputs")))
                });
                let _ = reply.send(result);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doubling(calls: Arc<std::sync::Mutex<Vec<usize>>>) -> BatchHandler<u32, u32> {
        Arc::new(move |inputs: Vec<u32>| {
            calls.lock().unwrap().push(inputs.len());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                inputs.into_iter().map(|x| Ok(x * 2)).collect()
            })
        })
    }

    #[tokio::test]
    async fn concurrent_items_share_batches_and_keep_their_order() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let options =
            BatchOptions { max_batch_size: 8, batch_wait_timeout: Duration::from_millis(50), ..Default::default() };
        let batcher = Arc::new(Batcher::new(options, BatchMetrics::new("app", "dep", "r1"), doubling(calls.clone())));
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, i * 2);
        }
        let sizes = calls.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
        assert_eq!(sizes.len(), 3, "20 items at most 8 a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_item_waits_only_the_timeout() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let options =
            BatchOptions { max_batch_size: 32, batch_wait_timeout: Duration::from_millis(30), ..Default::default() };
        let batcher = Batcher::new(options, BatchMetrics::new("app", "dep", "r2"), doubling(calls.clone()));
        assert_eq!(batcher.submit(21).await.unwrap(), 42);
        assert_eq!(*calls.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_group_stays_together_and_is_split_only_where_a_batch_is_full() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let options = BatchOptions { max_batch_size: 8, batch_wait_timeout: Duration::ZERO, ..Default::default() };
        let batcher = Batcher::new(options, BatchMetrics::new("app", "dep", "r4"), doubling(calls.clone()));
        let out = batcher.submit_many((0..6).collect()).await;
        assert_eq!(out.into_iter().map(Result::unwrap).collect::<Vec<_>>(), vec![0, 2, 4, 6, 8, 10]);
        let out = batcher.submit_many((0..20).collect()).await;
        assert_eq!(out.len(), 20);
        assert_eq!(*calls.lock().unwrap(), vec![6, 8, 8, 4]);
    }

    #[tokio::test]
    async fn cancelled_items_leave_the_batch() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let options =
            BatchOptions { max_batch_size: 4, batch_wait_timeout: Duration::from_millis(100), ..Default::default() };
        let batcher = Arc::new(Batcher::new(options, BatchMetrics::new("app", "dep", "r3"), doubling(calls.clone())));
        let cancelled = {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(1).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancelled.abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(batcher.submit(2).await.unwrap(), 4);
        assert_eq!(*calls.lock().unwrap(), vec![1], "only the live item reached the handler");
    }
}
