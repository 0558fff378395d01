//! The application core. Every use case is one `MediaService` method that
//! the HTTP routes, the CLI, the control socket and background jobs call
//! once per request: upload, async upload, download (remote fetch, wait,
//! quarantine, freeze, redirect decision), thumbnail, quarantine, storage
//! sync, fsck, sweeps. Methods answer with views (`Opened`, reports), never
//! metadata records. The core reaches metadata and other servers only
//! through the ports in [`ports`]; it knows no HTTP framework and no status
//! code (`MediaError` is the vocabulary the edge classifies).

mod access;
mod admin;
pub mod catalog;
mod copy;
mod direct;
mod disposition;
mod download;
mod export;
mod fsck;
mod gc;
mod import;
mod meter;
mod moderation;
mod name;
mod ownership;
pub mod ports;
mod preview;
mod quota;
mod rates;
pub mod records;
mod remote;
mod retention;
mod stats;
mod sync;
mod thumbnail;
mod upload;
mod views;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_import;

use std::{collections::HashSet, sync::Arc, time::Duration};

use ruma::OwnedServerName;
use tokio::sync::Notify;

pub use admin::{LocalPurge, MediaInfo, PurgeReport};
pub use copy::{CopyReport, copy_metadata};
pub use direct::Reservation;
pub use disposition::{disposition, is_inline};
pub use export::Verified;
pub use fsck::{FsckProgress, FsckReport, FsckRequest};
pub use gc::SweepReport;
pub use import::{ImportItem, Imported};
pub use meter::Pace;
pub use moderation::{UsageQuery, UsageReport, UserUsage};
pub use name::{MAX_NAME_BYTES, clean_filename};
pub use ownership::{Claim, OwnershipError};
pub use preview::PreviewRequest;
pub use quota::{UsageView, UserClass};
pub use remote::FetchError;
pub use retention::{Freed, RetentionReport};
pub use stats::{CacheView, Stats, Tally};
pub use sync::{SyncProgress, SyncRequest};
pub use thumbnail::ThumbRequest;
pub use upload::{UploadMeta, UploadTarget};
pub use views::{Access, Body, MediaRequest, MediaView, Opened, Reader};

