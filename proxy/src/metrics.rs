//! Front-door metrics with Ray's names and labels (spec/ray-serve.md section 10.1), for the
//! HTTP proxy (`<proto>` = `http`) and the gRPC proxy (`grpc`).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec, IntCounterVec, IntGaugeVec,
};

/// One protocol's metric families.
pub(crate) struct ProtoMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    errors: IntCounterVec,
    deployment_errors: IntCounterVec,
    ongoing: IntGaugeVec,
}

fn family(proto: &str) -> ProtoMetrics {
    let buckets = photon_router::metrics::LATENCY_BUCKETS_MS.to_vec();
    let upper = proto.to_uppercase();
    ProtoMetrics {
        requests: register_int_counter_vec!(
            format!("ray_serve_num_{proto}_requests_total"),
            format!("The number of {upper} requests processed."),
            &["application", "method", "route", "status_code"]
        )
        .expect("metric registers once"),
        latency: register_histogram_vec!(
            format!("ray_serve_{proto}_request_latency_ms"),
            format!("The end-to-end latency of {upper} requests (measured from the Serve {upper} proxy)."),
            &["application", "method", "route", "status_code"],
            buckets
        )
        .expect("metric registers once"),
        errors: register_int_counter_vec!(
            format!("ray_serve_num_{proto}_error_requests_total"),
            format!("The number of errored {upper} responses."),
            &["application", "error_code", "method", "route"]
        )
        .expect("metric registers once"),
        deployment_errors: register_int_counter_vec!(
            format!("ray_serve_num_deployment_{proto}_error_requests_total"),
            format!("The number of errored {upper} responses returned by each deployment."),
            &["application", "deployment", "error_code", "method", "route"]
        )
        .expect("metric registers once"),
        ongoing: register_int_gauge_vec!(
            format!("ray_serve_num_ongoing_{proto}_requests"),
            format!("The number of ongoing requests in this {upper} proxy."),
            &["node_id", "node_ip_address"]
        )
        .expect("metric registers once"),
    }
}

pub(crate) static HTTP: LazyLock<ProtoMetrics> = LazyLock::new(|| family("http"));
pub(crate) static GRPC: LazyLock<ProtoMetrics> = LazyLock::new(|| family("grpc"));

/// The label of a request's HTTP method: the methods of RFC 9110 (and PATCH) as they are,
/// anything a client invents as `other`, so clients cannot add series.
pub(crate) fn method_label(method: &http::Method) -> &str {
    use http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    if KNOWN.contains(method) {
        method.as_str()
    } else {
        "other"
    }
}

/// Distinct gRPC method paths that get a label of their own (per process); later ones are
/// `other`. Paths only count once they reached an application of the config.
const MAX_GRPC_METHOD_LABELS: usize = 1000;

/// The label of a gRPC method path: itself for Ray's built-in service and for methods routed
/// to an application (up to `MAX_GRPC_METHOD_LABELS` of them), else `other`.
pub(crate) fn grpc_method_label(path: &str, routed: bool) -> String {
    static SEEN: LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> = LazyLock::new(Default::default);
    if path.starts_with("/ray.serve.RayServeAPIService/") && path.len() < 64 {
        return path.to_string();
    }
    if !routed {
        return "other".to_string();
    }
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(path) || (seen.len() < MAX_GRPC_METHOD_LABELS && seen.insert(path.to_string())) {
        path.to_string()
    } else {
        "other".to_string()
    }
}

/// Where a request went, for its labels.
#[derive(Default)]
pub(crate) struct Target {
    pub application: String,
    pub route: String,
    pub deployment: String,
}

/// One front door's metrics, with the series that never change label resolved once.
pub(crate) struct DoorMetrics {
    metrics: &'static ProtoMetrics,
    ongoing: prometheus::IntGauge,
}

impl DoorMetrics {
    pub(crate) fn new(metrics: &'static LazyLock<ProtoMetrics>, node_id: &str) -> Self {
        let metrics: &'static ProtoMetrics = metrics;
        DoorMetrics { metrics, ongoing: metrics.ongoing.with_label_values(&[node_id, "127.0.0.1"]) }
    }

    /// Starts counting one request.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.ongoing.inc();
        InFlight { metrics: self.metrics, gauge: &self.ongoing, start: Instant::now() }
    }
}

/// Counts one request from arrival to response head; the ongoing gauge follows it.
pub(crate) struct InFlight<'a> {
    metrics: &'static ProtoMetrics,
    gauge: &'a prometheus::IntGauge,
    start: Instant,
}

impl InFlight<'_> {
    /// Records the outcome: `status` is the HTTP status number or the gRPC code name, `error`
    /// whether it counts as an error response.
    pub(crate) fn finish(self, target: &Target, method: &str, status: &str, error: bool) {
        let labels = [target.application.as_str(), method, target.route.as_str(), status];
        self.metrics.requests.with_label_values(&labels).inc();
        self.metrics.latency.with_label_values(&labels).observe(self.start.elapsed().as_secs_f64() * 1000.0);
        if error {
            self.metrics.errors.with_label_values(&[&target.application, status, method, &target.route]).inc();
            if !target.deployment.is_empty() {
                self.metrics
                    .deployment_errors
                    .with_label_values(&[&target.application, &target.deployment, status, method, &target.route])
                    .inc();
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
