//! Reconcile tests on the plain state, with a catalog written inline.

#![allow(clippy::disallowed_methods)] // tests make their own instants

use super::*;
use photon_config::DeploymentOverride;

struct Catalog;

impl AppCatalog for Catalog {
    fn blueprint(&self, app: &ApplicationConfig) -> Option<Result<AppBlueprint, String>> {
        Some(match app.import_path.as_str() {
            "two.app" => Ok(AppBlueprint {
                ingress: "Front".into(),
                deployments: vec![
                    DeploymentOverride { name: "Back".into(), ..Default::default() },
                    DeploymentOverride { name: "Front".into(), ..Default::default() },
                ],
                ..Default::default()
            }),
            other => Err(format!("unknown import path {other:?}")),
        })
    }
}

fn node(cpus: f64, gpus: u32) -> NodeResources {
    NodeResources { cpus, gpus: (0..gpus).collect(), memory_bytes: 64e9 }
}

fn state_on(node: NodeResources) -> State {
    let secrets = crate::checkpoint::ClusterSecrets { cluster_token: "token".into(), registration_key: "key".into() };
    State::new(Placement { controller_url: "http://127.0.0.1:1".into(), nodes: 1, node, secrets })
}

fn state() -> State {
    state_on(node(64.0, 0))
}

fn config(yaml: &str) -> ServeConfig {
    photon_config::parse_yaml(yaml).unwrap().config
}

fn starts(actions: &[Action]) -> Vec<ReplicaSpec> {
    actions.iter().filter_map(|a| if let Action::Start(s) = a { Some(s.clone()) } else { None }).collect()
}

fn register_all(s: &mut State, specs: &[ReplicaSpec], now: Instant) {
    for (i, spec) in specs.iter().enumerate() {
        assert!(s.on_registered(
            &spec.replica_id,
            &format!("127.0.0.1:{}", 1000 + i),
            &format!("127.0.0.1:{}", 2000 + i),
            1,
            now
        ));
    }
}

const TWO: &str = "applications:\n  - name: a\n    import_path: two.app\n    route_prefix: /a\n    deployments:\n      - name: Back\n        num_replicas: 2\n        max_replicas_per_node: 1\n";

#[test]
fn starts_replicas_then_runs_and_publishes_routes() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config(TWO), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    // Back wants 2 but one node holds at most 1; Front wants 1.
    assert_eq!(specs.len(), 2);
    assert!(s.routing_table().routes.iter().any(|r| r.ingress == "Front"));
    assert_eq!(s.status().applications[0].status, ApplicationStatus::DEPLOYING);
    register_all(&mut s, &specs, now);
    assert!(starts(&s.reconcile(now)).is_empty());
    let status = s.status();
    assert_eq!(status.applications[0].status, ApplicationStatus::RUNNING);
    let back = &status.applications[0].deployments[0];
    assert!(back.message.contains("max_replicas_per_node"), "{}", back.message);
    let table = s.routing_table();
    assert!(table.deployments.values().all(|d| d.replicas.len() == 1));
}

#[test]
fn a_dead_replica_is_replaced_and_leaves_the_table() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config(TWO), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    let v = s.routing_table().version;
    s.on_exited(&specs[0].replica_id, "signal: 9 (SIGKILL)", now);
    let table = s.routing_table().clone();
    assert!(table.version > v);
    assert!(table.deployments.values().any(|d| d.replicas.is_empty()));
    let again = starts(&s.reconcile(now));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deployment, specs[0].deployment);
}

#[test]
fn startup_failures_end_in_deploy_failed() {
    let mut s = state();
    let mut now = Instant::now();
    s.apply(&config("applications:\n  - name: a\n    import_path: two.app\n"), &Catalog, now);
    for _ in 0..10 {
        for spec in starts(&s.reconcile(now)) {
            if spec.deployment == "Back" {
                s.on_exited(&spec.replica_id, "exit status: 1", now);
            }
        }
        now += Duration::from_secs(10);
    }
    let status = s.status();
    assert_eq!(status.applications[0].status, ApplicationStatus::DEPLOY_FAILED);
    assert!(status.applications[0].deployments[0].message.contains("failed to start 3 times in a row"));
    assert!(s.routing_table().deployments[&DeploymentId::new("a", "Back")].unavailable);
}

#[test]
fn unknown_import_path_fails_only_that_app() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config("applications:\n  - name: bad\n    import_path: no.such\n    route_prefix: /bad\n  - name: good\n    import_path: two.app\n    route_prefix: /good\n"), &Catalog, now);
    s.reconcile(now);
    let status = s.status();
    assert_eq!(status.applications[0].status, ApplicationStatus::DEPLOY_FAILED);
    assert!(status.applications[0].message.contains("unknown import path"));
    assert_eq!(status.applications[1].status, ApplicationStatus::DEPLOYING);
}

#[test]
fn user_config_change_reconfigures_in_place() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config("applications:\n  - name: a\n    import_path: two.app\n    deployments:\n      - name: Back\n        user_config: {p: 1}\n"), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    s.apply(&config("applications:\n  - name: a\n    import_path: two.app\n    deployments:\n      - name: Back\n        user_config: {p: 2}\n"), &Catalog, now);
    let actions = s.reconcile(now);
    assert!(starts(&actions).is_empty(), "no new replicas for a user_config change");
    let reconf: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Reconfigure { .. })).collect();
    assert_eq!(reconf.len(), 1);
}

