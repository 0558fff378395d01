//! The download use case: remote media fetched first, the pending-media
//! wait, the quarantine and freeze checks, the file name and disposition,
//! and only then the redirect decision or a reader of the blob.

use std::{ops::Range, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _};
use tokio::time::Instant;

use super::{
    Access, MediaError, MediaRequest, MediaService, MediaView, Opened, clean_filename,
    disposition::disposition,
    ports::{BlobRecord, Lookup, MediaRecord},
    rates::Family,
};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    storage::{ByteStream, Presigned, StorageError},
};

/// Re-check pending media at least this often, in case a commit happened in
/// another process sharing the metadata store.
const PENDING_POLL: Duration = Duration::from_millis(500);
/// The same while commits of every instance wake the waiters: a safety net.
const PENDING_POLL_RELAYED: Duration = Duration::from_secs(30);

/// Which checks an open applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    pub access: Access,
    /// An admin's explicit request to see quarantined media.
    pub bypass_quarantine: bool,
}

impl Rules {
    /// A client on the authenticated routes, quarantine enforced.
    pub(super) fn client() -> Self {
        Self {
            access: Access::Authenticated,
            bypass_quarantine: false,
        }
    }
}

/// Complete media with its blob, past every check.
#[derive(Debug, Clone)]
pub(super) struct Download {
    pub key: MediaKey,
    pub record: MediaRecord,
    pub blob: BlobRecord,
}

enum Found {
    Ready(Box<Download>),
    Pending(UnixMillis),
}

