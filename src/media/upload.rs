//! Upload orchestration: stream to a fresh blob while metering size and
//! SHA-256, then commit metadata in one transaction. Metadata never points at
//! a missing blob, and a failed or abandoned upload leaves no blob behind.

use std::time::Duration;

use ruma::UserId;

use super::{
    MediaError, MediaService, Reservation, WriteTicket, clean_filename,
    meter::{Meter, Pace},
    rates::Family,
};
use crate::{
    cache::HotCache,
    config::DatastoreKind,
    ids::{BlobKey, DatastoreId, MediaId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        Commit, CommitMode, Lookup, MediaRecord, NewBlob, Origin, PendingRecord, Quota, RepoError,
        Reserve,
    },
    storage::{BlobStore, ByteStream, StorageError},
};

/// What the sender told us about the bytes, as we keep it.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    /// A syntactically valid media type; `application/octet-stream` if none
    /// (or none valid) was given.
    pub content_type: String,
    /// Passed through [`clean_filename`].
    pub upload_name: Option<String>,
    /// The length the sender declared, if any: over the limit is refused
    /// before a byte is read.
    pub declared_length: Option<u64>,
    /// The sender's address, for rate limits.
    pub client: Option<std::net::IpAddr>,
}

impl UploadMeta {
    /// Cleans what a client (or another server) sent: only a valid media
    /// type and a cleaned file name are kept.
    pub fn new(
        content_type: Option<&str>,
        file_name: Option<&str>,
        declared_length: Option<u64>,
    ) -> Self {
        Self {
            content_type: content_type
                .map(str::trim)
                .filter(|v| v.parse::<mime::Mime>().is_ok())
                .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned),
            upload_name: file_name.and_then(clean_filename),
            declared_length,
            client: None,
        }
    }

    /// The same, sent from `client`.
    #[must_use]
    pub fn from_client(mut self, client: Option<std::net::IpAddr>) -> Self {
        self.client = client;
        self
    }
}

/// `POST /upload` makes a new id; `PUT /upload/{s}/{id}` fills a reserved one.
#[derive(Debug, Clone)]
pub enum UploadTarget {
    New,
    Reserved(MediaKey),
    /// Another server's media, fetched over federation and cached under
    /// its own key; `pace` replaces the upload limits.
    Remote {
        key: MediaKey,
        pace: Pace,
    },
    /// Local media this server fetched from the web itself (a URL
    /// preview's image), with no uploader; `pace` replaces the limits.
    Fetched {
        pace: Pace,
    },
}

/// Deletes the blob when dropped unless `disarm`ed. Covers `?` returns,
/// panics, and client disconnects (the server drops the handler future).
/// While it lives, the blob is marked as being written (no sweep of any
/// instance removes it).
pub(super) struct BlobGuard {
    store: BlobStore,
    pub(super) key: BlobKey,
    /// `None` once disarmed.
    ticket: Option<WriteTicket>,
}

impl BlobGuard {
    /// A fresh key in `store`, marked as being written.
    pub(super) async fn new(service: &MediaService, store: &BlobStore) -> Result<Self, RepoError> {
        Self::adopt(service, store, BlobKey::random()).await
    }

    /// Takes charge of `key` in `store` (an object someone else wrote),
    /// marked as being written: deleted when dropped unless disarmed.
    pub(super) async fn adopt(
        service: &MediaService,
        store: &BlobStore,
        key: BlobKey,
    ) -> Result<Self, RepoError> {
        let ticket = service.writing(store.id(), &key).await?;
        Ok(Self {
            store: store.clone(),
            key,
            ticket: Some(ticket),
        })
    }

    /// Keeps the blob; the write mark goes now.
    pub(super) fn disarm(mut self) {
        drop(self.ticket.take());
    }
}

impl Drop for BlobGuard {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        let cleanup = async move {
            if let Err(error) = store.delete(&key).await {
                // The orphan sweep removes it later; losing this race is harmless.
                tracing::warn!(key = key.as_str(), %error, "could not remove unused blob");
            }
            // Marked as being written until it is gone.
            drop(ticket);
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(cleanup));
        } else {
            // The orphan sweep of the next start removes it.
            tracing::warn!(key = self.key.as_str(), "no runtime to remove unused blob");
        }
    }
}

