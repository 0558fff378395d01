//! The service layer: upload, async upload, download and sweeps over
//! `storage` and `repo`. No axum, no status codes; `MediaError` is the
//! domain vocabulary the HTTP edge classifies.

mod download;
mod gc;
mod name;
mod ownership;
mod thumbnail;
mod upload;

use std::{collections::HashSet, sync::Arc, time::Duration};

use ruma::OwnedServerName;
use tokio::sync::Notify;

pub use download::{Access, Download};
pub use gc::{OrphanScan, SweepReport};
pub use name::clean_filename;
pub use ownership::{Claim, OwnershipError};
pub use thumbnail::{Thumb, ThumbRequest};
pub use upload::{Pace, UploadMeta, UploadTarget};

use crate::{
    cache::HotCache,
    config::{MediaConfig, ThumbnailConfig},
    ids::{BlobKey, DatastoreId},
    repo::{Repo, RepoError},
    storage::{Backend, BlobStore, Datastores, StorageError},
    thumbnail::ThumbnailError,
};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media not found")]
    NotFound,
    #[error("media has not been uploaded yet")]
    NotYetUploaded,
    #[error("media already has content")]
    CannotOverwrite,
    #[error("upload exceeds the {limit} byte limit")]
    TooLarge { limit: u64 },
    #[error("too many pending uploads")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Forbidden(&'static str),
    /// The body came too slowly: stalled, under the minimum rate, or past
    /// the deadline.
    #[error("upload timed out: {0}")]
    UploadTimedOut(&'static str),
    #[error("reading the request body failed: {0}")]
    Body(#[source] std::io::Error),
    #[error(transparent)]
    Thumbnail(#[from] ThumbnailError),
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
    repo: Repo,
    stores: Datastores,
    config: MediaConfig,
    /// Hot copies of blobs from object-store datastores.
    cache: Option<HotCache>,
    metrics: crate::metrics::Metrics,
    thumbnailer: thumbnail::Thumbnailer,
    /// Woken on every commit, so downloads waiting on pending media retry.
    committed: Notify,
    /// Blobs being written right now; the orphan sweep must not touch them.
    in_flight: std::sync::Mutex<HashSet<(DatastoreId, BlobKey)>>,
    /// How this server's metadata database is named in ownership markers.
    database_label: std::sync::OnceLock<String>,
}

impl MediaService {
    pub fn new(
        server_name: OwnedServerName,
        repo: Repo,
        stores: Datastores,
        config: MediaConfig,
        cache: Option<HotCache>,
        thumbnails: ThumbnailConfig,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                server_name,
                repo,
                stores,
                config,
                cache,
                thumbnailer: thumbnail::Thumbnailer::new(thumbnails),
                metrics,
                committed: Notify::new(),
                in_flight: std::sync::Mutex::new(HashSet::new()),
                database_label: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.inner.server_name
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    pub fn repo(&self) -> &Repo {
        &self.inner.repo
    }
    pub fn stores(&self) -> &Datastores {
        &self.inner.stores
    }

    pub fn cache(&self) -> Option<&HotCache> {
        self.inner.cache.as_ref()
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
        self.inner
            .repo
            .blocking(crate::repo::MediaRepo::ping)
            .await?;
        for store in self.inner.stores.iter() {
            store.ping().await?;
        }
        Ok(())
    }

    /// Marks `key` in `store` as being written until the ticket is dropped,
    /// so sweeps leave it alone (for writers outside the upload path).
    pub fn writing(&self, store: &DatastoreId, key: &BlobKey) -> WriteTicket {
        let entry = (store.clone(), key.clone());
        self.in_flight().insert(entry.clone());
        WriteTicket {
            service: self.clone(),
            entry,
        }
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
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        self.service.in_flight().remove(&self.entry);
    }
}
