//! Metrics an operator alerts on: the homeserver's token checks, fetches
//! of other servers' media, the background jobs, and what the datastores
//! and the hot cache hold (sampled). Labels come from fixed sets and the
//! configured datastore ids.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{OutcomeLabels, latency_histogram, register};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    /// Not `job`: Prometheus sets that label to the scrape job's name.
    task: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    datastore: String,
}

/// How a token check ended: `valid`, `unknown_token` (the homeserver does
/// not know it), `rejected` (it refused otherwise: forbidden, rate limited)
/// or `failed` (it could not be asked, or answered nonsense).
pub const TOKEN_OUTCOMES: [&str; 4] = ["valid", "unknown_token", "rejected", "failed"];
/// How a fetch of another server's media ended.
pub const FETCH_OUTCOMES: [&str; 8] = [
    "fetched",
    "not_found",
    "too_large",
    "failed",
    "backing_off",
    "busy",
    "blocked",
    "not_configured",
];
/// The background jobs.
pub const JOBS: [&str; 4] = ["sweep", "access_times", "retention", "datastore_sample"];

#[derive(Clone)]
pub struct Operations {
    token_checks: Family<OutcomeLabels, Counter>,
    token_check_seconds: Histogram,
    token_cache: Family<OutcomeLabels, Counter>,
    fetches: Family<OutcomeLabels, Counter>,
    jobs: Family<JobLabels, Counter>,
    store_objects: Family<StoreLabels, Gauge>,
    store_bytes: Family<StoreLabels, Gauge>,
    cache_bytes: Gauge,
    cache_max_bytes: Gauge,
}

impl Operations {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let ops = Self {
            token_checks: register(
                registry,
                "homeserver_token_checks",
                "Access tokens checked with the homeserver (cache misses and background refreshes), by outcome",
                Family::default(),
            ),
            token_check_seconds: register(
                registry,
                "homeserver_token_check_duration_seconds",
                "Time the homeserver took to answer a token check",
                latency_histogram(),
            ),
            token_cache: register(
                registry,
                "homeserver_token_cache",
                "Requests whose token was found in the token cache (hit) or had to be checked (miss)",
                Family::default(),
            ),
            fetches: register(
                registry,
                "federation_fetches",
                "Fetches of other servers' media, by outcome",
                Family::default(),
            ),
            jobs: register(
                registry,
                "background_jobs",
                "Runs of the background jobs, by task and outcome (ok or failed)",
                Family::default(),
            ),
            store_objects: register(
                registry,
                "datastore_objects",
                "Objects recorded in each datastore (sampled by the background job)",
                Family::default(),
            ),
            store_bytes: register(
                registry,
                "datastore_bytes",
                "Bytes of the objects recorded in each datastore (sampled)",
                Family::default(),
            ),
            cache_bytes: register(
                registry,
                "cache_size_bytes",
                "Bytes the hot cache holds (read at scrape time)",
                Gauge::default(),
            ),
            cache_max_bytes: register(
                registry,
                "cache_max_size_bytes",
                "The hot cache's bound (cache.max_size)",
                Gauge::default(),
            ),
        };
        for outcome in TOKEN_OUTCOMES {
            let _ = ops.token_checks.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["hit", "miss"] {
            let _ = ops.token_cache.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in FETCH_OUTCOMES {
            let _ = ops.fetches.get_or_create(&OutcomeLabels { outcome });
        }
        for job in JOBS {
            for outcome in ["ok", "failed"] {
                let _ = ops.jobs.get_or_create(&JobLabels { task: job, outcome });
            }
        }
        ops
    }

    /// A token check with the homeserver that took `seconds`.
    pub fn token_checked(&self, outcome: &'static str, seconds: f64) {
        self.token_checks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.token_check_seconds.observe(seconds);
    }

    pub fn token_cache(&self, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.token_cache
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn fetched(&self, outcome: &'static str) {
        self.fetches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn job(&self, job: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.jobs
            .get_or_create(&JobLabels { task: job, outcome })
            .inc();
    }

    /// What one datastore holds, as last sampled.
    pub fn datastore_sample(&self, datastore: &str, objects: u64, bytes: u64) {
        let labels = StoreLabels {
            datastore: datastore.to_owned(),
        };
        self.store_objects
            .get_or_create(&labels)
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
        self.store_bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn cache_size(&self, bytes: u64, max_bytes: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.cache_max_bytes
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
    }
}