impl MediaService {
    /// Reserves a new id for an async upload by `owner`.
    #[tracing::instrument(level = "debug", skip_all, fields(owner = %owner))]
    pub async fn reserve(&self, owner: &UserId) -> Result<Reservation, MediaError> {
        let now = UnixMillis::now();
        let pending = PendingRecord {
            owner: owner.to_string(),
            created: now,
            expires: now.saturating_add(self.inner.config.pending_expiry),
        };
        let max = self.inner.config.max_pending_per_user;
        let quota = self.quota_for(owner);
        for _ in 0..4 {
            let key = MediaKey::new(self.inner.server_name.clone(), MediaId::generate());
            let records = &self.inner.meta.records;
            match records.reserve(&key, &pending, max, quota.as_ref()).await? {
                Reserve::OverQuota => return Err(self.over_quota(owner.as_str())),
                Reserve::Done => {
                    let upload_url = self.upload_url(&key, pending.expires).await?;
                    return Ok(Reservation {
                        key,
                        expires: pending.expires,
                        upload_url,
                    });
                }
                Reserve::Taken => {}
                Reserve::TooManyPending { next_expiry } => {
                    return Err(MediaError::RateLimited {
                        retry_after: now.until(next_expiry).max(Duration::from_secs(1)),
                    });
                }
            }
        }
        Err(MediaError::Internal(
            "four random media ids in a row were taken",
        ))
    }

    /// Stores `body` and returns the media key it is reachable under. The
    /// answer comes only once bytes are durable and metadata is committed.
    #[tracing::instrument(level = "debug", skip_all, fields(uploader = %uploader))]
    pub async fn upload(
        &self,
        uploader: &UserId,
        meta: UploadMeta,
        body: ByteStream,
        target: UploadTarget,
    ) -> Result<MediaKey, MediaError> {
        Ok(self.store(Some(uploader), meta, body, target).await?.0)
    }

    /// Caches another server's media under its own key, as new media (the
    /// freeze counts from now). A copy stored meanwhile by a concurrent
    /// fetch wins; this one is dropped. Returns the bytes fetched.
    pub(super) async fn store_remote(
        &self,
        key: MediaKey,
        meta: UploadMeta,
        body: ByteStream,
        pace: Pace,
    ) -> Result<u64, MediaError> {
        Ok(self
            .store(None, meta, body, UploadTarget::Remote { key, pace })
            .await?
            .1)
    }

    pub(super) async fn store(
        &self,
        uploader: Option<&UserId>,
        meta: UploadMeta,
        body: ByteStream,
        target: UploadTarget,
    ) -> Result<(MediaKey, u64), MediaError> {
        if matches!(target, UploadTarget::New | UploadTarget::Reserved(_)) {
            self.rate_check(Family::Uploads, uploader, meta.client)
                .await?;
        }
        let (mut pace, kind) = self.pace_and_kind(&target, uploader);
        // A declared length over the limit is refused before a byte is read.
        if meta.declared_length.is_some_and(|len| len > pace.limit) {
            return Err(MediaError::TooLarge { limit: pace.limit });
        }
        let (quota, room) = self
            .quota_cap(&target, uploader, meta.declared_length, &mut pace)
            .await?;
        let mode = match &target {
            UploadTarget::New | UploadTarget::Remote { .. } | UploadTarget::Fetched { .. } => {
                CommitMode::Fresh
            }
            UploadTarget::Reserved(key) => {
                let Some(uploader) = uploader else {
                    return Err(MediaError::Forbidden(NOT_OWNER));
                };
                // Fail before reading a byte when the answer is already known.
                self.check_reserved(key, uploader).await?;
                CommitMode::Reserved {
                    owner: uploader.to_string(),
                    now: UnixMillis::now(),
                }
            }
        };

        let store = self.inner.stores.writer_for(kind)?;
        let guard = BlobGuard::new(self, store).await?;
        let (body, meter) = Meter::wrap(body, pace);
        // Uploads to an object store also land in the hot cache, from the
        // same bytes: nothing is read twice.
        let fill = self.cache_for(store).map(HotCache::fill);
        let body = match &fill {
            Some(fill) => fill.tee(body),
            None => body,
        };
        write_detached(store, &guard.key, body).await.map_err(|e| {
            match meter.explain(e, pace) {
                MediaError::TooLarge { limit } if room == Some(limit) => {
                    self.over_quota(&quota.as_ref().map(|q| q.user.clone()).unwrap_or_default())
                }
                other => other,
            }
        })?;
        let (size, sha256) = meter.finish();

        let origin = match target {
            UploadTarget::Remote { .. } => Origin::Remote,
            _ => Origin::Local,
        };
        let record = self.new_record(meta, uploader, origin, (size, sha256));
        let blob = NewBlob {
            datastore: store.id().clone(),
            key: guard.key.clone(),
        };
        let remote = matches!(target, UploadTarget::Remote { .. });
        let key = match target {
            UploadTarget::New | UploadTarget::Fetched { .. } => {
                MediaKey::new(self.inner.server_name.clone(), MediaId::generate())
            }
            UploadTarget::Reserved(key) | UploadTarget::Remote { key, .. } => key,
        };
        let (key, outcome) = self
            .commit_upload(key, &record, &blob, (&mode, quota.as_ref()), remote)
            .await?;
        // A concurrent fetch cached it first: theirs stands, ours is
        // dropped by the guard.
        let Some(deduplicated) = outcome else {
            return Ok((key, size));
        };
        // A deduplicated upload's own copy is surplus (the armed guard
        // deletes it), unless the copy it was matched with has gone missing:
        // then ours takes its place.
        if !deduplicated || self.replace_missing_blob(sha256, &blob).await? {
            guard.disarm();
        }
        if let Some(fill) = fill {
            fill.finish(sha256, size);
        }
        self.inner.committed.notify_waiters();
        self.pregenerate(key.clone());
        tracing::info!(mxc = %key, size, sha256 = %sha256.to_hex(), deduplicated, "media stored");
        Ok((key, size))
    }

