//! Validation tests: the sample parses, and each kind of bad document names its field.

use super::*;

fn errors_of(yaml: &str) -> Vec<String> {
    match parse_yaml(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn has(errors: &[String], needle: &str) -> bool {
    errors.iter().any(|e| e.contains(needle))
}

#[test]
fn sample_config_parses_with_ray_defaults() {
    let text = include_str!("../../examples/serve-config.yaml");
    let parsed = parse_yaml(text).unwrap();
    let c = parsed.config;
    assert_eq!(c.applications.len(), 2);
    assert_eq!(c.http_options.port, 8000);
    assert_eq!(c.grpc_options.port, 9000);
    assert_eq!(c.proxy_location, ProxyLocation::EveryNode);
    let fruit = &c.applications[0];
    assert_eq!(fruit.name, "fruit_app");
    assert_eq!(fruit.route_prefix.as_deref(), Some("/fruit"));
    let mango = &fruit.deployments[0];
    assert_eq!(mango.num_replicas, Some(NumReplicas::Fixed(2)));
    assert_eq!(mango.max_replicas_per_node, Some(1));
    assert_eq!(mango.user_config, Some(serde_json::json!({"price": 3})));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
}

#[test]
fn rayservice_manifest_yields_its_serve_config() {
    let manifest = parse_yaml(include_str!("../../examples/rayservice-sample.yaml")).unwrap();
    let plain = parse_yaml(include_str!("../../examples/serve-config.yaml")).unwrap();
    assert_eq!(manifest.config, plain.config);
}

#[test]
fn errors_in_a_rayservice_manifest_are_prefixed() {
    let errors = errors_of("kind: RayService\nspec:\n  serveConfigV2: |\n    applications:\n      - name: a\n");
    assert!(has(&errors, "spec.serveConfigV2: applications[0].import_path: field required"), "{errors:?}");
}

#[test]
fn bad_yaml_is_reported() {
    let errors = errors_of("applications: [\n");
    assert!(has(&errors, "invalid YAML"), "{errors:?}");
}

#[test]
fn all_errors_of_a_file_are_reported_together() {
    let errors = errors_of(
        "applications:\n  - name: a\n    import_path: x.y\n    deployments:\n      - name: D\n        max_ongoing_requests: 0\n        num_replicas: -1\n  - name: b\n",
    );
    assert!(has(&errors, "applications[0].deployments[0].max_ongoing_requests: must be > 0"), "{errors:?}");
    assert!(has(&errors, "applications[0].deployments[0].num_replicas: must be > 0"), "{errors:?}");
    assert!(has(&errors, "applications[1].import_path: field required"), "{errors:?}");
}

#[test]
fn wrong_types_name_the_field() {
    let errors = errors_of("applications:\n  - name: a\n    import_path: x.y\n    deployments:\n      - name: D\n        max_ongoing_requests: lots\n        health_check_period_s: [1]\n");
    assert!(has(&errors, "applications[0].deployments[0].max_ongoing_requests: must be an integer"), "{errors:?}");
    assert!(has(&errors, "applications[0].deployments[0].health_check_period_s: must be a number"), "{errors:?}");
}

#[test]
fn applications_is_required_and_a_list() {
    assert!(has(&errors_of("http_options: {port: 8000}\n"), "applications: field required"));
    assert!(has(&errors_of("applications: 3\n"), "applications: must be a list"));
}

#[test]
fn num_replicas_with_autoscaling_is_rejected() {
    let errors = errors_of("applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        num_replicas: 2\n        autoscaling_config: {min_replicas: 1, max_replicas: 3}\n");
    assert!(
        has(&errors, "applications[0].deployments[0].num_replicas: Manually setting num_replicas is not allowed"),
        "{errors:?}"
    );
}

#[test]
fn num_replicas_auto_and_strings() {
    let ok = parse_yaml(
        "applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        num_replicas: auto\n",
    )
    .unwrap();
    assert_eq!(ok.config.applications[0].deployments[0].num_replicas, Some(NumReplicas::Auto));
    let errors = errors_of(
        "applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        num_replicas: many\n",
    );
    assert!(has(&errors, "`num_replicas` must be an int or \"auto\", but got"), "{errors:?}");
}

#[test]
fn duplicate_names_and_prefixes_are_rejected() {
    let errors = errors_of("applications:\n  - name: a\n    import_path: x.y\n    route_prefix: /a\n  - name: a\n    import_path: x.y\n    route_prefix: /a\n");
    assert!(has(&errors, "applications[1].name: Found multiple configs for application \"a\""), "{errors:?}");
    assert!(
        has(&errors, "applications[1].route_prefix: Found duplicate applications for route prefix \"/a\""),
        "{errors:?}"
    );
}

#[test]
fn route_prefix_rules() {
    let errors = errors_of("applications:\n  - name: a\n    import_path: x.y\n    route_prefix: api\n");
    assert!(
        has(&errors, "applications[0].route_prefix: Invalid route_prefix 'api', must start with a forward slash"),
        "{errors:?}"
    );
    let errors = errors_of("applications:\n  - name: a\n    import_path: x.y\n    route_prefix: /api/\n");
    assert!(has(&errors, "may not end with a trailing '/'"), "{errors:?}");
    let ok = parse_yaml("applications:\n  - name: a\n    import_path: x.y\n    route_prefix: null\n").unwrap();
    assert_eq!(ok.config.applications[0].route_prefix, None);
}

#[test]
fn import_path_format() {
    let errors = errors_of("applications:\n  - name: a\n    import_path: nodots\n");
    assert!(has(&errors, "applications[0].import_path: Got invalid import path \"nodots\""), "{errors:?}");
    parse_yaml("applications:\n  - name: a\n    import_path: photon.examples:noop\n").unwrap();
}

#[test]
fn max_queued_requests_rules() {
    let errors = errors_of(
        "applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        max_queued_requests: 0\n",
    );
    assert!(has(&errors, "max_queued_requests must be -1 (no limit) or a positive integer"), "{errors:?}");
}

#[test]
fn unknown_fields_follow_ray() {
    // Rejected inside logging_config ...
    let errors = errors_of("logging_config: {encodng: JSON}\napplications: []\n");
    assert!(has(&errors, "logging_config.encodng: unknown field"), "{errors:?}");
    // ... ignored (with a warning) on a deployment.
    let ok =
        parse_yaml("applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        num_replica: 3\n")
            .unwrap();
    assert_eq!(ok.warnings[0].path, "applications[0].deployments[0].num_replica");
}

#[test]
fn legacy_host_in_an_application_is_rejected() {
    let errors = errors_of("applications:\n  - name: a\n    import_path: x.y\n    host: 0.0.0.0\n");
    assert!(
        has(&errors, "applications[0].host: Host \"0.0.0.0\" is set in the config for application `a`"),
        "{errors:?}"
    );
}

#[test]
fn autoscaling_bounds() {
    let errors = errors_of("applications:\n  - import_path: x.y\n    deployments:\n      - name: D\n        autoscaling_config: {min_replicas: 5, max_replicas: 2}\n");
    assert!(has(&errors, "max_replicas (2) must be greater than or equal to min_replicas (5)!"), "{errors:?}");
}

#[test]
fn overrides_replace_code_defaults_field_by_field() {
    let cfg = parse_yaml("applications:\n  - name: a\n    import_path: x.y\n    runtime_env: {env_vars: {A: app}}\n    deployments:\n      - name: D\n        user_config: {k: 2}\n").unwrap();
    let code = deployment_defaults(&serde_json::json!({
        "name": "D", "num_replicas": 3, "user_config": {"k": 1},
        "ray_actor_options": {"num_cpus": 0.5, "runtime_env": {"env_vars": {"B": "dep"}}}
    }))
    .unwrap();
    let bp = AppBlueprint { ingress: "D".into(), deployments: vec![code], ..Default::default() };
    let resolved = resolve_app(&cfg.config.applications[0], &bp).unwrap();
    let d = &resolved[0];
    assert_eq!(d.replicas, ReplicaTarget::Fixed(3));
    assert_eq!(d.user_config, Some(serde_json::json!({"k": 2})));
    assert_eq!(d.num_cpus, 0.5);
    assert_eq!(d.max_ongoing_requests, 5);
    assert_eq!(d.env_vars.get("A").map(String::as_str), Some("app"));
    assert_eq!(d.env_vars.get("B").map(String::as_str), Some("dep"));
}

#[test]
fn override_of_a_missing_deployment_is_an_error() {
    let cfg = parse_yaml("applications:\n  - import_path: x.y\n    deployments:\n      - name: Nope\n").unwrap();
    let bp = AppBlueprint {
        ingress: "D".into(),
        deployments: vec![DeploymentOverride { name: "D".into(), ..Default::default() }],
        ..Default::default()
    };
    let err = resolve_app(&cfg.config.applications[0], &bp).unwrap_err();
    assert_eq!(err, "Deployment 'Nope' does not exist. Available: ['D']");
}

#[test]
fn every_shipped_config_validates() {
    for (name, text) in [
        ("examples/grpc.yaml", include_str!("../../examples/grpc.yaml")),
        ("examples/models.yaml", include_str!("../../examples/models.yaml")),
        ("benches/noop.yaml", include_str!("../../benches/noop.yaml")),
        ("benches/noop-default-limits.yaml", include_str!("../../benches/noop-default-limits.yaml")),
    ] {
        let parsed = parse_yaml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
    }
}

#[test]
fn gpu_counts_are_shares_or_whole_numbers() {
    let doc = |gpus: &str| {
        format!("applications:\n  - name: a\n    import_path: x.y\n    deployments:\n      - name: D\n        ray_actor_options: {{num_gpus: {gpus}}}\n")
    };
    for ok in ["0", "0.25", "1", "2"] {
        parse_yaml(&doc(ok)).unwrap();
    }
    let errors = errors_of(&doc("1.5"));
    assert!(
        has(
            &errors,
            "applications[0].deployments[0].ray_actor_options.num_gpus: must be a whole number when greater than 1"
        ),
        "{errors:?}"
    );
}

#[test]
fn durations_are_bounded() {
    for option in ["graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s", "health_check_period_s"] {
        let yaml = format!(
            "applications:\n  - name: a\n    import_path: x.y\n    deployments:\n      - name: D\n        {option}: 1e20\n"
        );
        let err = parse_yaml(&yaml).unwrap_err().to_string();
        let expected = format!("applications[0].deployments[0].{option}: must be a finite number of seconds up to 1e9");
        assert!(err.contains(&expected), "{option}: {err}");
    }
    let err = parse_yaml("http_options: {request_timeout_s: 1e20}\napplications: []\n").unwrap_err().to_string();
    assert!(err.contains("http_options.request_timeout_s: must be a finite number of seconds up to 1e9"), "{err}");
}

#[test]
fn env_vars_cannot_set_loader_or_photon_variables() {
    let errors = errors_of(
        "applications:\n  - name: a\n    import_path: x.y\n    runtime_env: {env_vars: {LD_PRELOAD: /tmp/x.so, GREETING: hi}}\n    deployments:\n      - name: D\n        ray_actor_options: {runtime_env: {env_vars: {PHOTON_CLUSTER_TOKEN: t, CUDA_VISIBLE_DEVICES: '0', PYTHONHOME: /x}}}\n",
    );
    for path in [
        "applications[0].runtime_env.env_vars.LD_PRELOAD",
        "applications[0].deployments[0].ray_actor_options.runtime_env.env_vars.PHOTON_CLUSTER_TOKEN",
        "applications[0].deployments[0].ray_actor_options.runtime_env.env_vars.CUDA_VISIBLE_DEVICES",
        "applications[0].deployments[0].ray_actor_options.runtime_env.env_vars.PYTHONHOME",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(path)), "{path} not in {errors:?}");
    }
    assert_eq!(errors.len(), 4, "{errors:?}");
}

