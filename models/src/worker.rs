//! The thread that owns a model. Model execution is CPU- (or GPU-) bound and would stall the
//! async runtime, so each model lives on a dedicated thread fed through a bounded channel of
//! jobs; callers await their job's result. Tokenisation runs inside the jobs, off the runtime too.

use photon_replica::DeploymentError;
use tokio::sync::{mpsc, oneshot};

type Job<M> = Box<dyn FnOnce(&mut M) + Send>;

/// A handle to the thread that owns a model of type `M`. The thread ends once every handle is
/// dropped and the queued jobs are done.
pub struct ModelWorker<M> {
    jobs: mpsc::Sender<Job<M>>,
}

impl<M: Send + 'static> ModelWorker<M> {
    /// Moves `model` onto a new thread named `name`; at most `queue` jobs wait for it.
    pub fn start(name: &str, model: M, queue: usize) -> Result<Self, DeploymentError> {
        let (jobs, mut inbox) = mpsc::channel::<Job<M>>(queue.max(1));
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut model = model;
                while let Some(job) = inbox.blocking_recv() {
                    // A job that panics fails its own request (its reply channel is dropped
                    // unanswered), not the thread: the next request is served.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut model));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a model job panicked; the model thread goes on");
                    }
                }
            })
            .map_err(|e| DeploymentError(format!("could not start the model thread: {e}")))?;
        Ok(ModelWorker { jobs })
    }

    /// Runs `job` on the model thread and waits for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut M) -> R + Send + 'static,
    ) -> Result<R, DeploymentError> {
        let (tx, rx) = oneshot::channel();
        self.spawn(move |model| {
            let _ = tx.send(job(model));
        })
        .await?;
        rx.await.map_err(|_| DeploymentError("RuntimeError: the model job failed (it panicked)".into()))
    }

    /// Queues `job` without waiting for it to run (it reports through channels of its own).
    pub async fn spawn(&self, job: impl FnOnce(&mut M) + Send + 'static) -> Result<(), DeploymentError> {
        self.jobs.send(Box::new(job)).await.map_err(|_| stopped())
    }

    /// Builds the model with `load` on a blocking thread (loading reads and converts weights),
    /// then starts its thread.
    pub async fn load(
        name: &str,
        queue: usize,
        load: impl FnOnce() -> Result<M, DeploymentError> + Send + 'static,
    ) -> Result<Self, DeploymentError> {
        let model = tokio::task::spawn_blocking(load)
            .await
            .map_err(|e| DeploymentError(format!("model loading panicked: {e}")))??;
        Self::start(name, model, queue)
    }

    /// The health check: an error once the thread is gone.
    pub fn check(&self) -> Result<(), DeploymentError> {
        if self.jobs.is_closed() {
            Err(DeploymentError("RuntimeError: the model thread stopped".into()))
        } else {
            Ok(())
        }
    }
}

fn stopped() -> DeploymentError {
    DeploymentError("RuntimeError: the model thread stopped".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_thread_goes_on() {
        let worker = ModelWorker::start("test-model", 0u32, 4).unwrap();
        let failed = worker.run(|_: &mut u32| -> u32 { panic!("a bad request") }).await;
        assert!(failed.unwrap_err().0.contains("the model job failed"));
        assert_eq!(worker.run(|n: &mut u32| *n + 1).await.unwrap(), 1);
        assert!(worker.check().is_ok());
    }
}