    /// The record of content just received, as this server stores new media.
    pub(super) fn new_record(
        &self,
        meta: UploadMeta,
        uploader: Option<&UserId>,
        origin: Origin,
        (size, sha256): (u64, Sha256Digest),
    ) -> MediaRecord {
        MediaRecord {
            sha256,
            size,
            content_type: meta.content_type,
            upload_name: meta.upload_name,
            uploader: uploader.map(ToString::to_string),
            created: UnixMillis::now(),
            origin,
            requires_auth: self.inner.config.freeze_unauthenticated,
            quarantined: false,
            quarantined_by: None,
            protected: false,
            last_access: None,
        }
    }

    /// After a deduplicated commit: if the stored copy of `digest` is gone
    /// from its datastore (deleted behind our back, a restore without the
    /// bytes), points the blob record at the fresh copy `ours` and says so.
    /// One HEAD per deduplicated upload, none for new content.
    pub(super) async fn replace_missing_blob(
        &self,
        digest: Sha256Digest,
        ours: &NewBlob,
    ) -> Result<bool, MediaError> {
        let Some(existing) = self.inner.meta.blobs.blob(&digest).await? else {
            return Ok(false);
        };
        let store = self.inner.stores.get(&existing.datastore)?;
        match store.head(&existing.key).await {
            Ok(_) => return Ok(false),
            Err(StorageError::NotFound) => {}
            Err(other) => return Err(other.into()),
        }
        let moved = self
            .inner
            .meta
            .blobs
            .move_blob(
                &digest,
                (&existing.datastore, &existing.key),
                (&ours.datastore, &ours.key),
            )
            .await?;
        if moved {
            tracing::warn!(sha256 = %digest.to_hex(), "stored copy was missing; replaced by a new upload's bytes");
        }
        Ok(moved)
    }

    /// Commits `record` under `key` (a fresh random key when a new upload's
    /// is taken); the key and whether the content was deduplicated, or
    /// `None` when another fetch cached this remote media first.
    pub(super) async fn commit_upload(
        &self,
        mut key: MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        (mode, quota): (&CommitMode, Option<&Quota>),
        remote: bool,
    ) -> Result<(MediaKey, Option<bool>), MediaError> {
        for _ in 0..4 {
            let records = &self.inner.meta.records;
            match records.commit(&key, record, blob, mode, quota).await? {
                Commit::Done { deduplicated } => return Ok((key, Some(deduplicated))),
                Commit::Taken if remote => return Ok((key, None)),
                Commit::Taken => {
                    key = MediaKey::new(self.inner.server_name.clone(), MediaId::generate());
                }
                Commit::AlreadyHasContent => return Err(MediaError::CannotOverwrite),
                Commit::NotReserved => return Err(MediaError::NotFound),
                Commit::NotOwner => return Err(MediaError::Forbidden(NOT_OWNER)),
                Commit::OverQuota => {
                    return Err(self.over_quota(record.uploader.as_deref().unwrap_or_default()));
                }
            }
        }
        Err(MediaError::Internal(
            "four random media ids in a row were taken",
        ))
    }

