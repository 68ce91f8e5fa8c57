//! The controller actor: owns `State`, takes commands (config applies, registrations, replica
//! events, health results) from one bounded channel, runs reconcile after each and on a
//! periodic tick, executes the resulting actions, and publishes the routing table on a `watch`.

use std::sync::Arc;
use std::time::Duration;

use photon_config::{AppCatalog, ApplicationConfig, ServeConfig};
use photon_orchestrator::{Orchestrator, ReplicaEvent};
use photon_proto::v1 as pb;
use photon_router::RoutingTable;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, StateStore};
use crate::replica_client::ReplicaClients;
use crate::state::{Action, Placement, State};
use crate::status::InstanceStatus;
use crate::ControllerError;

/// How often reconcile runs without any event.
const TICK: Duration = Duration::from_millis(100);
/// Capacity of the command channel.
const COMMANDS: usize = 1024;
/// Longest wait for the state store to hold an applied config.
const SAVE_WAIT: Duration = Duration::from_secs(30);

pub(crate) enum Command {
    /// Replies with the checkpoint that holds the new config, when there is a store.
    Apply(Box<ServeConfig>, oneshot::Sender<Option<u64>>),
    /// The catalog has learned an application's code (see `AppCatalog::learn`).
    CodeLearned(Box<ApplicationConfig>),
    Registered {
        replica_id: String,
        address: String,
        data_address: String,
        pid: u32,
        reply: oneshot::Sender<bool>,
    },
    Health {
        replica_id: String,
        result: Result<(), String>,
    },
    Reconfigured {
        replica_id: String,
        result: Result<(Option<Value>, u32), String>,
    },
    Load {
        replica_id: String,
        ongoing: Option<u32>,
    },
    Models {
        replica_id: String,
        model_ids: Vec<String>,
    },
    Status(oneshot::Sender<InstanceStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// Talks to the controller actor; cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    catalog: Arc<dyn AppCatalog>,
    table: watch::Receiver<Arc<RoutingTable>>,
    /// What the state store holds, when there is one.
    saved: Option<watch::Receiver<Saved>>,
    /// The replicas' control clients (the actor's too).
    clients: ReplicaClients,
}

impl ControllerHandle {
    /// One scrape of the whole instance's metrics (this process's and every running
    /// replica's), for `/metrics`.
    pub async fn metrics_text(&self) -> Result<String, ControllerError> {
        let status = self.status().await?;
        Ok(crate::metrics::scrape(&status, &self.clients).await)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ControllerError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| ControllerError::Stopped)?;
        rx.await.map_err(|_| ControllerError::Stopped)
    }

    /// Applies a validated config (declaratively: apps it does not list are deleted). Returns
    /// once the controller has taken it and, with a state store, once the store holds it (a
    /// restarted controller will not forget an acknowledged config); applications whose code
    /// must first be imported are DEPLOYING meanwhile, as in Ray.
    pub async fn apply(&self, config: ServeConfig) -> Result<(), ControllerError> {
        self.catalog.observe(&config);
        let checkpoint = self.ask(|tx| Command::Apply(Box::new(config), tx)).await?;
        let (Some(wanted), Some(saved)) = (checkpoint, &self.saved) else { return Ok(()) };
        let mut saved = saved.clone();
        let outcome = saved.wait_for(|s| s.seq >= wanted || s.failed.as_ref().is_some_and(|(seq, _)| *seq >= wanted));
        let saved = match tokio::time::timeout(SAVE_WAIT, outcome).await {
            Ok(Ok(saved)) => saved.clone(),
            Ok(Err(_)) => return Err(ControllerError::Stopped),
            Err(_) => return Err(ControllerError::NotSaved(format!("not written within {SAVE_WAIT:?}"))),
        };
        match saved.failed {
            Some((seq, e)) if saved.seq < wanted && seq >= wanted => Err(ControllerError::NotSaved(e)),
            _ => Ok(()),
        }
    }