impl MediaService {
    /// Opens media for a client or another server. `file_name`, when not
    /// empty, replaces the upload name (spec: the path's `{fileName}`).
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %request.key))]
    pub async fn download(
        &self,
        request: &MediaRequest<'_>,
        file_name: Option<&str>,
    ) -> Result<Opened, MediaError> {
        self.rate_check(Family::Downloads, request.user, request.client)
            .await?;
        let download = self.checked(request).await?;
        let record = &download.record;
        self.note_media_access(&request.key, record.last_access, record.created);
        let name = match file_name {
            Some(name) if !name.is_empty() => clean_filename(name),
            _ => record.upload_name.clone(),
        };
        let view = MediaView {
            disposition: disposition(&record.content_type, name.as_deref()),
            content_type: record.content_type.clone(),
            size: record.size,
            sha256: record.sha256,
        };
        Opened::new(self, request, view, download.blob).await
    }

    /// `request`'s media past every check a download of it passes: fetched
    /// first when it is another server's, then the wait, quarantine and
    /// freeze (authentication is the edge's).
    pub(super) async fn checked(&self, request: &MediaRequest<'_>) -> Result<Download, MediaError> {
        self.fetch_if_remote(request).await?;
        let rules = Rules {
            access: request.access,
            bypass_quarantine: request.bypass_quarantine,
        };
        self.open_download(&request.key, rules, request.wait).await
    }

    /// Fetches another server's media into our store first, when the request
    /// names some and allows it (our own media, and media already cached,
    /// pass straight on). Unauthenticated requests never start a fetch
    /// while the freeze is on: what they would fetch is new media, which the
    /// freeze never lets them see, so a fetch would only spend our bandwidth
    /// and disk for an anonymous caller. Other servers never make us fetch.
    async fn fetch_if_remote(&self, request: &MediaRequest<'_>) -> Result<(), MediaError> {
        let frozen = request.access == Access::Legacy && self.inner.config.freeze_unauthenticated;
        if request.key.server == self.inner.server_name
            || !request.allow_remote
            || frozen
            || request.access == Access::Federation
        {
            return Ok(());
        }
        self.ensure_remote(&request.key, request.user, request.client)
            .await
    }

    /// Finds `key` for serving, waiting up to `wait` (capped by config) for
    /// media whose async upload has not arrived yet.
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %key))]
    pub(super) async fn open_download(
        &self,
        key: &MediaKey,
        rules: Rules,
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

            match self.lookup(key, rules).await? {
                Found::Ready(download) => return Ok(*download),
                Found::Pending(expires) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(MediaError::NotYetUploaded);
                    }
                    if waiting.is_none() {
                        waiting = Some(self.inner.metrics.download_waiting());
                    }
                    let expiry = now + UnixMillis::now().until(expires);
                    let relayed = self
                        .inner
                        .relayed
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let poll = if relayed {
                        PENDING_POLL_RELAYED
                    } else {
                        PENDING_POLL
                    };
                    let next = deadline.min(now + poll).min(expiry);
                    tokio::select! {
                        () = &mut committed => {}
                        () = tokio::time::sleep_until(next) => {}
                    }
                }
            }
        }
    }

    async fn lookup(&self, key: &MediaKey, rules: Rules) -> Result<Found, MediaError> {
        match self.inner.meta.records.lookup(key).await? {
            Lookup::Missing => Err(MediaError::NotFound),
            Lookup::Pending(p) if p.expires <= UnixMillis::now() => Err(MediaError::NotFound),
            Lookup::Pending(p) => Ok(Found::Pending(p.expires)),
            Lookup::Complete { record, blob } => {
                // Quarantined media is served to nobody here; frozen media
                // only on the authenticated endpoints (spec: legacy MAY 404).
                // The one quarantine decision every route passes through.
                if (record.quarantined && !rules.bypass_quarantine)
                    || (rules.access == Access::Legacy && record.requires_auth)
                {
                    return Err(MediaError::NotFound);
                }
                let blob = blob.ok_or_else(|| {
                    tracing::error!(mxc = %key, "media record points at a missing blob record");
                    MediaError::Storage(StorageError::NotFound)
                })?;
                Ok(Found::Ready(Box::new(Download {
                    key: key.clone(),
                    record,
                    blob,
                })))
            }
        }
    }

    /// A presigned URL for `blob` when its datastore redirects downloads;
    /// the URL's response carries `content_type` and `content_disposition`.
    pub(super) async fn presign(
        &self,
        blob: &BlobRecord,
        content_type: &str,
        content_disposition: &str,
    ) -> Result<Option<Presigned>, MediaError> {
        let store = self.inner.stores.get(&blob.datastore)?;
        Ok(store
            .presign(&blob.key, content_type, content_disposition)
            .await
            .transpose()?)
    }

    /// Streams the bytes of `download`, or only `range` of them. Object-store
    /// blobs come from the hot cache when it has them; a full read that
    /// misses fills the cache on the way through.
    pub(super) async fn read(
        &self,
        download: &Download,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, MediaError> {
        self.read_blob(&download.blob, &download.record.sha256, range)
            .await
    }

    /// Streams a blob (of media or of a thumbnail), or only `range` of it.
    pub(super) async fn read_blob(
        &self,
        blob: &BlobRecord,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, MediaError> {
        if let Some(memory) = &self.inner.memory
            && memory.takes(blob.size)
        {
            return self.read_small(memory, blob, digest, range).await;
        }
        self.read_stored(blob, digest, range).await
    }

    /// A blob small enough for the memory tier: from memory, or read whole
    /// (in one piece where the store allows) and offered to it.
    async fn read_small(
        &self,
        memory: &crate::cache::MemoryTier,
        blob: &BlobRecord,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, MediaError> {
        let bytes = if let Some(part) = memory.get(digest, range.clone()) {
            self.inner.metrics.memory_hit();
            part
        } else {
            let store = self.inner.stores.get(&blob.datastore)?;
            let bytes = if let Some(bytes) = store.read_small(&blob.key, blob.size).await? {
                bytes
            } else {
                collect(self.read_stored(blob, digest, None).await?, blob.size).await?
            };
            if bytes.len() as u64 != blob.size {
                return Err(StorageError::Read(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob and record differ in length",
                ))
                .into());
            }
            memory.offer(*digest, bytes.clone());
            crate::cache::slice(bytes, range)
        };
        Ok(futures::stream::once(std::future::ready(Ok(bytes))).boxed())
    }

    /// A blob through the disk cache (object stores) or from its datastore.
    async fn read_stored(
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

/// A small stream's bytes in one piece (at most `size` of them).
async fn collect(mut stream: ByteStream, size: u64) -> Result<bytes::Bytes, MediaError> {
    let mut out = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.try_next().await.map_err(StorageError::Read)? {
        if (out.len() + chunk.len()) as u64 > size {
            return Err(StorageError::Read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "blob is longer than its record",
            ))
            .into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
