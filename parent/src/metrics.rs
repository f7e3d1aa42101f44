//! Prometheus metrics (issue 11 item 5, `docs/METRICS.md`): the registry, the hooks the
//! rest of the parent calls, and the separate `GET /metrics` listener
//! (`--metrics-listen`), served in the OpenMetrics text format by `prometheus-client`.
//!
//! Who counts what:
//! - the parent counts what only it sees: HTTP requests by route *template* and status
//!   ([`track_http`], a layer on the app router), and enclave round trips by request
//!   kind ([`Metrics::observe_round_trip`], in `Relay::call`);
//! - the enclave counts what it decides and does: signatures, refusals, KMS calls,
//!   data-key cache hits (`Request::Metrics`, asked at scrape time with a short
//!   deadline). The parent does not count signatures itself, so nothing is counted
//!   twice, and the numbers are the enclave's own, not what a compromised parent says
//!   it relayed. When the enclave does not answer, `ekms_enclave_up` is 0 and only the
//!   parent's own metrics are served.
//!
//! Rules for maintainers:
//! - every label value is from a closed set: route templates (never raw paths, which
//!   carry key ids), HTTP methods and codes, request kinds, payload kinds, rule names
//!   (checked on decode, `ekms_shared::metrics`); never a key id, an address, a token;
//! - the metrics listener is never the app socket and shares none of its routes or
//!   tokens: it serves `GET /metrics` and nothing else, without authentication, so it
//!   must expose nothing an app token protects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ekms_shared::metrics::KMS_DURATION_BUCKETS_SECONDS;
use ekms_shared::{EnclaveMetrics, ResponseBody};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::io::{AppListener, ServeLimits};
use crate::relay::Relay;

