//! The ports of the application core: what `media/` needs from a metadata
//! store and from other servers, as async traits its adapters implement
//! (`repo::sled` for metadata, `federation` for remote media).
//!
//! Each method is one step of a use case, so a networked backend pays one
//! round trip per step. Writes a method reports as done are durable when it
//! returns: how (sled's group flush, a database transaction) is the
//! adapter's business.

use std::sync::Arc;

use async_trait::async_trait;

pub use super::catalog::{
    Accesses, MediaOrder, MediaPage, MediaPageQuery, QuarantineChange, QuarantineEvent,
    QuarantinedContent, Usage,
};
pub use super::records::{
    BackupReport, BlobRecord, ClaimRecord, Commit, CommitMode, CommitThumb, Counts,
    DatabaseIdentity, Deletion, Lookup, MediaRecord, NewBlob, Origin, PendingRecord, Quota,
    QuotaWindow, Reserve, StoredThumb, ThumbRecord, ThumbSize, Unlinked, UserUsage,
};
use crate::{
    auth::Credentials,
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    storage::ByteStream,
};

/// A metadata store failure, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The engine failed (I/O, connection, a worker that died).
    #[error("metadata store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value cannot be read back.
    #[error("unreadable metadata record: {0}")]
    Corrupt(String),
    /// Records that must agree do not (a reference to a missing record).
    #[error("inconsistent metadata: {0}")]
    Inconsistent(&'static str),
}

impl RepoError {
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// Media records and their thumbnails: the request path.
#[async_trait]
pub trait MediaRecords: Send + Sync {
    /// Creates a pending record for `/create`, enforcing the per-owner cap
    /// of live reservations.
    async fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
        quota: Option<&Quota>,
    ) -> Result<Reserve, RepoError>;
    /// Attaches content to `key` and registers (or shares) its blob, in one
    /// transaction.
    async fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
        quota: Option<&Quota>,
    ) -> Result<Commit, RepoError>;
    /// The media at `key`, with its blob when it is complete.
    async fn lookup(&self, key: &MediaKey) -> Result<Lookup, RepoError>;
    /// Removes complete media with its thumbnails in one transaction,
    /// releasing their blobs; blobs left without references become
    /// `Unlinked` in the same step. A deleted local id is never handed out
    /// again (`tombstone`); remote media may be fetched again.
    async fn delete(&self, key: &MediaKey, tombstone: bool) -> Result<Deletion, RepoError>;
    /// The stored thumbnail of `key` at `size`, with its blob.
    async fn thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<StoredThumb>, RepoError>;
    /// Records a thumbnail and registers (or shares) its blob, in one
    /// transaction; an existing thumbnail of that size wins.
    async fn commit_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError>;
}

