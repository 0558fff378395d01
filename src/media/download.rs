//! Download orchestration: record lookup, the pending-media wait, the
//! quarantine and freeze checks, then a stream from the blob's datastore.

use std::{ops::Range, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _};
use tokio::time::Instant;

use super::{MediaError, MediaService};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    repo::{BlobRecord, MediaRecord, MediaState},
    storage::{ByteStream, Presigned, StorageError},
};

/// Re-check pending media at least this often, in case a commit happened in
/// another process sharing the metadata store.
const PENDING_POLL: Duration = Duration::from_millis(500);

/// Media ready to be served.
#[derive(Debug, Clone)]
pub struct Download {
    pub key: MediaKey,
    pub record: MediaRecord,
    pub blob: BlobRecord,
}

/// How the media was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The authenticated client endpoints.
    Authenticated,
    /// The deprecated unauthenticated `/_matrix/media/*/download` endpoints.
    Legacy,
}

enum Lookup {
    Ready(Box<Download>),
    Pending(UnixMillis),
}

impl MediaService {
    /// Finds `key` for serving, waiting up to `wait` (capped by config) for
    /// media whose async upload has not arrived yet.
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %key))]
    pub async fn open_download(
        &self,
        key: &MediaKey,
        access: Access,
        wait: Duration,
    ) -> Result<Download, MediaError> {
        let deadline = Instant::now() + wait.min(self.inner.config.max_download_wait);
        let mut waiting = None;
        loop {
            // Register for the wake-up before looking, so a commit between the
            // look and the wait is not missed.
            let committed = self.inner.committed.notified();
            tokio::pin!(committed);
            committed.as_mut().enable();

            match self.lookup(key, access).await? {
                Lookup::Ready(download) => return Ok(*download),
                Lookup::Pending(expires) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(MediaError::NotYetUploaded);
                    }
                    if waiting.is_none() {
                        waiting = Some(self.inner.metrics.download_waiting());
                    }
                    let expiry = now + UnixMillis::now().until(expires);
                    let next = deadline.min(now + PENDING_POLL).min(expiry);
                    tokio::select! {
                        () = &mut committed => {}
                        () = tokio::time::sleep_until(next) => {}
                    }
                }
            }
        }
    }

    async fn lookup(&self, key: &MediaKey, access: Access) -> Result<Lookup, MediaError> {
        let k = key.clone();
        let found = self
            .inner
            .repo
            .blocking(move |r| {
                Ok(match r.get(&k)? {
                    Some(MediaState::Complete(record)) => {
                        let blob = r.blob(&record.sha256)?;
                        Some(Ok((record, blob)))
                    }
                    Some(MediaState::Pending(p)) => Some(Err(p.expires)),
                    None => None,
                })
            })
            .await?;
        match found {
            None => Err(MediaError::NotFound),
            Some(Err(expires)) if expires <= UnixMillis::now() => Err(MediaError::NotFound),
            Some(Err(expires)) => Ok(Lookup::Pending(expires)),
            Some(Ok((record, blob))) => {
                // Quarantined media is served to nobody here; frozen media
                // only on the authenticated endpoints (spec: legacy MAY 404).
                if record.quarantined || (access == Access::Legacy && record.requires_auth) {
                    return Err(MediaError::NotFound);
                }
                let blob = blob.ok_or_else(|| {
                    tracing::error!(mxc = %key, "media record points at a missing blob record");
                    MediaError::Storage(StorageError::NotFound)
                })?;
                Ok(Lookup::Ready(Box::new(Download {
                    key: key.clone(),
                    record,
                    blob,
                })))
            }
        }
    }

    /// A presigned URL for `download` when its datastore redirects downloads;
    /// the URL's response carries `content_type` and `content_disposition`.
    pub async fn redirect(
        &self,
        download: &Download,
        content_type: &str,
        content_disposition: &str,
    ) -> Result<Option<Presigned>, MediaError> {
        let store = self.inner.stores.get(&download.blob.datastore)?;
        Ok(store
            .presign(&download.blob.key, content_type, content_disposition)
            .await
            .transpose()?)
    }

    /// Streams the bytes of `download`, or only `range` of them. Object-store
    /// blobs come from the hot cache when it has them; a full read that
    /// misses fills the cache on the way through.
    pub async fn read(
        &self,
        download: &Download,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, MediaError> {
        self.read_blob(&download.blob, &download.record.sha256, range)
            .await
    }

    /// Streams a blob (of media or of a thumbnail), or only `range` of it.
    pub async fn read_blob(
        &self,
        blob: &BlobRecord,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, MediaError> {
        let store = self.inner.stores.get(&blob.datastore)?;
        if let Some(cache) = self.cache_for(store) {
            if let Some(hit) = cache.open(digest, range.clone()).await {
                self.inner.metrics.cache_hit();
                let served = self.inner.metrics.cache_hit_bytes();
                return Ok(hit
                    .inspect_ok(move |chunk| {
                        served.inc_by(chunk.len() as u64);
                    })
                    .boxed());
            }
            self.inner.metrics.cache_miss();
            if range.is_none() && blob.size <= cache.max_file_size() {
                let stream = store.open(&blob.key, None).await?;
                return Ok(cache.tee_download(stream, *digest, blob.size));
            }
        }
        Ok(store.open(&blob.key, range).await?)
    }
}