    /// A replica's registration; `false` when the controller does not want it.
    pub async fn register(
        &self,
        replica_id: String,
        address: String,
        data_address: String,
        pid: u32,
    ) -> Result<bool, ControllerError> {
        self.ask(|reply| Command::Registered { replica_id, address, data_address, pid, reply }).await
    }

    /// A replica's multiplexed models changed.
    pub async fn report_models(&self, replica_id: String, model_ids: Vec<String>) -> Result<(), ControllerError> {
        self.commands.send(Command::Models { replica_id, model_ids }).await.map_err(|_| ControllerError::Stopped)
    }

    /// The current status of every application.
    pub async fn status(&self) -> Result<InstanceStatus, ControllerError> {
        self.ask(Command::Status).await
    }

    /// Stops every replica and the actor.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.ask(Command::Shutdown).await
    }

    /// The routing table, updated on every change.
    pub fn routing_table(&self) -> watch::Receiver<Arc<RoutingTable>> {
        self.table.clone()
    }
}

/// Starts the controller actor.
///
/// `proxy_router`, when the proxy runs in this process, tells the autoscaler how many requests
/// wait in the proxy's queues.
///
/// `store`: where checkpoints go after every change, and the checkpoint it held at start (the
/// caller reads it, since the placement's credentials come from it); with one, the controller
/// first re-applies its config and adopts its replicas, before it publishes any routing table.
///
/// Returns the handle and the actor's task: the caller watches it (the actor ends only after a
/// shutdown; anything else, a panic included, is the controller failing).
pub fn spawn(
    placement: Placement,
    catalog: Arc<dyn AppCatalog>,
    orchestrator: Arc<dyn Orchestrator>,
    replica_events: mpsc::UnboundedReceiver<ReplicaEvent>,
    proxy_router: Option<photon_router::Router>,
    store: Option<(StateStore, Option<Checkpoint>)>,
) -> (ControllerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let (table_tx, table_rx) = watch::channel(Arc::new(RoutingTable::default()));
    let mut state = State::new(placement);
    let mut saver = None;
    if let Some((store, checkpoint)) = store {
        if let Some(checkpoint) = checkpoint {
            recover(&mut state, &checkpoint, catalog.as_ref(), orchestrator.as_ref());
        }
        saver = Some(Saver::spawn(store, state.checkpoint()));
    }
    orchestrator.adoption_done();
    let handle_catalog = catalog.clone();
    let saved = saver.as_ref().map(|s: &Saver| s.saved.clone());
    let clients = ReplicaClients::default();
    let actor = Actor {
        state,
        catalog,
        orchestrator,
        commands: tx.clone(),
        table: table_tx,
        proxy_router,
        saver,
        clients: clients.clone(),
    };
    let task = tokio::spawn(actor.run(rx, replica_events));
    (ControllerHandle { commands: tx, catalog: handle_catalog, table: table_rx, saved, clients }, task)
}

/// Re-applies a checkpoint's config and adopts its replicas. The applications' code is learned
/// first, here (adoption needs their deployments): on a thread of its own, since this runs
/// before the actor, inside the caller's runtime.
fn recover(state: &mut State, checkpoint: &Checkpoint, catalog: &dyn AppCatalog, orchestrator: &dyn Orchestrator) {
    let Some(doc) = &checkpoint.config else { return };
    match photon_config::from_value(doc) {
        Ok(parsed) => {
            catalog.observe(&parsed.config);
            std::thread::scope(|scope| {
                let learned = scope.spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async {
                        for app in &parsed.config.applications {
                            catalog.learn(app).await;
                        }
                    });
                    Ok::<_, std::io::Error>(())
                });
                if let Ok(Err(e)) = learned.join() {
                    tracing::error!(error = %e, "could not learn the checkpointed applications' code");
                }
            });
            let now = now();
            let importing = state.apply(&parsed.config, catalog, now);
            for app in importing {
                tracing::error!(application = %app.name, "its code could not be learned at recovery");
            }
            let adopted = state.adopt(&checkpoint.replicas, now);
            for (replica_id, pid) in &adopted {
                orchestrator.adopt(replica_id, *pid);
            }
            tracing::info!(
                applications = parsed.config.applications.len(),
                replicas = adopted.len(),
                "recovered from checkpoint"
            );
        }
        Err(e) => tracing::error!(error = %e, "checkpointed config no longer validates; starting empty"),
    }
}

