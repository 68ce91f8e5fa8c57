//! Controller metrics with Ray's names (spec/ray-serve.md section 10.4), and the instance-wide
//! scrape: the head's own metrics merged with every running replica's.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

use crate::replica_client::ReplicaClients;
use crate::status::{ApplicationStatus, DeploymentStatus, InstanceStatus, ReplicaState};

struct Families {
    replica_healthy: IntGaugeVec,
    deployment_status: IntGaugeVec,
    application_status: IntGaugeVec,
    replica_starts: IntCounterVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    Families {
    replica_healthy: register_int_gauge_vec!(
        "ray_serve_deployment_replica_healthy",
        "Tracks healthy replicas: 1 for healthy and 0 for unhealthy.",
        &["application", "deployment", "replica"]
    )
    .expect("metric registers once"),
    deployment_status: register_int_gauge_vec!(
        "ray_serve_deployment_status",
        "Numeric status of deployment. 0=UNKNOWN, 1=DEPLOY_FAILED, 2=UNHEALTHY, 3=UPDATING, 4=UPSCALING, 5=DOWNSCALING, 6=HEALTHY.",
        &["application", "deployment"]
    )
    .expect("metric registers once"),
    application_status: register_int_gauge_vec!(
        "ray_serve_application_status",
        "Numeric status of application. 0=UNKNOWN, 1=DEPLOY_FAILED, 2=UNHEALTHY, 3=NOT_STARTED, 4=DELETING, 5=DEPLOYING, 6=RUNNING.",
        &["application"]
    )
    .expect("metric registers once"),
    replica_starts: register_int_counter_vec!(
        "ray_serve_deployment_replica_starts_total",
        "The number of times this replica has been restarted due to failure.",
        &["application", "deployment", "replica"]
    )
    .expect("metric registers once"),
}
});

/// Counts a replica start.
pub(crate) fn replica_started(application: &str, deployment: &str, replica: &str) {
    FAMILIES.replica_starts.with_label_values(&[application, deployment, replica]).inc();
}

fn deployment_code(s: DeploymentStatus) -> i64 {
    match s {
        DeploymentStatus::DEPLOY_FAILED => 1,
        DeploymentStatus::UNHEALTHY => 2,
        DeploymentStatus::UPDATING => 3,
        DeploymentStatus::UPSCALING => 4,
        DeploymentStatus::DOWNSCALING => 5,
        DeploymentStatus::HEALTHY => 6,
    }
}

fn application_code(s: ApplicationStatus) -> i64 {
    match s {
        ApplicationStatus::DEPLOY_FAILED => 1,
        ApplicationStatus::UNHEALTHY => 2,
        ApplicationStatus::NOT_STARTED => 3,
        ApplicationStatus::DELETING => 4,
        ApplicationStatus::DEPLOYING => 5,
        ApplicationStatus::RUNNING => 6,
    }
}

/// Sets the status gauges from a snapshot (series of deleted apps disappear).
fn record_status(status: &InstanceStatus) {
    let f = &*FAMILIES;
    f.replica_healthy.reset();
    f.deployment_status.reset();
    f.application_status.reset();
    for app in &status.applications {
        f.application_status.with_label_values(&[&app.name]).set(application_code(app.status));
        for d in &app.deployments {
            f.deployment_status.with_label_values(&[&app.name, &d.name]).set(deployment_code(d.status));
            for r in &d.replicas {
                let healthy = matches!(r.state, ReplicaState::RUNNING | ReplicaState::UPDATING)
                    && r.last_health_check_error.is_none();
                f.replica_healthy.with_label_values(&[&app.name, &d.name, &r.replica_id]).set(healthy as i64);
            }
        }
    }
}

/// One scrape of the whole instance: this process's metrics and each running replica's,
/// fetched over the replicas' control service (a replica that does not answer within a second
/// is left out of this scrape).
pub(crate) async fn scrape(status: &InstanceStatus, clients: &ReplicaClients) -> String {
    record_status(status);
    let addresses: Vec<String> = status
        .applications
        .iter()
        .flat_map(|a| a.deployments.iter())
        .flat_map(|d| d.replicas.iter())
        .filter(|r| matches!(r.state, ReplicaState::RUNNING | ReplicaState::UPDATING | ReplicaState::STOPPING))
        .filter_map(|r| r.address.clone())
        .collect();
    let fetches = addresses.into_iter().map(|address| {
        let mut client = clients.get(&address);
        tokio::spawn(async move {
            let call = client.metrics(photon_proto::v1::MetricsRequest {});
            match tokio::time::timeout(Duration::from_secs(1), call).await {
                Ok(Ok(r)) => Some(r.into_inner().text),
                _ => None,
            }
        })
    });
    let mut texts = vec![photon_router::metrics::gather_text()];
    for f in fetches.collect::<Vec<_>>() {
        if let Ok(Some(text)) = f.await {
            texts.push(text);
        }
    }
    photon_router::metrics::merge_expositions(&texts)
}