/// No document, however odd, makes parsing or validation panic: each ends in a config or in
/// field errors.
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// Mostly the config's own field names, so that generated documents reach deep validation.
    fn key() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "applications",
            "name",
            "route_prefix",
            "import_path",
            "deployments",
            "num_replicas",
            "max_ongoing_requests",
            "max_queued_requests",
            "autoscaling_config",
            "user_config",
            "ray_actor_options",
            "runtime_env",
            "env_vars",
            "http_options",
            "grpc_options",
            "logging_config",
            "graceful_shutdown_timeout_s",
            "graceful_shutdown_wait_loop_s",
            "health_check_period_s",
            "health_check_timeout_s",
            "target_ongoing_requests",
            "min_replicas",
            "max_replicas",
            "initial_replicas",
            "upscale_delay_s",
            "downscale_delay_s",
            "kind",
            "spec",
            "serveConfigV2",
            "num_cpus",
            "num_gpus",
            "memory",
            "working_dir",
            "py_modules",
            "args",
            "proxy_location",
            "request_timeout_s",
            "keep_alive_timeout_s",
            "port",
            "host",
            "root_path",
            "target_capacity",
            "grpc_servicer_functions",
            "log_level",
        ]);
        prop_oneof![known.prop_map(String::from), "[a-z_]{1,12}"]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_document_is_validated_without_panic(doc in json_value(), deployment in json_value()) {
            let _ = from_value(&doc);
            let _ = from_value(&json!({"applications": [doc.clone()]}));
            let _ = from_value(&json!({"http_options": doc.clone(), "applications": [{"name": "a", "import_path": "x.y", "deployments": [deployment]}]}));
            let _ = from_value(&json!({"kind": "RayService", "spec": {"serveConfigV2": doc.to_string()}}));
        }

        #[test]
        fn any_text_is_parsed_without_panic(text in "\\PC{0,300}") {
            let _ = parse_yaml(&text);
        }

        #[test]
        fn yaml_with_anchors_and_aliases_is_bounded_without_panic(
            lines in prop::collection::vec(("[a-c]", 0u8..4, prop::collection::vec(0usize..4, 0..6)), 1..8)
        ) {
            let mut text = String::new();
            for (i, (name, kind, uses)) in lines.iter().enumerate() {
                let items: Vec<String> = uses.iter().map(|u| if *u < i { format!("*{name}{u}") } else { "x".into() }).collect();
                match kind {
                    0 => text.push_str(&format!("k{i}: &{name}{i} [{}]\n", items.join(", "))),
                    1 => text.push_str(&format!("k{i}: &{name}{i} {{a: [{}]}}\n", items.join(", "))),
                    2 => text.push_str(&format!("k{i}: *{name}{}\n", i.saturating_sub(1))),
                    _ => text.push_str(&format!("k{i}: plain\n")),
                }
            }
            let _ = crate::yaml::from_str(&text);
        }
    }
}