/// What the state store holds: the newest checkpoint written, and the newest that failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Saved {
    seq: u64,
    failed: Option<(u64, String)>,
}

/// Writes the newest checkpoint whenever it changes (coalescing bursts), off the actor; each
/// checkpoint has a sequence number, and [`Saved`] says how far the store has come.
struct Saver {
    pending: watch::Sender<(u64, Arc<Checkpoint>)>,
    saved: watch::Receiver<Saved>,
}

impl Saver {
    fn spawn(store: StateStore, initial: Checkpoint) -> Saver {
        let (pending, mut rx) = watch::channel((0, Arc::new(initial)));
        let (saved_tx, saved) = watch::channel(Saved::default());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let (seq, checkpoint) = rx.borrow_and_update().clone();
                let store = store.clone();
                let failure = match tokio::task::spawn_blocking(move || store.save(&checkpoint)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(format!("checkpoint task failed: {e}")),
                };
                match failure {
                    None => saved_tx.send_modify(|s| s.seq = seq),
                    Some(e) => {
                        tracing::error!(error = %e, "checkpoint not saved");
                        saved_tx.send_modify(|s| s.failed = Some((seq, e)));
                    }
                }
            }
        });
        Saver { pending, saved }
    }

    /// Queues `checkpoint` if it differs from the last one; returns its sequence number.
    fn offer(&self, checkpoint: Checkpoint) -> u64 {
        self.pending.send_if_modified(|(seq, current)| {
            let changed = **current != checkpoint;
            if changed {
                *seq += 1;
                *current = Arc::new(checkpoint);
            }
            changed
        });
        self.pending.borrow().0
    }
}

struct Actor {
    state: State,
    catalog: Arc<dyn AppCatalog>,
    orchestrator: Arc<dyn Orchestrator>,
    commands: mpsc::Sender<Command>,
    table: watch::Sender<Arc<RoutingTable>>,
    proxy_router: Option<photon_router::Router>,
    saver: Option<Saver>,
    /// The replicas' control clients (shared with the metrics scrape).
    clients: ReplicaClients,
}

