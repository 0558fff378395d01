//! Prometheus metrics. Every label comes from a bounded set: route
//! templates (never raw paths), methods, status codes, datastore ids from
//! the config, and fixed reason names. Nothing a client chooses (sizes,
//! media ids, file names) ever becomes a label.

mod operations;

use std::sync::Arc;

pub use operations::Operations;

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

/// The operations datastore metrics are counted under.
pub const DATASTORE_OPERATIONS: [&str; 4] = ["put", "get", "head", "delete"];

/// Why thumbnails are refused.
pub const REFUSAL_REASONS: [&str; 7] = [
    "source_too_large",
    "unsupported",
    "too_many_pixels",
    "too_many_frames",
    "over_memory_budget",
    "decode_failed",
    "encode_failed",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
    detail: &'static str,
}

/// Every (reason, detail) pair a refusal can be counted under.
fn refusal_series() -> Vec<(&'static str, &'static str)> {
    use crate::thumbnail::{DecodeFailure, Refused};
    let mut series = Vec::new();
    for reason in REFUSAL_REASONS {
        match reason {
            "unsupported" => series.extend(Refused::ALL.iter().map(|k| (reason, k.label()))),
            "decode_failed" => {
                series.extend(DecodeFailure::ALL.iter().map(|f| (reason, f.label())));
            }
            _ => series.push((reason, "")),
        }
    }
    series
}

/// How a background pre-generation of thumbnails ended.
pub const PREGENERATION_OUTCOMES: [&str; 3] = ["made", "refused", "skipped"];

/// How a URL preview went: a page, an image, something else (nothing to
/// show), a failure, and answers served (from the cache or fresh).
pub const PREVIEW_OUTCOMES: [&str; 5] = ["page", "image", "other", "failed", "served"];

/// Moderation actions, the `action` label of `moderation_actions`.
pub const MODERATION_ACTIONS: [&str; 10] = [
    "quarantine",
    "unquarantine",
    "quarantine_user",
    "quarantine_room",
    "protect",
    "unprotect",
    "delete",
    "delete_user_media",
    "purge_local",
    "purge_remote",
];

