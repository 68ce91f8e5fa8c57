//! One deployment's request queue, as seen by one caller (a proxy, or a replica's handles).
//!
//! Expected flow: `acquire` picks a replica with room (power of two choices) and returns a
//! permit at once; when every replica is at `max_ongoing_requests` the request waits in FIFO
//! order; when `max_queued_requests` requests already wait, it is rejected at once. A permit
//! released (response finished or dropped) goes straight to the oldest waiter.
//!
//! Guarantees: this caller never has more than `max_ongoing_requests` requests on a replica; a
//! cancelled waiter leaves the queue and never leaks a slot.
//! Caveat: the count is per caller, as in Ray; the replica enforces the limit across callers and
//! rejects the excess, which the router then retries (`call`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::choose::choose;
use crate::client::{ReplicaClient, ReplicaFailure};
use crate::error::RouterError;
use crate::table::{DeploymentId, DeploymentTargets};
use crate::wire::{Answer, Call};

/// Attempts for a request whose replica refused it or could not be reached.
const MAX_ATTEMPTS: u32 = 6;
/// First retry backoff (Ray's `initial_backoff_s`), doubled up to `MAX_BACKOFF`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

struct Slot {
    replica_id: String,
    client: ReplicaClient,
    in_flight: u32,
    /// Multiplexed models the replica holds or is loading.
    model_ids: Vec<String>,
}

type Waiter = oneshot::Sender<Result<Assignment, RouterError>>;

/// A replica handed to a request; turned into a permit by the receiver.
struct Assignment {
    replica_id: String,
    client: ReplicaClient,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    in_flight_scratch: Vec<u32>,
    max_ongoing: u32,
    max_queued: Option<u64>,
    backpressure_status_code: u16,
    retry_after_s: Option<f64>,
    unavailable: bool,
    /// Seen in a table once: disappearing from a later one means deleted.
    known: bool,
    waiters: VecDeque<Waiter>,
}

/// This queue's series of the router metrics.
struct QueueMetrics {
    requests: prometheus::IntCounter,
    queued: prometheus::IntGauge,
    ongoing: prometheus::IntGauge,
}

/// The queue of one deployment for one caller; cheap to share (`Arc`).
pub struct DeploymentQueue {
    id: DeploymentId,
    state: Mutex<State>,
    metrics: QueueMetrics,
}

impl DeploymentQueue {
    /// `caller` names who routes (the proxy, or a replica's handles), for metric labels.
    pub(crate) fn new(id: DeploymentId, caller: &str) -> Arc<Self> {
        let m = &crate::metrics::ROUTER;
        let labels = [id.app.as_str(), id.name.as_str(), caller, caller];
        let metrics = QueueMetrics {
            requests: m.requests.with_label_values(&[id.app.as_str(), id.name.as_str(), "", caller, caller]),
            queued: m.queued.with_label_values(&labels),
            ongoing: m.ongoing_at_replicas.with_label_values(&labels),
        };
        Arc::new(DeploymentQueue {
            id,
            state: Mutex::new(State {
                max_ongoing: 1,
                max_queued: None,
                backpressure_status_code: 503,
                ..Default::default()
            }),
            metrics,
        })
    }

    fn permit(self: &Arc<Self>, replica_id: String, client: ReplicaClient) -> Permit {
        self.metrics.ongoing.inc();
        Permit { queue: self.clone(), replica_id, client }
    }