    /// The uploader's quota, checked against the declared length before a
    /// byte is read; a body of unknown length is cut off where the quota's
    /// room ends (`pace.limit` lowered, and that room returned).
    async fn quota_cap(
        &self,
        target: &UploadTarget,
        uploader: Option<&UserId>,
        declared: Option<u64>,
        pace: &mut Pace,
    ) -> Result<(Option<Quota>, Option<u64>), MediaError> {
        let quota = match (target, uploader) {
            (UploadTarget::Remote { .. } | UploadTarget::Fetched { .. }, _) | (_, None) => None,
            (_, Some(user)) => self.quota_for(user),
        };
        let mut room = None;
        if let Some(quota) = &quota {
            let reserved = matches!(target, UploadTarget::Reserved(_));
            let left = self.quota_room(quota, declared, reserved).await?;
            if left < pace.limit {
                pace.limit = left;
                room = Some(left);
            }
        }
        Ok((quota, room))
    }

    /// The limits a body for `target` is held to, and where it is stored.
    fn pace_and_kind(
        &self,
        target: &UploadTarget,
        uploader: Option<&UserId>,
    ) -> (Pace, DatastoreKind) {
        let config = &self.inner.config;
        match target {
            UploadTarget::Remote { pace, .. } => (*pace, DatastoreKind::RemoteMedia),
            UploadTarget::Fetched { pace } => (*pace, DatastoreKind::LocalMedia),
            _ => (
                Pace {
                    limit: self.upload_limit(uploader),
                    idle: config.upload_idle_timeout,
                    min_rate: config.upload_min_rate.as_u64(),
                    deadline: config.upload_deadline,
                },
                DatastoreKind::LocalMedia,
            ),
        }
    }

    async fn check_reserved(&self, key: &MediaKey, uploader: &UserId) -> Result<(), MediaError> {
        if key.server != self.inner.server_name {
            return Err(MediaError::NotFound);
        }
        may_fill(&self.inner.meta.records.lookup(key).await?, uploader)
    }

    /// Whether `key` is being written right now; for sweeps.
    pub(super) fn is_in_flight(&self, store: &DatastoreId, key: &BlobKey) -> bool {
        self.in_flight().contains(&(store.clone(), key.clone()))
    }
}

/// Runs the write in a task of its own. When a client disconnects, the server drops
/// the handler; a write dropped mid-way would leave an S3 multipart upload
/// (billable parts) behind. Detached, the write instead sees the body fail and
/// aborts. A write that completes after its caller left deletes its object.
pub(super) async fn write_detached(
    store: &BlobStore,
    key: &BlobKey,
    body: ByteStream,
) -> Result<u64, StorageError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (store, key) = (store.clone(), key.clone());
    tokio::spawn(async move {
        let result = store.put_stream(&key, body).await;
        if let Err(Ok(_)) = tx.send(result)
            && let Err(error) = store.delete(&key).await
        {
            tracing::warn!(key = key.as_str(), %error, "could not remove an abandoned upload");
        }
    });
    rx.await.unwrap_or(Err(StorageError::TaskFailed))
}

/// Whether `uploader` may fill an id found as `found`.
pub(super) fn may_fill(found: &Lookup, uploader: &UserId) -> Result<(), MediaError> {
    match found {
        Lookup::Missing => Err(MediaError::NotFound),
        Lookup::Complete { .. } => Err(MediaError::CannotOverwrite),
        Lookup::Pending(p) if p.expires <= UnixMillis::now() => Err(MediaError::NotFound),
        Lookup::Pending(p) if p.owner != uploader.as_str() => Err(MediaError::Forbidden(NOT_OWNER)),
        Lookup::Pending(_) => Ok(()),
    }
}

pub(super) const NOT_OWNER: &str = "this media id was created by another user";