#[test]
fn removed_app_is_deleted() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config(TWO), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    s.apply(&config("applications: []\n"), &Catalog, now);
    let stops = s.reconcile(now).into_iter().filter(|a| matches!(a, Action::Stop { .. })).count();
    assert_eq!(stops, 2);
    assert!(s.routing_table().routes.is_empty());
    for spec in &specs {
        s.on_exited(&spec.replica_id, "exit status: 0", now);
    }
    s.reconcile(now);
    assert!(s.status().applications.is_empty());
}

#[test]
fn target_capacity_scales_fixed_replica_counts() {
    assert_eq!(capacity_adjusted(10, None), 10);
    assert_eq!(capacity_adjusted(10, Some(100.0)), 10);
    assert_eq!(capacity_adjusted(10, Some(25.0)), 3);
    assert_eq!(capacity_adjusted(10, Some(5.0)), 1);
    assert_eq!(capacity_adjusted(10, Some(0.0)), 0);
    let mut s = state();
    let now = Instant::now();
    s.apply(&config("target_capacity: 50\napplications:\n  - name: a\n    import_path: two.app\n    deployments:\n      - name: Back\n        num_replicas: 4\n"), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    assert_eq!(specs.iter().filter(|x| x.deployment == "Back").count(), 2);
}

#[test]
fn runtime_env_that_cannot_apply_is_reported() {
    let mut s = state();
    let now = Instant::now();
    s.apply(&config("applications:\n  - name: a\n    import_path: two.app\n    runtime_env: {working_dir: \"https://example.invalid/x.zip\", env_vars: {A: b}}\n"), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    let app = &s.status().applications[0];
    assert_eq!(app.status, ApplicationStatus::RUNNING);
    assert!(app.message.contains("runtime_env.working_dir is ignored"), "{}", app.message);
    assert!(!app.message.contains("env_vars"), "{}", app.message);
}

fn stops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| if let Action::Stop { replica_id, .. } = a { Some(replica_id.clone()) } else { None })
        .collect()
}

const GPU: &str = "applications:\n  - name: a\n    import_path: two.app\n    route_prefix: /a\n    deployments:\n      - name: Back\n        ray_actor_options: {num_gpus: 1}\n";

#[test]
fn a_replica_asking_for_a_missing_gpu_is_pending_with_the_reason() {
    let mut s = state_on(node(8.0, 0));
    let now = Instant::now();
    s.apply(&config(GPU), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    assert_eq!(specs.iter().map(|s| s.deployment.as_str()).collect::<Vec<_>>(), ["Front"]);
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    let status = s.status();
    assert_eq!(status.applications[0].status, ApplicationStatus::DEPLOYING);
    let back = status.applications[0].deployments.iter().find(|d| d.name == "Back").unwrap();
    assert_eq!(back.status, DeploymentStatus::UPDATING);
    assert!(back.message.contains("waiting for resources"), "{}", back.message);
    assert!(back.message.contains("short of GPU (needs 1, 0 of 0 free)"), "{}", back.message);
}

#[test]
fn gpus_are_handed_out_and_come_back_when_a_replica_ends() {
    let mut s = state_on(node(8.0, 2));
    let now = Instant::now();
    let yaml = GPU.replace("num_gpus: 1}", "num_gpus: 1}\n        num_replicas: 3");
    s.apply(&config(&yaml), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    let mut gpus: Vec<Vec<u32>> = specs.iter().filter(|s| s.deployment == "Back").map(|s| s.gpu_ids.clone()).collect();
    gpus.sort();
    assert_eq!(gpus, vec![vec![0], vec![1]], "two GPUs, two replicas; the third waits");
    let first = specs.iter().find(|s| s.gpu_ids == vec![0]).unwrap().replica_id.clone();
    s.on_exited(&first, "signal: 9 (SIGKILL)", now);
    let again = starts(&s.reconcile(now + Duration::from_secs(10)));
    assert_eq!(again.iter().map(|s| s.gpu_ids.clone()).collect::<Vec<_>>(), vec![vec![0]]);
}

#[test]
fn an_update_on_a_full_node_replaces_old_replicas_one_at_a_time() {
    let mut s = state_on(node(2.0, 0));
    let now = Instant::now();
    let v1 = "applications:\n  - name: a\n    import_path: two.app\n    route_prefix: /a\n    deployments:\n      - name: Back\n        ray_actor_options: {num_cpus: 1, runtime_env: {env_vars: {V: '1'}}}\n      - name: Front\n        ray_actor_options: {num_cpus: 1}\n";
    s.apply(&config(v1), &Catalog, now);
    let specs = starts(&s.reconcile(now));
    assert_eq!(specs.len(), 2);
    register_all(&mut s, &specs, now);
    s.reconcile(now);
    let old_back = specs.iter().find(|s| s.deployment == "Back").unwrap().replica_id.clone();
    // A new Back version needs a CPU; the node's two are taken, so the old Back makes way.
    s.apply(&config(&v1.replace("V: '1'", "V: '2'")), &Catalog, now);
    let actions = s.reconcile(now);
    assert!(starts(&actions).is_empty());
    assert_eq!(stops(&actions), vec![old_back.clone()]);
    s.on_exited(&old_back, "exit status: 0", now);
    let specs = starts(&s.reconcile(now));
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].env_vars.get("V").map(String::as_str), Some("2"));
}