use self::ports::{Counts, Homeserver, HomeserverError, Metadata, RemoteSource, RepoError};
use crate::{
    cache::HotCache,
    config::{
        FederationConfig, MediaConfig, QuotaConfig, RateLimitConfig, RetentionConfig,
        ThumbnailConfig,
    },
    ids::{BlobKey, DatastoreId, MediaKey},
    storage::{Backend, BlobStore, Datastores, SelfcheckError, SelfcheckReport, StorageError},
    thumbnail::ThumbnailError,
};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media not found")]
    NotFound,
    #[error("media has not been uploaded yet")]
    NotYetUploaded,
    /// A direct upload completed with nothing at its upload URL.
    #[error("nothing was uploaded to this media id's upload URL")]
    DirectUploadMissing,
    #[error("media already has content")]
    CannotOverwrite,
    #[error("upload exceeds the {limit} byte limit")]
    TooLarge { limit: u64 },
    /// The uploader's quota has no room for this upload.
    #[error("Media upload limit exceeded")]
    QuotaExceeded,
    #[error("too many pending uploads")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Forbidden(&'static str),
    /// The operation applies to this server's own media only.
    #[error("can only delete local media")]
    NotLocal,
    /// An operator's request that cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// The body came too slowly: stalled, under the minimum rate, or past
    /// the deadline.
    #[error("upload timed out: {0}")]
    UploadTimedOut(&'static str),
    #[error("reading the request body failed: {0}")]
    Body(#[source] std::io::Error),
    #[error(transparent)]
    Thumbnail(#[from] ThumbnailError),
    /// Another server's media could not be made available.
    #[error(transparent)]
    Remote(#[from] FetchError),
    /// The failure of a generation several requests waited for.
    #[error(transparent)]
    Shared(Arc<MediaError>),
    /// Something that cannot happen unless the metadata store misbehaves.
    #[error("internal: {0}")]
    Internal(&'static str),
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata failure: {0}")]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Ownership(Box<OwnershipError>),
    /// The homeserver could not answer what only it knows.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    /// A URL could not be previewed.
    #[error(transparent)]
    Preview(#[from] ports::PreviewError),
}

impl From<OwnershipError> for MediaError {
    fn from(error: OwnershipError) -> Self {
        Self::Ownership(Box::new(error))
    }
}

/// Cheap to clone; shared by every request.
#[derive(Clone)]
pub struct MediaService {
    inner: Arc<Inner>,
}

struct Inner {
    server_name: OwnedServerName,
    meta: Metadata,
    stores: Datastores,
    config: MediaConfig,
    /// Hot copies of blobs from object-store datastores.
    cache: Option<HotCache>,
    /// The hottest small blobs of every datastore, in memory.
    memory: Option<crate::cache::MemoryTier>,
    metrics: crate::metrics::Metrics,
    thumbnailer: thumbnail::Thumbnailer,
    remote: remote::Remote,
    homeserver: Arc<dyn Homeserver>,
    policies: Policies,
    quotas: quota::QuotaPolicy,
    rates: rates::RateLimiter,
    accesses: access::AccessLog,
    previews: Option<preview::Previews>,
    /// Woken on every commit, so downloads waiting on pending media retry.
    committed: Notify,
    /// Whether commits of other instances wake `committed` too (then the
    /// waiting downloads need no quick polling).
    relayed: std::sync::atomic::AtomicBool,
    /// Blobs being written right now; the orphan sweep must not touch them.
    in_flight: std::sync::Mutex<HashSet<(DatastoreId, BlobKey)>>,
    /// How this server's metadata database is named in ownership markers.
    database_label: std::sync::OnceLock<String>,
}

/// What admins bound, and the token mxmedia asks the homeserver with on
/// its own (for retention's avatars).
#[derive(Clone, Default)]
pub struct Policies {
    pub retention: RetentionConfig,
    pub quotas: QuotaConfig,
    pub rate_limits: RateLimitConfig,
    pub homeserver_token: Option<crate::auth::Credentials>,
}

/// The URL previewer and its budgets.
pub type PreviewWiring = (Arc<dyn ports::Previewer>, crate::config::UrlPreviewConfig);

/// The adapters and shared parts the core is built from (see `app.rs`).
pub struct Wiring {
    pub server_name: OwnedServerName,
    pub metadata: Metadata,
    pub stores: Datastores,
    /// Hot copies of blobs from object-store datastores.
    pub cache: Option<HotCache>,
    /// The hottest small blobs of every datastore, in memory.
    pub memory: Option<crate::cache::MemoryTier>,
    /// Where other servers' media comes from.
    pub remote: Arc<dyn RemoteSource>,
    /// What only the homeserver knows (room media, avatars, names).
    pub homeserver: Arc<dyn Homeserver>,
    /// Fetches for URL previews, when they are on.
    pub previewer: Option<PreviewWiring>,
    pub metrics: crate::metrics::Metrics,
}

impl MediaService {
    pub fn new(
        wiring: Wiring,
        config: MediaConfig,
        thumbnails: ThumbnailConfig,
        federation: &FederationConfig,
        policies: Policies,
    ) -> Self {
        let remote =
            remote::Remote::new(wiring.remote, federation, config.max_upload_size.as_u64());
        let quotas = quota::QuotaPolicy::new(&policies.quotas, config.max_upload_size.as_u64());
        Self {
            inner: Arc::new(Inner {
                server_name: wiring.server_name,
                meta: wiring.metadata,
                stores: wiring.stores,
                config,
                cache: wiring.cache,
                memory: wiring.memory,
                thumbnailer: thumbnail::Thumbnailer::new(thumbnails),
                remote,
                homeserver: wiring.homeserver,
                accesses: access::AccessLog::new(policies.retention.access_granularity),
                quotas,
                rates: rates::RateLimiter::new(&policies.rate_limits),
                previews: wiring
                    .previewer
                    .map(|(previewer, config)| preview::Previews::new(previewer, &config)),
                policies,
                metrics: wiring.metrics,
                committed: Notify::new(),
                relayed: std::sync::atomic::AtomicBool::new(false),
                in_flight: std::sync::Mutex::new(HashSet::new()),
                database_label: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Wakes this instance's waiting downloads on every commit any instance
    /// sharing the metadata store makes; returns when the store's feed ends
    /// (or at once for a store no other instance shares).
    pub async fn relay_commits(&self) -> Result<(), MediaError> {
        use futures::StreamExt;
        let Some(mut commits) = self.inner.meta.housekeeping.commits().await? else {
            return Ok(());
        };
        self.inner
            .relayed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        while commits.next().await.is_some() {
            self.inner.committed.notify_waiters();
        }
        self.inner
            .relayed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether commits of other instances wake this one's waiting downloads.
    pub fn relays_commits(&self) -> bool {
        self.inner
            .relayed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.inner.server_name
    }

    pub(crate) fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// The hot cache's counters, when there is a cache.
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.inner.cache.as_ref().map(HotCache::stats)
    }

    /// The cache, when `store` is one it fronts.
    fn cache_for(&self, store: &BlobStore) -> Option<&HotCache> {
        self.inner
            .cache
            .as_ref()
            .filter(|_| store.backend() != Backend::Local)
    }

    /// Readiness: the metadata store answers and every datastore is reachable.
    pub async fn ping(&self) -> Result<(), MediaError> {
        self.inner.meta.housekeeping.ping().await?;
        for store in self.inner.stores.iter() {
            store.ping().await?;
        }
        Ok(())
    }

    /// Whether `key` has content here (a remote fetch, or an import of it,
    /// is then not needed).
    pub async fn is_stored(&self, key: &MediaKey) -> Result<bool, MediaError> {
        let found = self.inner.meta.records.lookup(key).await?;
        Ok(matches!(found, ports::Lookup::Complete { .. }))
    }

    /// Record counts (walks the metadata: tests and operator tools).
    pub async fn counts(&self) -> Result<Counts, MediaError> {
        Ok(self.inner.meta.housekeeping.counts().await?)
    }

    /// Reserved ids still waiting for their bytes (for metrics).
    pub async fn pending_count(&self) -> Result<u64, MediaError> {
        Ok(self.inner.meta.housekeeping.pending_count().await?)
    }

    /// Makes all metadata durable, noted access times included; the last
    /// call before the process stops.
    pub async fn close(&self) -> Result<(), MediaError> {
        if let Err(error) = self.flush_accesses().await {
            tracing::warn!(%error, "access times not recorded at shutdown");
        }
        Ok(self.inner.meta.housekeeping.close().await?)
    }

    /// Runs every datastore's self-test (write, read, list, delete); the
    /// first failure is the error.
    pub async fn selfcheck(&self) -> Result<Vec<SelfcheckReport>, SelfcheckError> {
        let mut reports = Vec::new();
        for store in self.inner.stores.iter() {
            reports.push(store.selfcheck().await?);
        }
        Ok(reports)
    }

    /// Marks `key` in `store` as being written until the ticket is dropped,
    /// here and for every instance sharing the metadata store, so no sweep
    /// removes it (for writers outside the upload path).
    pub(super) async fn writing(
        &self,
        store: &DatastoreId,
        key: &BlobKey,
    ) -> Result<WriteTicket, RepoError> {
        let announced = self.inner.meta.housekeeping.writing(store, key).await?;
        let entry = (store.clone(), key.clone());
        self.in_flight().insert(entry.clone());
        Ok(WriteTicket {
            service: self.clone(),
            entry,
            _announced: announced,
        })
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<(DatastoreId, BlobKey)>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// See [`MediaService::writing`].
pub struct WriteTicket {
    service: MediaService,
    entry: (DatastoreId, BlobKey),
    _announced: ports::Lease,
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        self.service.in_flight().remove(&self.entry);
    }
}