    /// Which deployment this queue feeds.
    pub fn id(&self) -> &DeploymentId {
        &self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts half-updated in a way that
        // matters more than losing the whole router, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a new replica set and limits; waiting requests get any new room at once.
    pub(crate) fn update(&self, targets: Option<&DeploymentTargets>, client_for: impl Fn(&str, &str) -> ReplicaClient) {
        let mut st = self.lock();
        match targets {
            Some(t) => {
                let mut old = std::mem::take(&mut st.slots);
                st.slots = t
                    .replicas
                    .iter()
                    .map(|r| match old.iter().position(|s| s.replica_id == r.replica_id) {
                        Some(i) => {
                            let mut slot = old.swap_remove(i);
                            slot.model_ids.clone_from(&r.model_ids);
                            slot
                        }
                        None => Slot {
                            replica_id: r.replica_id.clone(),
                            client: client_for(&r.replica_id, &r.address),
                            in_flight: 0,
                            model_ids: r.model_ids.clone(),
                        },
                    })
                    .collect();
                st.max_ongoing = t.max_ongoing_requests;
                st.max_queued = t.max_queued_requests;
                st.backpressure_status_code = t.backpressure_status_code;
                st.retry_after_s = t.retry_after_s;
                st.unavailable = t.unavailable;
                st.known = true;
            }
            None if st.known => {
                st.slots.clear();
                st.unavailable = true;
            }
            None => {}
        }
        if st.unavailable && st.slots.is_empty() {
            let err = self.unavailable_error();
            for w in st.waiters.drain(..) {
                let _ = w.send(Err(err.clone()));
            }
        }
        self.dispatch_waiters(&mut st);
    }

    fn unavailable_error(&self) -> RouterError {
        RouterError::Unavailable { app: self.id.app.clone(), deployment: self.id.name.clone() }
    }

    /// Hands free capacity to the oldest live waiters.
    fn dispatch_waiters(&self, st: &mut State) {
        while !st.waiters.is_empty() {
            let Some(i) = Self::pick(st) else { break };
            let Some(waiter) = st.waiters.pop_front() else { break };
            let slot = &mut st.slots[i];
            let assignment = Assignment { replica_id: slot.replica_id.clone(), client: slot.client.clone() };
            if waiter.send(Ok(assignment)).is_ok() {
                slot.in_flight += 1;
            }
        }
        self.metrics.queued.set(st.waiters.len() as i64);
    }

    /// Forgets waiters whose requests were cancelled.
    fn drop_cancelled_waiters(&self) {
        let mut st = self.lock();
        st.waiters.retain(|w| !w.is_closed());
        self.metrics.queued.set(st.waiters.len() as i64);
    }

    fn pick(st: &mut State) -> Option<usize> {
        let State { slots, in_flight_scratch, max_ongoing, .. } = st;
        in_flight_scratch.clear();
        in_flight_scratch.extend(slots.iter().map(|s| s.in_flight));
        choose(in_flight_scratch, *max_ongoing)
    }

    /// Ray's multiplexed routing: power of two choices among the replicas with room that hold
    /// (or are loading) `model_id`; if none, among those with room holding the fewest models;
    /// `None` leaves the choice to [`Self::pick`].
    fn pick_for_model(st: &State, model_id: &str) -> Option<usize> {
        if model_id.is_empty() || st.slots.iter().all(|s| s.model_ids.is_empty()) {
            return None;
        }
        let with_room = |s: &&Slot| s.in_flight < st.max_ongoing;
        let holders: Vec<usize> = (0..st.slots.len())
            .filter(|&i| with_room(&&st.slots[i]) && st.slots[i].model_ids.iter().any(|m| m == model_id))
            .collect();
        let candidates = if holders.is_empty() {
            let fewest = st.slots.iter().filter(with_room).map(|s| s.model_ids.len()).min()?;
            (0..st.slots.len()).filter(|&i| with_room(&&st.slots[i]) && st.slots[i].model_ids.len() == fewest).collect()
        } else {
            holders
        };
        let in_flight: Vec<u32> = candidates.iter().map(|&i| st.slots[i].in_flight).collect();
        choose(&in_flight, st.max_ongoing).map(|k| candidates[k])
    }

    /// Reserves a replica for one request, waiting in FIFO order while all are full.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, RouterError> {
        self.acquire_for("").await
    }