/// `Content-Type` of a scrape: OpenMetrics 1.0 text (Prometheus ≥ 2.5 asks for it; the
/// Prometheus text parsers read it too).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the enclave's counters before it answers without them
/// (`ekms_enclave_up 0`). Prometheus' default scrape timeout is 10 s.
pub const ENCLAVE_SCRAPE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Bounds (seconds) of the HTTP and enclave round-trip histograms: 250 µs (a cached
/// signature through a Unix socket) to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Label of requests that matched no route (their raw path is never a label).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// States of `ekms_enclave_state` (one is 1, the others 0).
const ENCLAVE_STATES: [&str; 3] = ["ready", "not_ready", "alarm"];

type HttpLabels = [(&'static str, String); 3];
type RouteLabels = [(&'static str, String); 2];
type RequestLabels = [(&'static str, &'static str); 1];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The parent's registry and its hooks. One per process; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    round_trip: HistogramFamily<RequestLabels>,
    enclave: Arc<Mutex<EnclaveView>>,
    /// One scrape at a time sets the enclave view and encodes.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every parent metric family (names in `docs/METRICS.md`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ekms");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "App API requests by method, route template and HTTP status",
            http_requests.clone(),
        );
        let http_duration = HistogramFamily::<RouteLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "App API request latency until the response head, by method and route template",
            http_duration.clone(),
        );
        let round_trip = HistogramFamily::<RequestLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "enclave_round_trip_seconds",
            "Parent-to-enclave request latency (relay send to answer, or failure), by request kind",
            round_trip.clone(),
        );
        let enclave = Arc::new(Mutex::new(EnclaveView::default()));
        registry.register_collector(Box::new(EnclaveCollector(Arc::clone(&enclave))));
        Metrics {
            registry,
            http_requests,
            http_duration,
            round_trip,
            enclave,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Hook: one app API request (`route` a template such as `/v1/keys/{key_id}/sign`,
    /// or [`UNMATCHED_ROUTE`]) answered with `status` after `elapsed`.
    pub fn observe_http(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_label(method).to_owned();
        self.http_requests
            .get_or_create(&[
                ("method", method.clone()),
                ("route", route.to_owned()),
                ("code", status.as_u16().to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&[("method", method), ("route", route.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// Hook: one enclave round trip of kind `request` (`Request::name`) took `elapsed`.
    pub fn observe_round_trip(&self, request: &'static str, elapsed: Duration) {
        self.round_trip
            .get_or_create(&[("request", request)])
            .observe(elapsed.as_secs_f64());
    }

    /// Hook: what the last look at the enclave found (connection state and, when it
    /// answered, its counters). Set at scrape time by [`Metrics::scrape`].
    pub fn set_enclave(&self, view: EnclaveView) {
        *self
            .enclave
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = view;
    }

    /// The exposition (OpenMetrics text, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder error is a bug here.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// One scrape: asks the enclave for its counters (at most
    /// [`ENCLAVE_SCRAPE_TIMEOUT`]), notes the relay's state, and encodes everything.
    pub async fn scrape(&self, relay: &Relay) -> String {
        let _one = self.scrape.lock().await;
        let view = EnclaveView::of(relay).await;
        self.set_enclave(view);
        self.encode()
    }
}

/// HTTP method as a label: the standard ones, else `other` (methods are free text).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Hook (an axum middleware for `Router::layer`, so that it runs per route, after
/// routing): counts and times each app request under its route template.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.observe_http(&method, &route, response.status(), started.elapsed());
    response
}

/// The enclave as the last scrape saw it.
#[derive(Debug, Clone, Default)]
pub struct EnclaveView {
    /// At least one relay connection is initialised.
    pub connected: bool,
    /// One of [`ENCLAVE_STATES`].
    pub state: &'static str,
    /// The enclave's counters, when it answered `Metrics` in time.
    pub metrics: Option<EnclaveMetrics>,
}

impl EnclaveView {
    /// Looks at `relay` and asks the enclave for its counters.
    pub async fn of(relay: &Relay) -> EnclaveView {
        let state = if relay.alarm().is_some() {
            "alarm"
        } else if relay.health().is_some() {
            "ready"
        } else {
            "not_ready"
        };
        let asked = tokio::time::timeout(
            ENCLAVE_SCRAPE_TIMEOUT,
            relay.call(ekms_shared::Request::Metrics),
        )
        .await;
        let metrics = match asked {
            Ok(Ok(ResponseBody::Metrics(m))) => Some(*m),
            Ok(Ok(_)) => {
                tracing::warn!("the enclave answered Metrics with another response");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no enclave metrics");
                None
            }
            Err(_) => {
                tracing::debug!("no enclave metrics: deadline passed");
                None
            }
        };
        EnclaveView {
            connected: state == "ready",
            state,
            metrics,
        }
    }
}

/// Encodes [`EnclaveView`] as metric families (the enclave's counters as they were
/// reported: constant metrics, re-read at every scrape).
#[derive(Debug)]
struct EnclaveCollector(Arc<Mutex<EnclaveView>>);

impl Collector for EnclaveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)
        };
        gauge(
            &mut encoder,
            "enclave_connected",
            "1 when at least one relay connection to the enclave is initialised",
            i64::from(view.connected),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "enclave_state",
                "The relay's view of the enclave: 1 for the current state",
                None,
                MetricType::Gauge,
            )?;
            for state in ENCLAVE_STATES {
                let labels = [("state", state)];
                ConstGauge::new(i64::from(view.state == state))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "enclave_up",
            "1 when the enclave answered this scrape's Metrics request in time",
            i64::from(view.metrics.is_some()),
        )?;
        let Some(e) = view.metrics else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "enclave_uptime_seconds",
            "Seconds since the enclave booted (its counters start at boot)",
            i64::try_from(e.uptime_secs).unwrap_or(i64::MAX),
        )?;
        counters(
            &mut encoder,
            "signatures",
            "Payloads the enclave signed, by key algorithm and payload kind",
            e.signatures.iter().map(|s| {
                let labels = [
                    ("algorithm", s.kind.algorithm().as_str()),
                    ("kind", s.kind.as_str()),
                ];
                (labels, s.count)
            }),
        )?;
        counters(
            &mut encoder,
            "refusals",
            "Sign requests the enclave refused (and audited), by algorithm, kind and rule",
            e.refusals.iter().map(|r| {
                let labels = [
                    ("algorithm", r.kind.algorithm().as_str()),
                    ("kind", r.kind.as_str()),
                    ("rule", r.rule.as_str()),
                ];
                (labels, r.count)
            }),
        )?;
        counters(
            &mut encoder,
            "kms_requests",
            "KMS calls the enclave made, by operation",
            e.kms
                .iter()
                .map(|k| ([("operation", k.operation.as_str())], k.requests)),
        )?;
        counters(
            &mut encoder,
            "kms_errors",
            "Failed KMS calls of the enclave, by operation and kind of failure",
            e.kms_errors.iter().map(|k| {
                let labels = [
                    ("operation", k.operation.as_str()),
                    ("kind", k.kind.as_str()),
                ];
                (labels, k.count)
            }),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "kms_request_duration_seconds",
                "Latency of the enclave's KMS calls, by operation",
                None,
                MetricType::Histogram,
            )?;
            for k in &e.kms {
                let bounds = KMS_DURATION_BUCKETS_SECONDS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY]);
                let buckets: Vec<(f64, u64)> =
                    bounds.zip(k.duration_buckets.iter().copied()).collect();
                let count = k.duration_buckets.iter().sum();
                // µs → s: exact enough for a latency sum (f64 has 53 bits).
                #[allow(clippy::cast_precision_loss)]
                let sum = k.duration_sum_micros as f64 / 1e6;
                let labels = [("operation", k.operation.as_str())];
                m.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        for (name, help, v) in [
            (
                "dek_cache_hits",
                "Data keys the enclave took from its cache",
                e.dek_cache_hits,
            ),
            (
                "dek_cache_misses",
                "Data keys that needed a KMS Decrypt (cache empty, expired, used up or off)",
                e.dek_cache_misses,
            ),
            (
                "dek_cache_refreshes",
                "KMS Decrypts of a cached data key made ahead of its entry's end",
                e.dek_cache_refreshes,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)?;
        }
        Ok(())
    }
}

/// Encodes one counter family from `(labels, value)` pairs.
fn counters<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Serves `GET /metrics` (and nothing else) on `listener` until `shutdown` resolves,
/// with the app listener's connection cap and deadlines ([`crate::io::serve`]).
///
/// # Errors
/// As [`crate::io::serve`].
pub async fn serve(
    listener: AppListener,
    metrics: Arc<Metrics>,
    relay: Relay,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    crate::io::serve(listener, router(metrics, relay), limits, shutdown).await
}

/// The metrics listener's router: `GET /metrics`, 404 for every other path.
pub fn router(metrics: Arc<Metrics>, relay: Relay) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((metrics, relay))
}

async fn scrape(State((metrics, relay)): State<(Arc<Metrics>, Relay)>) -> Response {
    let body = metrics.scrape(&relay).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_shared::metrics::{
        KmsErrorCount, KmsErrorKind, KmsOperation, KmsOperationMetrics, RefusalCount,
        SignatureCount,
    };
    use ekms_shared::PayloadKind;

    fn sample_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn http_requests_are_labelled_by_route_template() {
        let m = Metrics::new();
        m.observe_http(
            &Method::POST,
            "/v1/keys/{key_id}/sign",
            StatusCode::OK,
            Duration::from_millis(2),
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"ekms_http_requests_total{method="POST",route="/v1/keys/{key_id}/sign",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"ekms_http_request_duration_seconds_count{method="POST",route="/v1/keys/{key_id}/sign"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rejects_free_text_methods_as_labels() {
        let m = Metrics::new();
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        m.observe_http(&odd, UNMATCHED_ROUTE, StatusCode::NOT_FOUND, Duration::ZERO);
        let text = m.encode();
        assert!(!text.contains("PROPFIND"));
        assert!(text.contains(r#"method="other",route="unmatched",code="404""#));
    }

    #[test]
    fn without_the_enclave_only_parent_metrics_and_up_zero() {
        let m = Metrics::new();
        m.observe_round_trip("sign", Duration::from_micros(300));
        m.set_enclave(EnclaveView {
            connected: false,
            state: "not_ready",
            metrics: None,
        });
        let text = m.encode();
        assert_eq!(
            sample_line(&text, "ekms_enclave_up "),
            Some("ekms_enclave_up 0")
        );
        assert!(text.contains(r#"ekms_enclave_state{state="not_ready"} 1"#));
        assert!(text.contains(r#"ekms_enclave_round_trip_seconds_count{request="sign"} 1"#));
        assert!(!text.contains("ekms_signatures"));
    }

    #[test]
    fn enclave_counters_become_metric_families() {
        let m = Metrics::new();
        let mut buckets = vec![0; KMS_DURATION_BUCKETS_SECONDS.len() + 1];
        buckets[2] = 3;
        m.set_enclave(EnclaveView {
            connected: true,
            state: "ready",
            metrics: Some(EnclaveMetrics {
                uptime_secs: 9,
                signatures: vec![SignatureCount {
                    kind: PayloadKind::SolanaTransaction,
                    count: 4,
                }],
                refusals: vec![RefusalCount {
                    kind: PayloadKind::EvmTransaction,
                    rule: "evm.max_value_wei".into(),
                    count: 2,
                }],
                kms: vec![KmsOperationMetrics {
                    operation: KmsOperation::Decrypt,
                    requests: 3,
                    duration_buckets: buckets,
                    duration_sum_micros: 45_000,
                }],
                kms_errors: vec![KmsErrorCount {
                    operation: KmsOperation::Decrypt,
                    kind: KmsErrorKind::Throttled,
                    count: 1,
                }],
                dek_cache_hits: 7,
                dek_cache_misses: 3,
                dek_cache_refreshes: 1,
            }),
        });
        let text = m.encode();
        for line in [
            "ekms_enclave_up 1",
            "ekms_enclave_connected 1",
            r#"ekms_signatures_total{algorithm="ed25519",kind="solana_transaction"} 4"#,
            r#"ekms_refusals_total{algorithm="secp256k1",kind="evm_transaction",rule="evm.max_value_wei"} 2"#,
            r#"ekms_kms_requests_total{operation="Decrypt"} 3"#,
            r#"ekms_kms_errors_total{operation="Decrypt",kind="throttled"} 1"#,
            r#"ekms_kms_request_duration_seconds_bucket{le="0.025",operation="Decrypt"} 3"#,
            r#"ekms_kms_request_duration_seconds_bucket{le="+Inf",operation="Decrypt"} 3"#,
            r#"ekms_kms_request_duration_seconds_count{operation="Decrypt"} 3"#,
            "ekms_dek_cache_hits_total 7",
            "ekms_dek_cache_misses_total 3",
            "ekms_dek_cache_refreshes_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
