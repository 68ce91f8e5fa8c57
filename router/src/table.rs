//! The routing table: which applications exist, their route prefixes and ingress deployments,
//! and each deployment's routable replicas and limits. The controller publishes versioned
//! snapshots; routers apply them whole.

use std::collections::BTreeMap;
use std::fmt;

use photon_proto::v1 as pb;

/// Names one deployment of one application.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId {
    /// Application name.
    pub app: String,
    /// Deployment name.
    pub name: String,
}

impl DeploymentId {
    /// The id of `name` in `app`.
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        DeploymentId { app: app.into(), name: name.into() }
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.app, self.name)
    }
}

/// One application as the front doors see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRoute {
    /// Application name.
    pub app: String,
    /// HTTP prefix; `None` = handles only.
    pub route_prefix: Option<String>,
    /// The deployment that receives the app's traffic.
    pub ingress: String,
}

/// A routable replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEndpoint {
    /// Replica id (unique across the instance).
    pub replica_id: String,
    /// `host:port` of its data port (requests, HTTP/1.1; `wire`).
    pub address: String,
    /// Multiplexed model ids it holds or is loading.
    pub model_ids: Vec<String>,
}

/// A deployment's replicas and request limits.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentTargets {
    /// Requests executing per replica.
    pub max_ongoing_requests: u32,
    /// Requests waiting per caller; `None`: no limit.
    pub max_queued_requests: Option<u64>,
    /// Status of backpressure rejections.
    pub backpressure_status_code: u16,
    /// `Retry-After` of backpressure rejections.
    pub retry_after_s: Option<f64>,
    /// Running replicas, ready for traffic.
    pub replicas: Vec<ReplicaEndpoint>,
    /// Failed to deploy and nothing runs: reject rather than wait.
    pub unavailable: bool,
}

/// One version of the whole table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingTable {
    /// Increases with every change.
    pub version: u64,
    /// Applications, in config order.
    pub routes: Vec<AppRoute>,
    /// Every deployment of every application.
    pub deployments: BTreeMap<DeploymentId, DeploymentTargets>,
}

/// A routing-table message that does not make sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid routing table: {0}")]
pub struct InvalidTable(String);

impl TryFrom<pb::RoutingTable> for RoutingTable {
    type Error = InvalidTable;

    fn try_from(t: pb::RoutingTable) -> Result<Self, Self::Error> {
        let routes = t
            .routes
            .into_iter()
            .map(|r| AppRoute { app: r.app, route_prefix: r.route_prefix, ingress: r.ingress_deployment })
            .collect();
        let mut deployments = BTreeMap::new();
        for d in t.deployments {
            if d.max_ongoing_requests == 0 {
                return Err(InvalidTable(format!("{}#{}: max_ongoing_requests is 0", d.app, d.deployment)));
            }
            let targets = DeploymentTargets {
                max_ongoing_requests: d.max_ongoing_requests,
                // On the wire, as in Ray's config, a negative number is no limit.
                max_queued_requests: u64::try_from(d.max_queued_requests).ok(),
                backpressure_status_code: if d.backpressure_status_code == 0 {
                    503
                } else {
                    d.backpressure_status_code as u16
                },
                retry_after_s: d.retry_after_s,
                replicas: d
                    .replicas
                    .into_iter()
                    .map(|r| ReplicaEndpoint { replica_id: r.replica_id, address: r.address, model_ids: r.model_ids })
                    .collect(),
                unavailable: d.unavailable,
            };
            deployments.insert(DeploymentId::new(d.app, d.deployment), targets);
        }
        Ok(RoutingTable { version: t.version, routes, deployments })
    }
}

impl From<&RoutingTable> for pb::RoutingTable {
    fn from(t: &RoutingTable) -> Self {
        pb::RoutingTable {
            version: t.version,
            routes: t
                .routes
                .iter()
                .map(|r| pb::Route {
                    app: r.app.clone(),
                    route_prefix: r.route_prefix.clone(),
                    ingress_deployment: r.ingress.clone(),
                })
                .collect(),
            deployments: t
                .deployments
                .iter()
                .map(|(id, d)| pb::DeploymentTargets {
                    app: id.app.clone(),
                    deployment: id.name.clone(),
                    max_ongoing_requests: d.max_ongoing_requests,
                    max_queued_requests: d.max_queued_requests.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX)),
                    replicas: d
                        .replicas
                        .iter()
                        .map(|r| pb::ReplicaEndpoint {
                            replica_id: r.replica_id.clone(),
                            address: r.address.clone(),
                            model_ids: r.model_ids.clone(),
                        })
                        .collect(),
                    unavailable: d.unavailable,
                    backpressure_status_code: d.backpressure_status_code as u32,
                    retry_after_s: d.retry_after_s,
                })
                .collect(),
        }
    }
}
