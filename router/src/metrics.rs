//! Prometheus metrics with Ray Serve's names (spec/ray-serve.md section 10), shared pieces:
//! Ray's latency buckets, the router's own metrics, and merging the text expositions of several
//! processes into one scrape. Every process registers into the prometheus default registry.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

/// Ray's default latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 60000.0,
    120000.0, 300000.0, 600000.0,
];

/// Router metrics (labels: application, deployment, handle, actor_id).
pub(crate) struct RouterMetrics {
    pub requests: IntCounterVec,
    pub queued: IntGaugeVec,
    pub ongoing_at_replicas: IntGaugeVec,
}

pub(crate) static ROUTER: LazyLock<RouterMetrics> = LazyLock::new(|| RouterMetrics {
    requests: register_int_counter_vec!(
        "ray_serve_num_router_requests_total",
        "The number of requests processed by the router.",
        &["application", "deployment", "route", "handle", "actor_id"]
    )
    .expect("metric registers once"),
    queued: register_int_gauge_vec!(
        "ray_serve_deployment_queued_queries",
        "The current number of queries to this deployment waiting to be assigned to a replica.",
        &["application", "deployment", "handle", "actor_id"]
    )
    .expect("metric registers once"),
    ongoing_at_replicas: register_int_gauge_vec!(
        "ray_serve_num_ongoing_requests_at_replicas",
        "The current number of requests to this deployment that have been submitted to a replica.",
        &["application", "deployment", "handle", "actor_id"]
    )
    .expect("metric registers once"),
});

/// This process's metrics in the Prometheus text format.
pub fn gather_text() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_default()
}

/// Merges expositions from several processes: each family's HELP and TYPE appear once, with
/// the samples of every process under them (series differ by their replica/actor labels).
pub fn merge_expositions(texts: &[String]) -> String {
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<String>,
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for text in texts {
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split_whitespace().next().unwrap_or_default().to_string();
                let f =
                    families.entry(current.clone()).or_insert(Family { help: None, kind: None, samples: Vec::new() });
                f.help.get_or_insert_with(|| line.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split_whitespace().next().unwrap_or_default().to_string();
                let f =
                    families.entry(current.clone()).or_insert(Family { help: None, kind: None, samples: Vec::new() });
                f.kind.get_or_insert_with(|| line.to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                if let Some(f) = families.get_mut(&current) {
                    f.samples.push(line.to_string());
                }
            }
        }
    }
    let mut out = String::new();
    for f in families.values() {
        for line in f.help.iter().chain(f.kind.iter()).chain(f.samples.iter()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_one_header_per_family() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{replica=\"a\"} 1\n".to_string();
        let b =
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{replica=\"b\"} 2\n# HELP y Y.\n# TYPE y gauge\ny 3\n"
                .to_string();
        let merged = merge_expositions(&[a, b]);
        assert_eq!(
            merged,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{replica=\"a\"} 1\nx_total{replica=\"b\"} 2\n# HELP y Y.\n# TYPE y gauge\ny 3\n"
        );
    }
}