    /// [`Self::acquire`] for a request of multiplexed model `model_id` (empty: none).
    pub async fn acquire_for(self: &Arc<Self>, model_id: &str) -> Result<Permit, RouterError> {
        let rx = {
            let mut st = self.lock();
            if st.unavailable && st.slots.is_empty() {
                return Err(self.unavailable_error());
            }
            if let Some(i) = Self::pick_for_model(&st, model_id).or_else(|| Self::pick(&mut st)) {
                let slot = &mut st.slots[i];
                slot.in_flight += 1;
                let (replica_id, client) = (slot.replica_id.clone(), slot.client.clone());
                drop(st);
                return Ok(self.permit(replica_id, client));
            }
            if let Some(max_queued) = st.max_queued {
                st.waiters.retain(|w| !w.is_closed());
                if st.waiters.len() as u64 >= max_queued {
                    return Err(RouterError::BackPressure {
                        num_queued: st.waiters.len(),
                        max_queued,
                        status_code: st.backpressure_status_code,
                        retry_after_s: st.retry_after_s,
                    });
                }
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            self.metrics.queued.set(st.waiters.len() as i64);
            rx
        };
        let mut wait = Wait { rx: Some(rx), queue: self.clone() };
        let result = match wait.rx.as_mut() {
            Some(rx) => rx.await,
            None => unreachable!("set just above"),
        };
        wait.rx = None;
        match result {
            Ok(Ok(a)) => Ok(self.permit(a.replica_id, a.client)),
            Ok(Err(e)) => Err(e),
            // The sender is only dropped by `update` failing waiters, which sends first.
            Err(_) => Err(self.unavailable_error()),
        }
    }

    fn release(&self, replica_id: &str) {
        let mut st = self.lock();
        if let Some(slot) = st.slots.iter_mut().find(|s| s.replica_id == replica_id) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        self.dispatch_waiters(&mut st);
    }

    /// Takes a replica that cannot be reached out of this caller's set until the controller
    /// lists it again.
    fn forget(&self, replica_id: &str) {
        let mut st = self.lock();
        st.slots.retain(|s| s.replica_id != replica_id);
    }

    /// Number of requests waiting for a replica.
    pub fn queued(&self) -> usize {
        self.lock().waiters.iter().filter(|w| !w.is_closed()).count()
    }

    /// Sends one request to a replica of this deployment: waits for room, retries on replicas
    /// that refused it (full, draining) or could not be reached, and fails with the replica's
    /// error when it broke after accepting.
    pub async fn call(self: &Arc<Self>, request: Call) -> Result<Answer, RouterError> {
        self.metrics.requests.inc();
        let mut backoff = INITIAL_BACKOFF;
        let model_id = crate::wire::multiplexed_model_id(&request.headers).to_string();
        for attempt in 1..=MAX_ATTEMPTS {
            let permit = self.acquire_for(&model_id).await?;
            match permit.client.call(request.clone()).await {
                Ok(mut answer) => {
                    answer.body.hold(permit);
                    return Ok(answer);
                }
                Err(ReplicaFailure::Refused) => {}
                Err(ReplicaFailure::Unreachable(reason)) => {
                    tracing::warn!(replica = %permit.replica_id, %reason, "replica unreachable; retrying elsewhere");
                    self.forget(&permit.replica_id);
                }
                Err(ReplicaFailure::Failed(reason)) => {
                    // Its connection broke: most likely it died. Send it nothing more until the
                    // controller lists it again (the requests still queued go to the others).
                    self.forget(&permit.replica_id);
                    return Err(RouterError::ReplicaFailed { replica_id: permit.replica_id.clone(), reason });
                }
                Err(ReplicaFailure::Reported(reason)) => {
                    return Err(RouterError::ReplicaFailed { replica_id: permit.replica_id.clone(), reason })
                }
                Err(ReplicaFailure::Deployment(message)) => return Err(RouterError::Deployment(message)),
            }
            drop(permit);
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Err(RouterError::RetriesExhausted { deployment: self.id.to_string(), attempts: MAX_ATTEMPTS })
    }
}

/// A waiting request; if it is dropped after a replica was handed to it, the slot goes back.
struct Wait {
    rx: Option<oneshot::Receiver<Result<Assignment, RouterError>>>,
    queue: Arc<DeploymentQueue>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            match rx.try_recv() {
                Ok(Ok(a)) => self.queue.release(&a.replica_id),
                _ => self.queue.drop_cancelled_waiters(),
            }
        }
    }
}

