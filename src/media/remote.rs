//! Other servers' media for our clients: fetched once per mxc however many
//! ask at once, within a global number of concurrent fetches and a per-user
//! byte budget, failures remembered, failing servers backed off, the whole
//! transfer size- and time-capped, and the result stored as remote media
//! under its own key. How the bytes are reached is the [`RemoteSource`]'s
//! business (the federation API); nothing of the answer passes through but
//! the media's type, name and bytes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, OwnedUserId, UserId};

use super::{
    MediaError, MediaService, Pace, UploadMeta,
    ports::{RemoteError, RemoteSource},
    rates::Family,
};
use crate::{config::FederationConfig, ids::MediaKey};

/// Longest a host is backed off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a finished fetch is shared with requests that arrive late.
const FLIGHT_TTL: Duration = Duration::from_secs(1);

/// Why another server's media could not be made available here.
#[derive(Debug, thiserror::Error, Clone)]
pub enum FetchError {
    #[error("the remote server does not have this media")]
    NotFound,
    #[error("media from this server is blocked here")]
    Blocked,
    #[error("the remote file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("fetching remote media is not configured here")]
    NotConfigured,
    #[error("the remote server failed: {0}")]
    Unavailable(String),
    #[error("the remote server failed recently; not retried yet")]
    BackingOff,
    /// Every remote-fetch slot stayed taken while this request waited.
    #[error("too many remote fetches at once; try again shortly")]
    Busy { retry_after: Duration },
    /// The user's remote-fetch byte budget for the current window is spent.
    #[error("you have fetched too much remote media; try again later")]
    OverBudget { retry_after: Duration },
}

impl FetchError {
    /// Whether the failure says something about the media or its server
    /// (worth remembering), rather than about our own load or the caller.
    fn is_remote_failure(&self) -> bool {
        !matches!(self, Self::Busy { .. } | Self::OverBudget { .. })
    }
}

impl From<RemoteError> for FetchError {
    fn from(error: RemoteError) -> Self {
        match error {
            RemoteError::NotFound => Self::NotFound,
            RemoteError::NotConfigured => Self::NotConfigured,
            RemoteError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// Bytes of remote media one user has made us fetch in the current window.
#[derive(Debug, Clone, Copy)]
struct Spent {
    since: Instant,
    bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// The remote-media machinery shared by every request.
pub(super) struct Remote {
    source: Arc<dyn RemoteSource>,
    config: FederationConfig,
    /// Largest remote file we store.
    limit: u64,
    flights: moka::future::Cache<MediaKey, ()>,
    failures: moka::future::Cache<MediaKey, FetchError>,
    backoff: moka::sync::Cache<OwnedServerName, Backoff>,
    /// Fetches running at once, across all remote servers.
    slots: tokio::sync::Semaphore,
    /// Bytes fetched per user in the current budget window.
    spent: moka::sync::Cache<OwnedUserId, Spent>,
}

impl Remote {
    pub(super) fn new(
        source: Arc<dyn RemoteSource>,
        config: &FederationConfig,
        upload_limit: u64,
    ) -> Self {
        Self {
            source,
            limit: config
                .max_remote_size
                .map_or(upload_limit, |size| size.as_u64()),
            flights: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FLIGHT_TTL)
                .build(),
            failures: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.failure_cache_ttl)
                .build(),
            backoff: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(MAX_BACKOFF)
                .build(),
            slots: tokio::sync::Semaphore::new(config.max_concurrent_fetches),
            spent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.user_budget_window)
                .build(),
            config: config.clone(),
        }
    }

    /// Refuses a user who has used up their budget in this window.
    fn check_budget(&self, user: &UserId) -> Result<(), FetchError> {
        let Some(spent) = self.spent.get(user) else {
            return Ok(());
        };
        let window_end = spent.since + self.config.user_budget_window;
        if spent.bytes >= self.config.user_budget.as_u64() && window_end > Instant::now() {
            return Err(FetchError::OverBudget {
                retry_after: window_end.saturating_duration_since(Instant::now()),
            });
        }
        Ok(())
    }

    fn charge(&self, user: OwnedUserId, bytes: u64) {
        let window = self.config.user_budget_window;
        let now = Instant::now();
        self.spent.entry(user).and_upsert_with(|current| {
            match current.map(moka::Entry::into_value) {
                Some(spent) if spent.since + window > now => Spent {
                    since: spent.since,
                    bytes: spent.bytes.saturating_add(bytes),
                },
                _ => Spent { since: now, bytes },
            }
        });
    }

    /// Remembers a failure of `server`, backing it off exponentially.
    fn back_off(&self, server: &OwnedServerName) {
        let failures = self.backoff.get(server).map_or(0, |b| b.failures) + 1;
        let delay = Duration::from_secs(1 << failures.min(10)).min(MAX_BACKOFF);
        self.backoff.insert(
            server.clone(),
            Backoff {
                failures,
                until: Instant::now() + delay,
            },
        );
    }
}

impl MediaService {
    /// Makes sure `key`, another server's media, is in our store: a no-op
    /// for our own media and for media already cached. A fetch started for
    /// `user` counts against their byte budget.
    /// Forgets a finished fetch of `key`, so a request after its cached copy
    /// was purged fetches it again instead of joining the old flight.
    pub(super) async fn forget_fetch(&self, key: &MediaKey) {
        self.inner.remote.flights.invalidate(key).await;
    }

