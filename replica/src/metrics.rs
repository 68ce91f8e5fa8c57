//! Replica metrics with Ray's names (spec/ray-serve.md section 10.3); every series carries the
//! `application`, `deployment` and `replica` labels.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec, IntCounterVec, IntGaugeVec,
};

struct Families {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    processing: IntGaugeVec,
    batches: IntCounterVec,
    batch_size: HistogramVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    requests: register_int_counter_vec!(
        "ray_serve_deployment_request_counter_total",
        "The number of queries that have been processed in this replica.",
        &["application", "deployment", "replica", "route"]
    )
    .expect("metric registers once"),
    errors: register_int_counter_vec!(
        "ray_serve_deployment_error_counter_total",
        "The number of exceptions that have occurred in this replica.",
        &["application", "deployment", "exception_type", "replica", "route"]
    )
    .expect("metric registers once"),
    latency: register_histogram_vec!(
        "ray_serve_deployment_processing_latency_ms",
        "The latency for queries to be processed.",
        &["application", "deployment", "replica", "route"],
        photon_router::metrics::LATENCY_BUCKETS_MS.to_vec()
    )
    .expect("metric registers once"),
    processing: register_int_gauge_vec!(
        "ray_serve_replica_processing_queries",
        "The current number of queries being processed.",
        &["application", "deployment", "replica"]
    )
    .expect("metric registers once"),
    batches: register_int_counter_vec!(
        "photon_model_batches_total",
        "Batches handed to a deployment's batch handler (for model deployments: forward passes).",
        &["application", "deployment", "replica"]
    )
    .expect("metric registers once"),
    batch_size: register_histogram_vec!(
        "photon_model_batch_size",
        "Items in each batch handed to a deployment's batch handler.",
        &["application", "deployment", "replica"],
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    )
    .expect("metric registers once"),
});

/// One replica's metric series.
pub struct ReplicaMetrics {
    labels: [String; 3],
    /// Requests executing now.
    pub processing: prometheus::IntGauge,
}

impl ReplicaMetrics {
    /// The series of replica `replica` of `application#deployment`.
    pub fn new(application: &str, deployment: &str, replica: &str) -> Self {
        let processing = FAMILIES.processing.with_label_values(&[application, deployment, replica]);
        ReplicaMetrics { labels: [application.into(), deployment.into(), replica.into()], processing }
    }

    /// Application, deployment and replica id.
    pub fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    /// Records one finished request; `error` is the deployment's error message, if it raised.
    pub fn record(&self, route: &str, took: Duration, error: Option<&str>) {
        let [app, dep, replica] = &self.labels;
        let labels = [app.as_str(), dep.as_str(), replica.as_str(), route];
        FAMILIES.requests.with_label_values(&labels).inc();
        FAMILIES.latency.with_label_values(&labels).observe(took.as_secs_f64() * 1000.0);
        if let Some(message) = error {
            // Errors raised by Python-like code start with their exception type.
            let exception =
                message.split(':').next().filter(|t| !t.is_empty() && !t.contains(' ')).unwrap_or("Exception");
            FAMILIES.errors.with_label_values(&[app, dep, exception, replica, route]).inc();
        }
    }
}

/// One replica's batching series: `photon_model_batches_total` and `photon_model_batch_size`.
#[derive(Clone)]
pub struct BatchMetrics {
    batches: prometheus::IntCounter,
    size: prometheus::Histogram,
}

impl BatchMetrics {
    /// The series of replica `replica` of `application#deployment`.
    pub fn new(application: &str, deployment: &str, replica: &str) -> Self {
        let labels = [application, deployment, replica];
        BatchMetrics {
            batches: FAMILIES.batches.with_label_values(&labels),
            size: FAMILIES.batch_size.with_label_values(&labels),
        }
    }

    /// Records one batch of `items`.
    pub fn record(&self, items: usize) {
        self.batches.inc();
        self.size.observe(items as f64);
    }
}
