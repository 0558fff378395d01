//! Media metadata. The `MediaRepo` trait speaks in records; only `sled.rs`
//! knows trees, key bytes and encodings. Methods are synchronous, because the
//! embedded engines we use are; async callers go through `Repo::blocking`.

mod codec;
mod keys;
pub mod sled;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    thumbnail::Spec,
};

/// An async upload id reserved by `/create`, waiting for its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Matrix user id of the user who called `/create`; only they may upload.
    pub owner: String,
    pub created: UnixMillis,
    pub expires: UnixMillis,
}

/// Where media came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Local,
    Remote,
}

/// Media with content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
    /// The Content-Type as uploaded (already checked to be a valid media type).
    pub content_type: String,
    /// The upload name, already stripped of path parts and control characters.
    pub upload_name: Option<String>,
    pub uploader: Option<String>,
    pub created: UnixMillis,
    pub origin: Origin,
    /// Created while unauthenticated media was frozen: never served on the
    /// legacy unauthenticated endpoints.
    pub requires_auth: bool,
    pub quarantined: bool,
}

/// What the repository holds for one media key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaState {
    Pending(PendingRecord),
    Complete(MediaRecord),
}

/// One stored object, shared by every media record with the same digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub datastore: DatastoreId,
    pub key: BlobKey,
    pub size: u64,
    /// How many media records point at this blob.
    pub refs: u64,
    pub created: UnixMillis,
}

/// A stored thumbnail of one media item at one configured size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub created: UnixMillis,
}

/// Outcome of `commit_thumbnail`.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitThumb {
    /// Stored; `deduplicated` as for `Commit::Done`.
    Done { deduplicated: bool },
    /// Another request stored this size first; use its record.
    Exists(ThumbRecord),
}

/// A freshly written object, offered to `commit`.
#[derive(Clone, Debug)]
pub struct NewBlob {
    pub datastore: DatastoreId,
    pub key: BlobKey,
}

/// Which kind of upload a commit finishes.
#[derive(Clone, Debug)]
pub enum CommitMode {
    /// `POST /upload`: the key must not exist yet.
    Fresh,
    /// `PUT /upload/{s}/{id}`: the key must be pending, unexpired and owned by `owner`.
    Reserved { owner: String, now: UnixMillis },
}

/// Outcome of `reserve`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    Done,
    /// The id exists already (astronomically unlikely for random ids).
    Taken,
    /// The owner already has `max_pending` unexpired reservations; the
    /// oldest of them expires at `next_expiry`.
    TooManyPending {
        next_expiry: UnixMillis,
    },
}

/// Outcome of `commit`. Expected outcomes are values, so `?` only ever
/// carries real failures.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// Committed. `deduplicated` says the offered blob was not needed because
    /// identical content is already stored; the caller deletes it.
    Done {
        deduplicated: bool,
    },
    AlreadyHasContent,
    /// Unknown or expired reservation.
    NotReserved,
    NotOwner,
    /// `Fresh` commit onto an existing key.
    Taken,
}

/// Who this database is: written once when it is created, so datastores
/// can be tied to it (the ownership marker) and a fresh, empty database is
/// never mistaken for the one that filled a datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseIdentity {
    /// Random, 32 hex digits.
    pub id: String,
    pub created: UnixMillis,
}

/// This database's claim on one datastore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Objects last modified before this were not written by this database
    /// (the store was adopted): sweeps never delete them.
    pub since: UnixMillis,
}

/// Record counts, for readiness checks, metrics and tests.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Counts {
    pub media: u64,
    pub pending: u64,
    pub blobs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("sled: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("record encoding: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("metadata task panicked")]
    TaskPanicked,
}