/// The blob index: which stored objects exist, where, and for which digest.
#[async_trait]
pub trait BlobIndex: Send + Sync {
    async fn blob(&self, digest: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError>;
    /// Points the blob `digest` at `to` if it still is at `from`; false if
    /// it moved or went away meanwhile.
    async fn move_blob(
        &self,
        digest: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError>;
    /// Blob records stored in `datastore`, in key order after `after`.
    async fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError>;
    /// How many blob records point into `datastore`.
    async fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError>;
    /// Every blob record, in digest order after `after`.
    async fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError>;
    /// Objects released by deletions and not yet removed from their
    /// datastore, oldest first.
    async fn unlinked(&self, limit: usize) -> Result<Vec<Unlinked>, RepoError>;
    /// Forgets an unlinked object once it is gone from its datastore.
    async fn forget_unlinked(&self, object: &Unlinked) -> Result<(), RepoError>;
    /// Of `keys` in `datastore`, those no blob record points at and no
    /// instance announced it is writing (the sweep's view, one call per
    /// listed batch).
    async fn unknown_keys(
        &self,
        datastore: &DatastoreId,
        keys: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError>;
}

/// The admin's view: quarantine over identical content, protection,
/// listings and usage. Bulk reads page through the store; none holds more
/// than a page (or the requested window) in memory.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Applies `change` to the complete media among `targets` and to every
    /// media item stored with the same bytes; the number of items whose
    /// state changed. Quarantining leaves protected media alone (a
    /// protected target contributes nothing) and remembers the content, so
    /// media committed later with those bytes arrives quarantined; releasing
    /// forgets it. Every change is appended to the quarantine log.
    async fn quarantine(
        &self,
        targets: &[MediaKey],
        change: &QuarantineChange,
    ) -> Result<u64, RepoError>;
    /// Whether content with `digest` is quarantined as such.
    async fn quarantined_content(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<QuarantinedContent>, RepoError>;
    /// Sets the protection of complete media; false if there is none.
    async fn set_protected(&self, key: &MediaKey, protected: bool) -> Result<bool, RepoError>;
    /// One page of the local media `user` uploaded, in `query`'s order.
    async fn uploads(&self, user: &str, query: &MediaPageQuery) -> Result<MediaPage, RepoError>;
    /// Complete media in key order after `after` (for bulk operations).
    async fn media_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, MediaRecord)>, RepoError>;
    /// Local media per uploader, counting media created in `[from, until)`.
    async fn usage(
        &self,
        from: Option<UnixMillis>,
        until: Option<UnixMillis>,
    ) -> Result<Vec<Usage>, RepoError>;
    /// Quarantine log entries after position `after`, oldest first.
    async fn quarantine_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineEvent>, RepoError>;
    /// The last position written to the quarantine log (0 when empty).
    async fn quarantine_log_head(&self) -> Result<u64, RepoError>;
    /// `user`'s stored local media and reservations, and what they
    /// committed since each of `since`.
    async fn usage_of(&self, user: &str, since: &[UnixMillis]) -> Result<UserUsage, RepoError>;
    /// Records when media and thumbnails were last served (a batch, not
    /// durable on its own: a crash loses at most one batch of access times).
    /// Gone items are skipped; a time never moves backwards.
    async fn touch(&self, accesses: &Accesses) -> Result<(), RepoError>;
    /// Stored thumbnails in key order after `after` (for retention).
    async fn thumbnails_after(
        &self,
        after: Option<&(MediaKey, ThumbSize)>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, ThumbSize, ThumbRecord)>, RepoError>;
    /// Removes one thumbnail, releasing its blob (an `Unlinked` object when
    /// it was the last reference); `None` when there is no such thumbnail.
    async fn delete_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<Vec<Unlinked>>, RepoError>;
}

/// Sweeps, ownership and health: background jobs and operators.
#[async_trait]
pub trait Housekeeping: Send + Sync {
    /// Removes up to `limit` reservations expired at `now`; the keys
    /// removed. Also forgets the write announcements of instances that
    /// stopped.
    async fn expire_pending(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MediaKey>, RepoError>;
    /// Record counts. May walk every record: for tests and operator tools.
    async fn counts(&self) -> Result<Counts, RepoError>;
    /// Reserved ids not uploaded yet (for metrics).
    async fn pending_count(&self) -> Result<u64, RepoError>;
    /// This database's identity, created (durably) on first use.
    async fn identity(&self) -> Result<DatabaseIdentity, RepoError>;
    /// This database's claim on `datastore`, if it made one.
    async fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError>;
    /// Records (or replaces) the claim on `datastore`, durably.
    async fn put_claim(
        &self,
        datastore: &DatastoreId,
        claim: &ClaimRecord,
    ) -> Result<(), RepoError>;
    /// A cheap round trip through the engine, for readiness probes.
    async fn ping(&self) -> Result<(), RepoError>;
    /// Makes everything durable before the process stops.
    async fn close(&self) -> Result<(), RepoError>;
    /// Commits made by any instance sharing this store, as they happen
    /// (so downloads waiting here wake at once); `None` for a store no
    /// other instance can share.
    async fn commits(&self) -> Result<Option<futures::stream::BoxStream<'static, ()>>, RepoError> {
        Ok(None)
    }
    /// The lease on background job `job` for as long as the returned value
    /// lives, or `None` while another instance holds it (so sweeps and
    /// retention run on one instance at a time). A store no other instance
    /// can share always grants it.
    async fn lease(&self, job: &str) -> Result<Option<Lease>, RepoError> {
        let _ = job;
        Ok(Some(Lease(Box::new(()))))
    }
    /// Waits until no other instance holds `work` (a remote fetch, a
    /// thumbnail), then holds it while the returned value lives: one
    /// instance at a time does it, the others then find it done.
    async fn exclusive(&self, work: &str) -> Result<Lease, RepoError> {
        let _ = work;
        Ok(Lease(Box::new(())))
    }
    /// Tells every instance sharing this store that `key` is being written
    /// into `datastore` until the returned value is dropped, so their
    /// sweeps leave it alone (`unknown_keys` leaves it out). Announcements
    /// of an instance that stopped are forgotten by `expire_pending`. A
    /// store no other instance can share has no one to tell.
    async fn writing(&self, datastore: &DatastoreId, key: &BlobKey) -> Result<Lease, RepoError> {
        let _ = (datastore, key);
        Ok(Lease(Box::new(())))
    }
    /// Of `keys` in `datastore`, those an instance announced (with
    /// `writing`) it is writing.
    async fn being_written(
        &self,
        datastore: &DatastoreId,
        keys: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError> {
        let _ = (datastore, keys);
        Ok(Vec::new())
    }
    /// Spends a token of `bucket`, a token bucket shared by every instance
    /// on this store (refilled at `rate.0` per second up to `rate.1`).
    async fn spend_token(&self, bucket: &str, rate: (f64, u32)) -> Result<Token, RepoError> {
        let _ = (bucket, rate);
        Ok(Token::Unshared)
    }
}

/// The answer of [`Housekeeping::spend_token`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Token {
    Granted,
    /// None left: the time until there is one.
    Wait(std::time::Duration),
    /// This store is not shared: the caller keeps its buckets itself.
    Unshared,
}

/// A held lease on a background job; released when dropped.
pub struct Lease(pub Box<dyn Send + Sync>);

/// An id that is not (or no longer) complete media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Reserved by `/create`, waiting for its bytes.
    Pending(PendingRecord),
    /// Deleted local media: the id is never handed out again.
    Retired { at: UnixMillis },
}

/// What a metadata store holds beyond records, blobs and thumbnails, read
/// and written whole: for copying one store into another (`mxmedia db
/// copy`, with the server stopped).
#[async_trait]
pub trait Transfer: Send + Sync {
    /// Reserved and retired ids after `after`, in the store's key order.
    async fn reserved_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, Reserved)>, RepoError>;
    /// Writes a reserved or retired id as it was; false if the id is taken.
    async fn put_reserved(&self, key: &MediaKey, reserved: &Reserved) -> Result<bool, RepoError>;
    /// Content quarantined as such, in digest order after `after`.
    async fn quarantined_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, QuarantinedContent)>, RepoError>;
    async fn put_quarantined(
        &self,
        digest: &Sha256Digest,
        content: &QuarantinedContent,
    ) -> Result<(), RepoError>;
    /// Every datastore claim of this database.
    async fn claims(&self) -> Result<Vec<(DatastoreId, ClaimRecord)>, RepoError>;
    /// Takes on `identity` if this store has none yet; false if it has
    /// another (it belongs to another deployment).
    async fn adopt_identity(&self, identity: &DatabaseIdentity) -> Result<bool, RepoError>;
    /// Records an object still to be removed from its datastore.
    async fn put_unlinked(&self, object: &Unlinked) -> Result<(), RepoError>;
    /// Writes a point-in-time copy of the whole database to the file `out`
    /// (which must not exist), while the server runs. Engines with their
    /// own backup tools say so instead.
    async fn backup(&self, out: &std::path::Path) -> Result<BackupReport, RepoError>;
}