/// What retention deletes, the `kind` label of its counters.
pub const RETENTION_KINDS: [&str; 3] = ["local", "remote", "thumbnail"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    /// The user class (`default` when none matched, `address` for limits
    /// keyed by client address); never a user id.
    class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    class: String,
    /// `uploads`, `downloads`, `thumbnails` or `remote_fetches`.
    family: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModerationLabels {
    action: &'static str,
    /// Whether the media existed (`true`) or the action found nothing.
    found: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Registers `metric` under `name` and hands it back.
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

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
    memory_hits: Counter,
    thumbnails_generated: Family<KindLabels, Counter>,
    thumbnails_refused: Family<RefusalLabels, Counter>,
    pregenerations: Family<OutcomeLabels, Counter>,
    previews: Family<OutcomeLabels, Counter>,
    moderation: Family<ModerationLabels, Counter>,
    retention_deleted: Family<KindLabels, Counter>,
    retention_freed: Family<KindLabels, Counter>,
    quota_refusals: Family<ClassLabels, Counter>,
    rate_limited: Family<LimitedLabels, Counter>,
    uploads_pending: Gauge,
    downloads_waiting: Gauge,
    ops: Operations,
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
    // One registration per metric, all in one place: long, and flat.
    #[allow(clippy::too_many_lines)]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mxmedia");
        let requests = register(
            &mut registry,
            "http_requests",
            "HTTP requests by route template, method and status",
            Family::<RequestLabels, Counter>::default(),
        );
        let latency = register(
            &mut registry,
            "http_request_duration_seconds",
            "Time from request to response headers",
            Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            ),
        );
        let bytes_in = register(
            &mut registry,
            "http_request_body_bytes",
            "Request body bytes received",
            Family::<RouteLabels, Counter>::default(),
        );
        let bytes_out = register(
            &mut registry,
            "http_response_body_bytes",
            "Response body bytes sent",
            Family::<RouteLabels, Counter>::default(),
        );
        let datastore_calls = register(
            &mut registry,
            "datastore_calls",
            "Datastore calls by datastore and operation",
            Family::<DatastoreLabels, Counter>::default(),
        );
        let datastore_errors = register(
            &mut registry,
            "datastore_errors",
            "Failed datastore calls by datastore and operation",
            Family::<DatastoreLabels, Counter>::default(),
        );
        let cache_hits = register(
            &mut registry,
            "cache_hits",
            "Reads served from the hot cache",
            Counter::default(),
        );
        let cache_misses = register(
            &mut registry,
            "cache_misses",
            "Reads of object-store blobs the hot cache did not have",
            Counter::default(),
        );
        let cache_bytes = register(
            &mut registry,
            "cache_hit_bytes",
            "Bytes served from the hot cache",
            Counter::default(),
        );
        let memory_hits = register(
            &mut registry,
            "memory_cache_hits",
            "Reads of small blobs served from memory",
            Counter::default(),
        );
        let thumbnails_generated = register(
            &mut registry,
            "thumbnails_generated",
            "Thumbnails made, still or animated",
            Family::<KindLabels, Counter>::default(),
        );
        let thumbnails_refused = register(
            &mut registry,
            "thumbnails_refused",
            "Thumbnail requests refused, by reason, and by the kind of file or of decoding failure",
            Family::<RefusalLabels, Counter>::default(),
        );
        let pregenerations = register(
            &mut registry,
            "thumbnail_pregenerations",
            "Background thumbnail pre-generations after upload, by outcome",
            Family::<OutcomeLabels, Counter>::default(),
        );
        let previews = register(
            &mut registry,
            "url_previews",
            "URL previews made (page, image, other, failed) and served",
            Family::<OutcomeLabels, Counter>::default(),
        );
        let moderation = register(
            &mut registry,
            "moderation_actions",
            "Admin moderation actions, by action and whether the media was found",
            Family::<ModerationLabels, Counter>::default(),
        );
        let retention_deleted = register(
            &mut registry,
            "retention_deleted",
            "Media and thumbnails deleted by retention, by kind",
            Family::<KindLabels, Counter>::default(),
        );
        let retention_freed = register(
            &mut registry,
            "retention_freed_bytes",
            "Bytes of media and thumbnails deleted by retention, by kind",
            Family::<KindLabels, Counter>::default(),
        );
        let quota_refusals = register(
            &mut registry,
            "quota_refusals",
            "Uploads refused by a quota, by user class",
            Family::<ClassLabels, Counter>::default(),
        );
        let rate_limited = register(
            &mut registry,
            "rate_limited",
            "Requests refused by a rate limit, by user class and request family",
            Family::<LimitedLabels, Counter>::default(),
        );
        let downloads_waiting = register(
            &mut registry,
            "downloads_waiting",
            "Downloads waiting for media whose async upload has not arrived",
            Gauge::default(),
        );
        let uploads_pending = register(
            &mut registry,
            "uploads_pending",
            "Media ids created for async upload and not uploaded yet",
            Gauge::default(),
        );
        let ops = Operations::register(&mut registry);
        let metrics = Self {
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
                memory_hits,
                thumbnails_generated,
                thumbnails_refused,
                pregenerations,
                previews,
                moderation,
                retention_deleted,
                retention_freed,
                quota_refusals,
                rate_limited,
                uploads_pending,
                downloads_waiting,
                ops,
            }),
        };
        metrics.start_known_series_at_zero();
        metrics
    }

    /// Every known series starts at zero, so rates and alerts work before
    /// the first event.
    fn start_known_series_at_zero(&self) {
        let inner = &self.inner;
        for kind in ["still", "animated"] {
            let _ = inner
                .thumbnails_generated
                .get_or_create(&KindLabels { kind });
        }
        for (reason, detail) in refusal_series() {
            let _ = inner
                .thumbnails_refused
                .get_or_create(&RefusalLabels { reason, detail });
        }
        for outcome in PREGENERATION_OUTCOMES {
            let _ = inner
                .pregenerations
                .get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in PREVIEW_OUTCOMES {
            let _ = inner.previews.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in RETENTION_KINDS {
            let _ = inner.retention_deleted.get_or_create(&KindLabels { kind });
            let _ = inner.retention_freed.get_or_create(&KindLabels { kind });
        }
        for action in MODERATION_ACTIONS {
            for found in ["true", "false"] {
                let _ = inner
                    .moderation
                    .get_or_create(&ModerationLabels { action, found });
            }
        }
    }

    /// Token checks, remote fetches, background jobs, datastore samples.
    pub fn ops(&self) -> &Operations {
        &self.inner.ops
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

    pub fn memory_hit(&self) {
        self.inner.memory_hits.inc();
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

    /// A refused thumbnail: `reason` from `REFUSAL_REASONS`, `detail` the
    /// kind of file (for `unsupported`) or of decoding failure (for
    /// `decode_failed`), empty otherwise.
    pub fn thumbnail_refused(&self, reason: &'static str, detail: &'static str) {
        self.inner
            .thumbnails_refused
            .get_or_create(&RefusalLabels { reason, detail })
            .inc();
    }

    /// A pre-generation ended: `outcome` is one of `PREGENERATION_OUTCOMES`.
    pub fn pregeneration(&self, outcome: &'static str) {
        self.inner
            .pregenerations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A URL preview step: `outcome` is one of `PREVIEW_OUTCOMES`.
    pub fn preview(&self, outcome: &'static str) {
        self.inner
            .previews
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// An admin's moderation action (one of `MODERATION_ACTIONS`).
    pub fn moderation(&self, action: &'static str, found: bool) {
        let found = if found { "true" } else { "false" };
        self.inner
            .moderation
            .get_or_create(&ModerationLabels { action, found })
            .inc();
    }

    /// Items and bytes retention deleted (`kind`: one of `RETENTION_KINDS`).
    pub fn retention(&self, kind: &'static str, items: u64, bytes: u64) {
        let labels = KindLabels { kind };
        self.inner
            .retention_deleted
            .get_or_create(&labels)
            .inc_by(items);
        self.inner
            .retention_freed
            .get_or_create(&labels)
            .inc_by(bytes);
    }

    /// An upload a quota refused, by the user's class.
    pub fn quota_refused(&self, class: &str) {
        self.inner
            .quota_refusals
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
    }

    /// A request a rate limit refused.
    pub fn rate_limited(&self, class: &str, family: &'static str) {
        self.inner
            .rate_limited
            .get_or_create(&LimitedLabels {
                class: class.to_owned(),
                family,
            })
            .inc();
    }

    /// Counts a download waiting for pending media while the guard lives.
    pub fn download_waiting(&self) -> WaitingGuard {
        self.inner.downloads_waiting.inc();
        WaitingGuard(self.inner.downloads_waiting.clone())
    }

    pub fn set_uploads_pending(&self, pending: u64) {
        self.inner
            .uploads_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    /// The counter of request body bytes on `route` (a route template).
    pub fn route_bytes_in(&self, route: &str) -> Counter {
        self.inner
            .bytes_in
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone()
    }

    /// The counter of response body bytes on `route`.
    pub fn route_bytes_out(&self, route: &str) -> Counter {
        self.inner
            .bytes_out
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone()
    }

    /// One finished request: its count by status, and its latency to
    /// response headers.
    pub fn request_done(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        self.inner
            .latency
            .get_or_create(&LatencyLabels {
                route: route.to_owned(),
                method,
            })
            .observe(seconds);
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
    }
}

/// See [`Metrics::download_waiting`].
pub struct WaitingGuard(Gauge);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
