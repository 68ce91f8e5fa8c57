//! The router: applies routing tables from the controller, matches routes, and sends requests
//! through per-deployment queues to replicas. Proxies and replicas (for their handle calls)
//! each own one.

#![warn(missing_docs)]

mod choose;
mod client;
pub mod cluster_auth;
mod error;
pub mod guard;
mod handle;
pub mod matcher;
pub mod metrics;
mod net;
mod queue;
mod subscribe;
mod table;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use client::{
    max_message_bytes_from_env, new_pool, replica_max_message_bytes, Pool, ReplicaClient, ReplicaFailure,
    DEFAULT_MAX_BODY_BYTES, MAX_BODY_ENV, MAX_MESSAGE_BYTES, MAX_MESSAGE_SIZE_ENV,
};
pub use error::RouterError;
pub use handle::DeploymentHandle;
pub use net::{accept_loop, incoming_guarded, internal_guard, internal_server, serve_on_threads};
pub use queue::{DeploymentQueue, Permit};
pub use subscribe::follow_controller;
pub use table::{AppRoute, DeploymentId, DeploymentTargets, InvalidTable, ReplicaEndpoint, RoutingTable};

/// An application's route, with its ingress queue resolved.
#[derive(Clone)]
pub struct Route {
    /// Application name.
    pub app: String,
    /// HTTP prefix (`None`: handles only).
    pub route_prefix: Option<String>,
    /// The ingress deployment's queue.
    pub ingress: Arc<DeploymentQueue>,
}

/// What the front doors read per request: routes sorted for longest-prefix matching.
#[derive(Default)]
pub struct Snapshot {
    /// Version of the table this came from (0: none received yet).
    pub version: u64,
    /// Routes with a prefix, longest prefix first.
    pub by_prefix: Vec<Route>,
    /// Every application, in config order.
    pub apps: Vec<Route>,
}

impl Snapshot {
    /// The route that serves `path`, by longest matching prefix.
    pub fn match_path(&self, path: &str) -> Option<&Route> {
        let i = matcher::longest_match(self.by_prefix.iter().map(|r| r.route_prefix.as_deref().unwrap_or("")), path)?;
        self.by_prefix.get(i)
    }
}

/// Routes requests to deployments; cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    queues: Mutex<HashMap<DeploymentId, Arc<DeploymentQueue>>>,
    table: Mutex<Arc<RoutingTable>>,
    ready: watch::Sender<bool>,
    /// Who routes (metric labels): `proxy`, or the replica id whose handles these are.
    caller: String,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with no table yet (not ready).
    pub fn new() -> Self {
        Self::for_caller("proxy")
    }

    /// A router whose metrics name `caller` (a replica id for a replica's handles).
    pub fn for_caller(caller: &str) -> Self {
        Router {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                queues: Mutex::new(HashMap::new()),
                table: Mutex::new(Arc::new(RoutingTable::default())),
                ready: watch::Sender::new(false),
                caller: caller.to_string(),
            }),
        }
    }

    /// The current route snapshot (lock-free).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.snapshot.load()
    }

    /// The last table applied.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a first table has arrived.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Resolves once a first table has arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The queue of one deployment (created empty if the table does not list it yet).
    pub fn queue(&self, id: &DeploymentId) -> Arc<DeploymentQueue> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(id.clone()).or_insert_with(|| DeploymentQueue::new(id.clone(), &self.inner.caller)).clone()
    }

    /// Requests waiting for a replica, per deployment.
    pub fn queued_by_deployment(&self) -> HashMap<DeploymentId, usize> {
        let queues: Vec<(DeploymentId, Arc<DeploymentQueue>)> = {
            let map = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        queues.into_iter().map(|(id, q)| (id, q.queued())).collect()
    }

    /// A handle for calls to one deployment.
    pub fn handle(&self, app: &str, deployment: &str) -> DeploymentHandle {
        DeploymentHandle::new(self.queue(&DeploymentId::new(app, deployment)))
    }

    /// Applies a new table. Tables arrive in order on one subscription, and a restarted
    /// controller may start counting versions again, so every table applied replaces the last.
    pub fn apply(&self, table: RoutingTable) {
        let table = Arc::new(table);
        *self.inner.table.lock().unwrap_or_else(|e| e.into_inner()) = table.clone();
        let client_for = |_: &str, address: &str| ReplicaClient::new(address);
        let queues: Vec<(DeploymentId, Arc<DeploymentQueue>)> = {
            let mut map = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
            for id in table.deployments.keys() {
                map.entry(id.clone()).or_insert_with(|| DeploymentQueue::new(id.clone(), &self.inner.caller));
            }
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (id, queue) in &queues {
            queue.update(table.deployments.get(id), client_for);
        }
        let apps: Vec<Route> = table
            .routes
            .iter()
            .map(|r| Route {
                app: r.app.clone(),
                route_prefix: r.route_prefix.clone(),
                ingress: self.queue(&DeploymentId::new(&r.app, &r.ingress)),
            })
            .collect();
        let mut by_prefix: Vec<Route> = apps.iter().filter(|r| r.route_prefix.is_some()).cloned().collect();
        by_prefix.sort_by_key(|r| std::cmp::Reverse(r.route_prefix.as_ref().map_or(0, String::len)));
        self.inner.snapshot.store(Arc::new(Snapshot { version: table.version, by_prefix, apps }));
        self.inner.ready.send_replace(true);
    }
}