/// The metadata store.
pub trait MediaRepo: Send + Sync + 'static {
    /// Creates a pending record for `/create`, enforcing the per-owner cap.
    fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
    ) -> Result<Reserve, RepoError>;
    /// Attaches content to `key` and registers (or shares) its blob, atomically.
    fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
    ) -> Result<Commit, RepoError>;
    fn get(&self, key: &MediaKey) -> Result<Option<MediaState>, RepoError>;
    /// The stored thumbnail of `key` at `spec`; `animated` ones are kept apart.
    fn get_thumbnail(
        &self,
        key: &MediaKey,
        spec: &Spec,
        animated: bool,
    ) -> Result<Option<ThumbRecord>, RepoError>;
    /// Records a thumbnail and registers (or shares) its blob, atomically.
    fn commit_thumbnail(
        &self,
        key: &MediaKey,
        spec: &Spec,
        animated: bool,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError>;
    /// Sets the quarantine flag of complete media; false if there is none.
    fn set_quarantined(&self, key: &MediaKey, quarantined: bool) -> Result<bool, RepoError>;
    fn blob(&self, sha256: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError>;
    /// Blob records stored in `datastore`, in key order after `after`.
    fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError>;
    /// How many blob records point into `datastore`.
    fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError>;
    /// Every blob record, in digest order after `after`.
    fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError>;
    /// Points the blob `digest` at `to` if it still is at `from`; false if
    /// it moved or went away meanwhile.
    fn move_blob(
        &self,
        digest: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError>;
    /// Whether any blob record points at `key` in `datastore`.
    fn blob_key_known(&self, datastore: &DatastoreId, key: &BlobKey) -> Result<bool, RepoError>;
    /// Pending records whose expiry is at or before `now`.
    fn expired_pending(&self, now: UnixMillis, limit: usize) -> Result<Vec<MediaKey>, RepoError>;
    /// Removes `key` if it is still pending and expired at `now`.
    fn remove_expired_pending(&self, key: &MediaKey, now: UnixMillis) -> Result<bool, RepoError>;
    /// Record counts. Walks every tree: for tests and operator tools, not hot paths.
    fn counts(&self) -> Result<Counts, RepoError>;
    /// Reserved ids not uploaded yet (walks only those; for metrics).
    fn pending_count(&self) -> Result<u64, RepoError>;
    /// This database's identity, created (and made durable) on first use.
    fn identity(&self) -> Result<DatabaseIdentity, RepoError>;
    /// This database's claim on `datastore`, if it made one.
    fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError>;
    /// Records (or replaces) the claim on `datastore`, durably.
    fn put_claim(&self, datastore: &DatastoreId, claim: &ClaimRecord) -> Result<(), RepoError>;
    /// A cheap round trip through the engine, for readiness probes.
    fn ping(&self) -> Result<(), RepoError>;
    /// Makes every committed change durable.
    fn flush(&self) -> Result<(), RepoError>;
}

/// Cheap-to-clone handle that keeps blocking engine calls off the runtime.
#[derive(Clone)]
pub struct Repo(Arc<dyn MediaRepo>, Arc<GroupFlush>);

/// Group commit: concurrent callers of [`Repo::commit_durably`] share one
/// flush of the engine (one fsync) instead of queueing one each.
#[derive(Default)]
struct GroupFlush {
    /// Tickets handed out; a caller takes one after its own writes.
    requested: std::sync::atomic::AtomicU64,
    /// Every ticket up to this one is durable.
    flushed: std::sync::atomic::AtomicU64,
    /// One engine flush at a time.
    running: std::sync::Mutex<()>,
}

impl GroupFlush {
    /// Makes every write this thread has finished durable; callers that
    /// arrive while a flush runs are covered by the next one, together.
    fn flush(&self, repo: &dyn MediaRepo) -> Result<(), RepoError> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.requested.fetch_add(1, SeqCst) + 1;
        let _running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.flushed.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket taken so far belongs to writes already made, so
        // this flush covers them all.
        let covered = self.requested.load(SeqCst);
        repo.flush()?;
        self.flushed.fetch_max(covered, SeqCst);
        Ok(())
    }
}

impl Repo {
    pub fn new(inner: Arc<dyn MediaRepo>) -> Self {
        Self(inner, Arc::default())
    }

    /// Runs `f` on a blocking thread, then makes its writes durable when
    /// `durable` says they need it, sharing the flush with concurrent
    /// callers (one thread hop for both).
    pub async fn commit_durably<T, F, D>(&self, f: F, durable: D) -> Result<T, RepoError>
    where
        F: FnOnce(&dyn MediaRepo) -> Result<T, RepoError> + Send + 'static,
        D: FnOnce(&T) -> bool + Send + 'static,
        T: Send + 'static,
    {
        let repo = Arc::clone(&self.0);
        let group = Arc::clone(&self.1);
        tokio::task::spawn_blocking(move || {
            let out = f(repo.as_ref())?;
            if durable(&out) {
                group.flush(repo.as_ref())?;
            }
            Ok(out)
        })
        .await
        .map_err(|_| RepoError::TaskPanicked)?
    }

    /// A handle that does not keep the store open, to wait for its close.
    pub fn downgrade(&self) -> std::sync::Weak<dyn MediaRepo> {
        Arc::downgrade(&self.0)
    }

    pub async fn blocking<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        F: FnOnce(&dyn MediaRepo) -> Result<T, RepoError> + Send + 'static,
        T: Send + 'static,
    {
        let repo = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(repo.as_ref()))
            .await
            .map_err(|_| RepoError::TaskPanicked)?
    }
}