/// The metadata store, one handle per role. An adapter usually implements
/// all of them on one type.
#[derive(Clone)]
pub struct Metadata {
    pub records: Arc<dyn MediaRecords>,
    pub blobs: Arc<dyn BlobIndex>,
    pub catalog: Arc<dyn Catalog>,
    pub housekeeping: Arc<dyn Housekeeping>,
    pub transfer: Arc<dyn Transfer>,
}

impl Metadata {
    pub fn new<T>(store: Arc<T>) -> Self
    where
        T: MediaRecords + BlobIndex + Catalog + Housekeeping + Transfer + 'static,
    {
        Self {
            records: store.clone(),
            blobs: store.clone(),
            catalog: store.clone(),
            housekeeping: store.clone(),
            transfer: store,
        }
    }
}

/// Remote media as another server answered it: its type and file name as
/// sent (the core validates and cleans them), and the bytes still to be
/// read (capped and paced by the core).
pub struct RemoteAnswer {
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub body: ByteStream,
}

/// Why remote media could not be fetched.
#[derive(Debug, thiserror::Error, Clone)]
pub enum RemoteError {
    #[error("the remote server does not have this media")]
    NotFound,
    #[error("fetching remote media is not configured here")]
    NotConfigured,
    #[error("the remote server failed: {0}")]
    Unavailable(String),
}

