//! Prometheus metrics. Every label comes from a bounded set: route
//! templates (never raw paths), methods, status codes, datastore ids from
//! the config, and fixed reason names. Nothing a client chooses (sizes,
//! media ids, file names) ever becomes a label.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatastoreLabels {
    datastore: String,
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The operations datastore metrics are counted under.
pub const DATASTORE_OPERATIONS: [&str; 4] = ["put", "get", "head", "delete"];

/// Why thumbnails are refused.
pub const REFUSAL_REASONS: [&str; 6] = [
    "source_too_large",
    "unsupported",
    "too_many_pixels",
    "too_many_frames",
    "decode_failed",
    "encode_failed",
];

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    datastore_calls: Family<DatastoreLabels, Counter>,
    datastore_errors: Family<DatastoreLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Counter,
    thumbnails_generated: Family<KindLabels, Counter>,
    thumbnails_refused: Family<ReasonLabels, Counter>,
    uploads_pending: Gauge,
}

/// The process's metrics; cheap to clone, one per server.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mxmedia");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers",
            latency.clone(),
        );
        let bytes_in = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_request_body_bytes",
            "Request body bytes received",
            bytes_in.clone(),
        );
        let bytes_out = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_response_body_bytes",
            "Response body bytes sent",
            bytes_out.clone(),
        );
        let datastore_calls = Family::<DatastoreLabels, Counter>::default();
        registry.register(
            "datastore_calls",
            "Datastore calls by datastore and operation",
            datastore_calls.clone(),
        );
        let datastore_errors = Family::<DatastoreLabels, Counter>::default();
        registry.register(
            "datastore_errors",
            "Failed datastore calls by datastore and operation",
            datastore_errors.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Reads served from the hot cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Reads of object-store blobs the hot cache did not have",
            cache_misses.clone(),
        );
        let cache_bytes = Counter::default();
        registry.register(
            "cache_hit_bytes",
            "Bytes served from the hot cache",
            cache_bytes.clone(),
        );
        let thumbnails_generated = Family::<KindLabels, Counter>::default();
        registry.register(
            "thumbnails_generated",
            "Thumbnails made, still or animated",
            thumbnails_generated.clone(),
        );
        let thumbnails_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "thumbnails_refused",
            "Thumbnail requests refused, by reason",
            thumbnails_refused.clone(),
        );
        let uploads_pending = Gauge::default();
        registry.register(
            "uploads_pending",
            "Media ids created for async upload and not uploaded yet",
            uploads_pending.clone(),
        );
        // Every known series starts at zero, so rates and alerts work before
        // the first event.
        for kind in ["still", "animated"] {
            let _ = thumbnails_generated.get_or_create(&KindLabels { kind });
        }
        for reason in REFUSAL_REASONS {
            let _ = thumbnails_refused.get_or_create(&ReasonLabels { reason });
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                latency,
                bytes_in,
                bytes_out,
                datastore_calls,
                datastore_errors,
                cache_hits,
                cache_misses,
                cache_bytes,
                thumbnails_generated,
                thumbnails_refused,
                uploads_pending,
            }),
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Starts a datastore's call and error series at zero.
    pub fn register_datastore(&self, datastore: &str) {
        for operation in DATASTORE_OPERATIONS {
            let labels = DatastoreLabels {
                datastore: datastore.to_owned(),
                operation,
            };
            let _ = self.inner.datastore_calls.get_or_create(&labels);
            let _ = self.inner.datastore_errors.get_or_create(&labels);
        }
    }

    pub fn datastore_call(&self, datastore: &str, operation: &'static str, ok: bool) {
        let labels = DatastoreLabels {
            datastore: datastore.to_owned(),
            operation,
        };
        self.inner.datastore_calls.get_or_create(&labels).inc();
        if !ok {
            self.inner.datastore_errors.get_or_create(&labels).inc();
        }
    }

    pub fn cache_hit(&self) {
        self.inner.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.inner.cache_misses.inc();
    }

    /// A counter for the bytes a cache hit streams out.
    pub fn cache_hit_bytes(&self) -> Counter {
        self.inner.cache_bytes.clone()
    }

    pub fn thumbnails_generated(&self, animated: bool, count: u64) {
        let kind = if animated { "animated" } else { "still" };
        self.inner
            .thumbnails_generated
            .get_or_create(&KindLabels { kind })
            .inc_by(count);
    }

    pub fn thumbnail_refused(&self, reason: &'static str) {
        self.inner
            .thumbnails_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn set_uploads_pending(&self, pending: u64) {
        self.inner
            .uploads_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::OPTIONS => "OPTIONS",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Middleware: counts the request, its latency to headers, and its body
/// bytes in both directions, under the matched route template.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let route_labels = RouteLabels { route };
    let bytes_in = metrics.inner.bytes_in.get_or_create(&route_labels).clone();
    let request = request.map(|body| Body::new(Counted::new(body, bytes_in)));
    let response = next.run(request).await;
    let RouteLabels { route } = route_labels;
    metrics
        .inner
        .latency
        .get_or_create(&LatencyLabels {
            route: route.clone(),
            method,
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .inner
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status: response.status().as_u16(),
        })
        .inc();
    let bytes_out = metrics
        .inner
        .bytes_out
        .get_or_create(&RouteLabels { route })
        .clone();
    response.map(|body| Body::new(Counted::new(body, bytes_out)))
}

/// A body that adds the length of each data frame to a counter, and keeps
/// the inner body's size hint (so fixed-length bodies stay fixed-length).
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: Counter) -> Self {
        Self { inner, counter }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