/// One request's slot on one replica; released on drop.
pub struct Permit {
    queue: Arc<DeploymentQueue>,
    replica_id: String,
    client: ReplicaClient,
}

impl Permit {
    /// The replica this permit is for.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.queue.metrics.ongoing.dec();
        self.queue.release(&self.replica_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ReplicaEndpoint;

    fn targets(replicas: &[&str], max_ongoing: u32, max_queued: Option<u64>) -> DeploymentTargets {
        DeploymentTargets {
            max_ongoing_requests: max_ongoing,
            max_queued_requests: max_queued,
            backpressure_status_code: 503,
            retry_after_s: None,
            replicas: replicas
                .iter()
                .map(|r| ReplicaEndpoint {
                    replica_id: r.to_string(),
                    address: "127.0.0.1:1".into(),
                    model_ids: Vec::new(),
                })
                .collect(),
            unavailable: false,
        }
    }

    fn queue_with(t: &DeploymentTargets) -> Arc<DeploymentQueue> {
        let q = DeploymentQueue::new(DeploymentId::new("app", "D"), "test");
        q.update(Some(t), |_, addr| ReplicaClient::new(addr));
        q
    }

    #[tokio::test]
    async fn admits_up_to_capacity_then_queues_then_rejects() {
        let q = queue_with(&targets(&["r1"], 2, Some(1)));
        let p1 = q.acquire().await.unwrap();
        let _p2 = q.acquire().await.unwrap();
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.acquire().await.map(|p| p.replica_id().to_string()) });
        while q.queued() == 0 {
            tokio::task::yield_now().await;
        }
        match q.acquire().await {
            Err(RouterError::BackPressure { num_queued: 1, max_queued: 1, .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("expected backpressure"),
        }
        drop(p1);
        assert_eq!(waiting.await.unwrap().unwrap(), "r1");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_leak_its_slot() {
        let q = queue_with(&targets(&["r1"], 1, None));
        let p1 = q.acquire().await.unwrap();
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.acquire().await.map(|_| ()) });
        while q.queued() == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        drop(p1);
        // The slot is free again: a new request gets it without waiting.
        let p = tokio::time::timeout(Duration::from_secs(1), q.acquire()).await.unwrap().unwrap();
        assert_eq!(p.replica_id(), "r1");
    }

    #[tokio::test]
    async fn new_replicas_serve_waiting_requests() {
        let q = queue_with(&targets(&[], 1, None));
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.acquire().await.map(|p| p.replica_id().to_string()) });
        while q.queued() == 0 {
            tokio::task::yield_now().await;
        }
        q.update(Some(&targets(&["r2"], 1, None)), |_, addr| ReplicaClient::new(addr));
        assert_eq!(waiting.await.unwrap().unwrap(), "r2");
    }

    #[tokio::test]
    async fn unavailable_deployment_fails_fast() {
        let mut t = targets(&[], 1, None);
        t.unavailable = true;
        let q = queue_with(&t);
        assert!(matches!(q.acquire().await, Err(RouterError::Unavailable { .. })));
    }

    #[tokio::test]
    async fn multiplexed_requests_prefer_replicas_holding_their_model() {
        let mut t = targets(&["a", "b", "c"], 4, None);
        t.replicas[1].model_ids = vec!["m1".into()];
        t.replicas[2].model_ids = vec!["m2".into(), "m3".into()];
        let q = queue_with(&t);
        for _ in 0..50 {
            assert_eq!(q.acquire_for("m1").await.unwrap().replica_id(), "b");
        }
        // No holder: one of the replicas with the fewest models.
        for _ in 0..50 {
            assert_eq!(q.acquire_for("m9").await.unwrap().replica_id(), "a");
        }
        // A holder that is full gives way to the replica with the fewest models.
        let held: Vec<_> = hold(&q, "m1", 4).await;
        assert!(held.iter().all(|p| p.replica_id() == "b"));
        assert_eq!(q.acquire_for("m1").await.unwrap().replica_id(), "a");
    }

    async fn hold(q: &Arc<DeploymentQueue>, model: &str, n: usize) -> Vec<Permit> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(q.acquire_for(model).await.unwrap());
        }
        out
    }
}