    pub(super) async fn ensure_remote(
        &self,
        key: &MediaKey,
        user: Option<&UserId>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), MediaError> {
        let remote = &self.inner.remote;
        if key.server == self.inner.server_name {
            return Ok(());
        }
        if remote.source.is_blocked(&key.server) {
            self.inner.metrics.ops().fetched("blocked");
            return Err(FetchError::Blocked.into());
        }
        if self.is_stored(key).await? {
            return Ok(());
        }
        if let Some(failure) = remote.failures.get(key).await {
            return Err(failure.into());
        }
        self.rate_check(Family::RemoteFetches, user, client).await?;
        if let Some(user) = user {
            remote.check_budget(user)?;
        }
        let this = self.clone();
        let k = key.clone();
        let payer = user.map(ToOwned::to_owned);
        let result = remote
            .flights
            .try_get_with(key.clone(), async move {
                let size = this.fetch_remote(&k).await?;
                if let Some(user) = payer {
                    this.inner.remote.charge(user, size);
                }
                Ok(())
            })
            .await
            .map_err(|e: Arc<FetchError>| (*e).clone());
        if let Err(error) = &result
            && error.is_remote_failure()
        {
            remote.failures.insert(key.clone(), error.clone()).await;
        }
        Ok(result?)
    }

    /// Fetches and stores `key` within a slot and the total deadline; its
    /// size on success.
    async fn fetch_remote(&self, key: &MediaKey) -> Result<u64, FetchError> {
        let result = self.try_fetch_remote(key).await;
        self.inner.metrics.ops().fetched(match &result {
            Ok(_) => "fetched",
            Err(FetchError::NotFound) => "not_found",
            Err(FetchError::TooLarge { .. }) => "too_large",
            Err(FetchError::BackingOff) => "backing_off",
            Err(FetchError::Busy { .. } | FetchError::OverBudget { .. }) => "busy",
            Err(FetchError::Blocked) => "blocked",
            Err(FetchError::NotConfigured) => "not_configured",
            Err(FetchError::Unavailable(_)) => "failed",
        });
        result
    }

    async fn try_fetch_remote(&self, key: &MediaKey) -> Result<u64, FetchError> {
        let remote = &self.inner.remote;
        if let Some(backoff) = remote.backoff.get(&key.server)
            && backoff.until > Instant::now()
        {
            return Err(FetchError::BackingOff);
        }
        let config = &remote.config;
        let Ok(Ok(_slot)) =
            tokio::time::timeout(config.fetch_queue_timeout, remote.slots.acquire()).await
        else {
            return Err(FetchError::Busy {
                retry_after: Duration::from_secs(5),
            });
        };
        let total = config.total_timeout;
        let deadline = tokio::time::Instant::now() + total;
        let alone = async {
            // One instance fetches; the others wait, then find it stored.
            let _flight = self
                .inner
                .meta
                .housekeeping
                .exclusive(&format!("fetch {key}"))
                .await
                .map_err(|e| FetchError::Unavailable(e.to_string()))?;
            if self.is_stored(key).await.unwrap_or(false) {
                return Ok(0);
            }
            self.fetch_and_store(key, deadline).await
        };
        let result = match tokio::time::timeout_at(deadline, alone).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unavailable(format!(
                "no complete answer within {total:?}"
            ))),
        };
        match &result {
            Err(FetchError::Unavailable(_)) => remote.back_off(&key.server),
            _ => remote.backoff.invalidate(&key.server),
        }
        if let Err(error) = &result {
            tracing::info!(mxc = %key, %error, "remote media not fetched");
        }
        result
    }

    async fn fetch_and_store(
        &self,
        key: &MediaKey,
        deadline: tokio::time::Instant,
    ) -> Result<u64, FetchError> {
        let remote = &self.inner.remote;
        let answer = remote.source.fetch(key).await?;
        let meta = UploadMeta::new(
            answer.content_type.as_deref(),
            answer.file_name.as_deref(),
            None,
        );
        // The body's own deadline and cap stop the transfer itself: the
        // write runs detached, and would otherwise go on reading after this
        // future is dropped at the deadline.
        let pace = Pace {
            limit: remote.limit,
            idle: remote.config.idle_timeout,
            min_rate: 0,
            deadline: deadline.saturating_duration_since(tokio::time::Instant::now()),
        };
        self.store_remote(key.clone(), meta, answer.body, pace)
            .await
            .map_err(|e| match e {
                MediaError::TooLarge { limit } => FetchError::TooLarge { limit },
                other => FetchError::Unavailable(other.to_string()),
            })
    }
}
