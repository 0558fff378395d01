//! The records the metadata ports speak in: what the application core
//! stores about media, reservations, blobs and thumbnails. Adapters persist
//! them however they like; nothing here knows an engine.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobKey, DatastoreId, Sha256Digest, UnixMillis};

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
    /// The admin who quarantined it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_by: Option<String>,
    /// Exempt from bulk quarantine (by user, room or content) and from
    /// retention; an admin's choice.
    #[serde(default)]
    pub protected: bool,
    /// When it was last served, coarsely (see `media::access`); `None`
    /// until the first access is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_access: Option<UnixMillis>,
}

impl MediaRecord {
    /// Last served, or created when never served since: what retention
    /// counts from.
    pub fn last_used(&self) -> UnixMillis {
        self.last_access.unwrap_or(self.created).max(self.created)
    }
}

/// An object no record points at any more, to be deleted from its
/// datastore (recorded in the same transaction that released it, so a
/// crash between the two never loses track of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlinked {
    pub datastore: DatastoreId,
    pub key: BlobKey,
    pub sha256: Sha256Digest,
}

/// Outcome of `delete`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// No complete media under that key.
    Missing,
    /// The record and its thumbnails are gone; `unlinked` are the objects
    /// whose last reference went with them.
    Deleted { unlinked: Vec<Unlinked> },
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
    /// When it was last served, coarsely; `None` until recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_access: Option<UnixMillis>,
}

/// Which thumbnail of a media item: one configured size and method, still
/// or animated (animated ones are kept apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThumbSize {
    pub width: u32,
    pub height: u32,
    pub crop: bool,
    pub animated: bool,
}

/// A thumbnail with the blob that holds its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredThumb {
    pub record: ThumbRecord,
    pub blob: BlobRecord,
}

/// What the metadata store holds for one media key, with the blob of
/// complete media: one lookup for the download path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Missing,
    Pending(PendingRecord),
    /// `blob` is `None` only if the store lost a record it should hold.
    Complete {
        record: MediaRecord,
        blob: Option<BlobRecord>,
    },
}

/// Outcome of `commit_thumbnail`.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitThumb {
    /// Stored; `deduplicated` as for `Commit::Done` (the caller deletes
    /// its surplus object).
    Done {
        deduplicated: bool,
        stored: StoredThumb,
    },
    /// Another request stored this size first; use its thumbnail.
    Exists(StoredThumb),
    /// The media was deleted meanwhile: nothing was stored.
    MediaGone,
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

/// An upload quota the store enforces atomically with `reserve` and
/// `commit`: concurrent uploads of one user never overshoot it. Files count
/// from their reservation (an async upload's `/create`); bytes when
/// committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub user: String,
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
    pub windows: Vec<QuotaWindow>,
}

/// What may be committed since `since` (a sliding window ending now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaWindow {
    pub since: UnixMillis,
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
}

/// One user's stored local media: totals, reservations, and per window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserUsage {
    pub files: u64,
    pub bytes: u64,
    /// Reserved async uploads not uploaded yet (unexpired or not).
    pub pending: u64,
    /// (files, bytes) committed since each asked-for time, in order.
    pub windows: Vec<(u64, u64)>,
}

impl Quota {
    /// Whether `usage` plus one more upload of `size` bytes (a new file
    /// when `new_file`) stays within every limit.
    pub fn admits(&self, usage: &UserUsage, size: u64, new_file: bool) -> bool {
        let files = usage.files + usage.pending + u64::from(new_file);
        let within = |max: Option<u64>, value: u64| max.is_none_or(|m| value <= m);
        within(self.max_files, files)
            && within(self.max_bytes, usage.bytes + size)
            && self
                .windows
                .iter()
                .zip(&usage.windows)
                .all(|(w, (f, b))| within(w.max_files, f + 1) && within(w.max_bytes, b + size))
    }
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
    /// The owner's quota has no room for another file.
    OverQuota,
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
    /// The uploader's quota has no room for this upload: nothing stored.
    OverQuota,
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

/// What a backup of the metadata wrote (`mxmedia db backup`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    pub trees: u64,
    pub entries: u64,
    pub bytes: u64,
    /// How long writes waited while the copy was taken.
    pub writes_paused_ms: u64,
}

/// What a restore wrote (`mxmedia db restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub entries: u64,
    pub media: u64,
    pub blobs: u64,
    /// Datastores whose objects written before the restore the sweeps now
    /// leave alone (uploads made after the backup have no record here).
    pub datastores_held: u64,
}

/// Record counts, for readiness checks, metrics and tests.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Counts {
    pub media: u64,
    pub pending: u64,
    pub blobs: u64,
}