/// Another server's media, however it is reached (the federation API).
#[async_trait]
pub trait RemoteSource: Send + Sync {
    /// Asks `key`'s server for it; answers once the headers are in. The
    /// caller bounds the whole transfer in time and size.
    async fn fetch(&self, key: &MediaKey) -> Result<RemoteAnswer, RemoteError>;
    /// Whether `server`'s media is refused here by configuration.
    fn is_blocked(&self, server: &ruma::ServerName) -> bool;
}

/// Why the homeserver could not answer an admin question.
#[derive(Debug, thiserror::Error, Clone)]
pub enum HomeserverError {
    /// It refused (the token is not an admin's, the room is unknown, ...).
    #[error("the homeserver refused: {status} {errcode}: {error}")]
    Refused {
        status: u16,
        errcode: String,
        error: String,
    },
    /// It is unreachable, failed, or answered something unreadable.
    #[error("the homeserver failed: {0}")]
    Unavailable(String),
}

/// What only the homeserver knows about media: which media a room's
/// events reference, which media are avatars, users' display names. Asked
/// with the acting admin's own credentials, through its admin API.
#[async_trait]
pub trait Homeserver: Send + Sync {
    /// The media (local and remote) referenced by `room`'s events.
    async fn room_media(
        &self,
        room: &ruma::RoomId,
        acting: &Credentials,
    ) -> Result<Vec<MediaKey>, HomeserverError>;
    /// Media used as user or room avatars on this server.
    async fn avatars(
        &self,
        acting: &Credentials,
    ) -> Result<std::collections::HashSet<MediaKey>, HomeserverError>;
    /// `user`'s display name, if they set one.
    async fn display_name(
        &self,
        user: &ruma::UserId,
        acting: &Credentials,
    ) -> Result<Option<String>, HomeserverError>;
}

/// What a previewed URL turned out to be.
pub enum Fetched {
    /// An HTML page (or an oEmbed answer): its Open Graph properties, and
    /// the image that stands for it.
    Page {
        og: Vec<(String, String)>,
        image: Option<url::Url>,
    },
    /// An image: its type, declared length and bytes (the caller caps them).
    Media {
        content_type: String,
        length: Option<u64>,
        body: crate::storage::ByteStream,
    },
    /// Anything else: nothing to show (its body is not read).
    Other,
}

/// Why a URL could not be previewed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PreviewError {
    /// Configuration forbids it (a URL pattern, an address refused).
    #[error("{0}")]
    Blocked(String),
    /// Unreachable, an error status, a timeout.
    #[error("{0}")]
    Failed(String),
}

/// Fetches what a URL preview shows, through the address guard, within the
/// configured budgets.
#[async_trait]
pub trait Previewer: Send + Sync {
    /// Whether configuration lets `url` be previewed at all.
    fn permits(&self, url: &url::Url) -> bool;
    /// The page (or image) at `url`.
    async fn page(&self, url: &url::Url) -> Result<Fetched, PreviewError>;
    /// The image at `url`; `Other` when it is not one.
    async fn image(&self, url: &url::Url) -> Result<Fetched, PreviewError>;
}