impl Actor {
    /// Learns an application's code off the actor, then hands it back.
    fn learn(&self, app: ApplicationConfig) {
        let (catalog, commands) = (self.catalog.clone(), self.commands.clone());
        tokio::spawn(async move {
            catalog.learn(&app).await;
            let _ = commands.send(Command::CodeLearned(Box::new(app))).await;
        });
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut events: mpsc::UnboundedReceiver<ReplicaEvent>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => return,
                },
                Some(event) = events.recv() => match event {
                    ReplicaEvent::Exited { replica_id, how } => self.state.on_exited(&replica_id, &how, now()),
                    ReplicaEvent::Waiting { replica_id, why } => self.state.on_waiting(&replica_id, why),
                },
                _ = tick.tick() => {}
            }
            self.reconcile();
        }
    }

    fn handle(&mut self, cmd: Command) {
        let now = now();
        match cmd {
            Command::Apply(config, reply) => {
                for app in self.state.apply(&config, self.catalog.as_ref(), now) {
                    self.learn(app);
                }
                let _ = reply.send(self.checkpoint());
            }
            Command::CodeLearned(app) => self.state.code_learned(&app, self.catalog.as_ref(), now),
            Command::Registered { replica_id, address, data_address, pid, reply } => {
                let wanted = self.state.on_registered(&replica_id, &address, &data_address, pid, now);
                if wanted {
                    tracing::info!(replica = %replica_id, %address, "replica registered");
                }
                let _ = reply.send(wanted);
            }
            Command::Health { replica_id, result } => {
                if let Some(action) = self.state.on_health(&replica_id, result, now) {
                    self.execute(action);
                }
            }
            Command::Reconfigured { replica_id, result } => {
                if let Some(action) = self.state.on_reconfigured(&replica_id, result) {
                    self.execute(action);
                }
            }
            Command::Load { replica_id, ongoing } => self.state.on_load(&replica_id, ongoing),
            Command::Models { replica_id, model_ids } => self.state.on_models(&replica_id, model_ids),
            Command::Status(reply) => {
                let _ = reply.send(self.state.status());
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn reconcile(&mut self) {
        if let Some(router) = &self.proxy_router {
            self.state.set_proxy_queued(router.queued_by_deployment());
        }
        // Publish first: a replica leaving must be out of the table before it is told to stop.
        let actions = self.state.reconcile(now());
        self.publish();
        for action in actions {
            self.execute(action);
        }
        // Replicas gone for good take their control clients along.
        let live = self.state.control_addresses();
        self.clients.retain(|address| live.contains(address));
        self.checkpoint();
    }

    /// Hands the state store the current checkpoint; its sequence number, when there is one.
    fn checkpoint(&self) -> Option<u64> {
        self.saver.as_ref().map(|saver| saver.offer(self.state.checkpoint()))
    }

    fn publish(&mut self) {
        let table = self.state.routing_table();
        if table.version != self.table.borrow().version {
            self.table.send_replace(Arc::new(table.clone()));
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Start(spec) => {
                let replica_id = spec.replica_id.clone();
                crate::metrics::replica_started(&spec.app, &spec.deployment, &spec.replica_id);
                if let Err(e) = self.orchestrator.start(spec) {
                    tracing::error!(error = %e, "replica start failed");
                    self.state.on_exited(&replica_id, &e.to_string(), now());
                }
            }
            Action::Stop { replica_id, grace } => {
                tracing::info!(replica = %replica_id, "stopping replica");
                self.orchestrator.stop(&replica_id, grace);
            }
            Action::CheckHealth { replica_id, address, timeout } => {
                let (commands, clients) = (self.commands.clone(), self.clients.clone());
                tokio::spawn(async move {
                    let mut client = clients.get(&address);
                    let result = match tokio::time::timeout(timeout, client.health(pb::HealthRequest {})).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(status)) => Err(status.message().to_string()),
                        Err(_) => Err(format!("health check timed out after {}s", timeout.as_secs_f64())),
                    };
                    let _ = commands.send(Command::Health { replica_id, result }).await;
                });
            }
            Action::PollLoad { replica_id, address } => {
                let (commands, clients) = (self.commands.clone(), self.clients.clone());
                tokio::spawn(async move {
                    let mut client = clients.get(&address);
                    let call = client.load(pb::LoadRequest {});
                    let ongoing = match tokio::time::timeout(Duration::from_secs(1), call).await {
                        Ok(Ok(r)) => Some(r.into_inner().ongoing_requests),
                        _ => None,
                    };
                    let _ = commands.send(Command::Load { replica_id, ongoing }).await;
                });
            }
            Action::Reconfigure { replica_id, address, user_config, max_ongoing_requests } => {
                let (commands, clients) = (self.commands.clone(), self.clients.clone());
                tokio::spawn(async move {
                    let mut client = clients.get(&address);
                    let request = pb::ReconfigureRequest {
                        user_config_json: user_config.as_ref().map(Value::to_string).unwrap_or_default(),
                        max_ongoing_requests,
                    };
                    let result = match client.reconfigure(request).await {
                        Ok(_) => Ok((user_config, max_ongoing_requests)),
                        Err(status) => Err(status.message().to_string()),
                    };
                    let _ = commands.send(Command::Reconfigured { replica_id, result }).await;
                });
            }
        }
    }

    async fn shutdown(&mut self) {
        self.state.delete_all();
        self.reconcile();
        let grace = Duration::from_secs(30);
        self.orchestrator.shutdown(grace).await;
    }
}

/// The controller's clock: the one place it is read; the state is given the time.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}
