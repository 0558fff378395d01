//! The synchronous side of the sled adapter: trees, keys, transactions.
//! Trees are named `<record>_by_<key>` under a versioned directory; a layout
//! change means a new version directory plus a migration, never in-place
//! reinterpretation.

use std::{path::Path, sync::Mutex};

use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
};

mod access;
mod blobs;
mod catalog;
mod housekeeping;
mod transfer;

use super::{codec, keys};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        BlobRecord, Commit, CommitMode, CommitThumb, Deletion, Lookup, MediaRecord, NewBlob,
        Origin, PendingRecord, QuarantinedContent, Quota, RepoError, Reserve, StoredThumb,
        ThumbRecord, ThumbSize, Unlinked, UserUsage,
    },
};

/// What `media_by_id` holds for one media key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum MediaState {
    Pending(PendingRecord),
    Complete(MediaRecord),
    /// Local media an admin deleted: the id is never handed out again.
    Deleted {
        at: UnixMillis,
    },
}

/// The trees of one sled database; synchronous, run on blocking threads
/// by [`super::SledRepo`].
pub struct Trees {
    /// `media_by_id`: media key -> `MediaState`.
    media: sled::Tree,
    /// `pending_by_owner`: owner ++ media key -> `PendingRecord` (only pending ids).
    pending: sled::Tree,
    /// `blobs_by_sha256`: digest -> `BlobRecord`.
    blobs: sled::Tree,
    /// `blobs_by_key`: datastore ++ blob key -> digest, to recognise orphans.
    blob_keys: sled::Tree,
    /// `thumbs_by_media`: media key ++ size -> `ThumbRecord`.
    thumbs: sled::Tree,
    /// `meta_by_name`: the database identity and datastore claims.
    meta: sled::Tree,
    /// `deleted_by_id`: media key -> deletion time, of tombstoned ids (for counts).
    deleted: sled::Tree,
    /// `unlinked_by_key`: datastore ++ blob key -> `Unlinked`: objects
    /// released by deletions, still to be removed from their datastore.
    unlinked: sled::Tree,
    /// `media_by_sha256`: digest ++ media key -> (), of complete media.
    by_sha256: sled::Tree,
    /// `media_by_uploader`: user ++ created ++ media key -> size (BE), of
    /// complete local media with an uploader.
    by_uploader: sled::Tree,
    /// `quarantined_by_sha256`: digest -> `QuarantinedContent`.
    quarantined: sled::Tree,
    /// `quarantine_changes_by_seq`: position (BE) -> `LoggedChange`.
    quarantine_log: sled::Tree,
    /// `usage_by_user`: user -> files (BE u64) ++ bytes (BE u64) of their
    /// complete local media.
    usage: sled::Tree,
    /// Serialise quota-checked reservations and commits per user (striped),
    /// so concurrent uploads of one user never overshoot a quota.
    quota_locks: Vec<Mutex<()>>,
    /// Serialises thumbnail commits with deletions: a deletion lists a
    /// media item's thumbnails before its transaction (transactions cannot
    /// scan), and no thumbnail may be added in between.
    thumb_lock: Mutex<()>,
    /// Serialises `reserve`: counting an owner's pending ids and inserting one
    /// must be one step, and sled transactions cannot scan.
    reserve_lock: Mutex<()>,
    db: sled::Db,
}

const LOCK_RETRIES: u32 = 50;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

type TxResult<T> = Result<T, ConflictableTransactionError<RepoError>>;

fn abort(err: impl Into<RepoError>) -> ConflictableTransactionError<RepoError> {
    ConflictableTransactionError::Abort(err.into())
}

impl From<sled::Error> for RepoError {
    fn from(error: sled::Error) -> Self {
        Self::backend(error)
    }
}

impl From<codec::CodecError> for RepoError {
    fn from(error: codec::CodecError) -> Self {
        Self::Corrupt(error.to_string())
    }
}

fn tx_get<T: serde::de::DeserializeOwned>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    tree.get(key)?
        .map(|v| codec::decode(&v))
        .transpose()
        .map_err(abort)
}

/// The record of a newly stored object: one reference, the first.
fn fresh_blob(blob: &NewBlob, size: u64, created: UnixMillis) -> BlobRecord {
    BlobRecord {
        datastore: blob.datastore.clone(),
        key: blob.key.clone(),
        size,
        refs: 1,
        created,
    }
}

/// Points one more reference at the blob with `digest`, registering
/// `fresh` when it is new. True when the content was already stored (the
/// caller's new object is then surplus).
fn attach_blob(
    blobs: &TransactionalTree,
    blob_keys: &TransactionalTree,
    digest: &Sha256Digest,
    fresh: &BlobRecord,
) -> TxResult<bool> {
    if let Some(mut shared) = tx_get::<BlobRecord>(blobs, &digest.0)? {
        shared.refs += 1;
        blobs.insert(&digest.0[..], codec::encode(&shared).map_err(abort)?)?;
        Ok(true)
    } else {
        blobs.insert(&digest.0[..], codec::encode(fresh).map_err(abort)?)?;
        blob_keys.insert(keys::blob_key(&fresh.datastore, &fresh.key), &digest.0[..])?;
        Ok(false)
    }
}

/// Takes one reference off the blob with `digest`; the last one removes
/// its record and records the object as unlinked (in `released` too).
fn release_blob(
    blobs: &TransactionalTree,
    blob_keys: &TransactionalTree,
    unlinked: &TransactionalTree,
    digest: &Sha256Digest,
    released: &mut Vec<Unlinked>,
) -> TxResult<()> {
    let Some(mut blob) = tx_get::<BlobRecord>(blobs, &digest.0)? else {
        return Err(abort(RepoError::Inconsistent(
            "a record points at a missing blob",
        )));
    };
    blob.refs = blob.refs.saturating_sub(1);
    if blob.refs > 0 {
        blobs.insert(&digest.0[..], codec::encode(&blob).map_err(abort)?)?;
        return Ok(());
    }
    blobs.remove(&digest.0[..])?;
    let object_key = keys::blob_key(&blob.datastore, &blob.key);
    blob_keys.remove(object_key.as_slice())?;
    let object = Unlinked {
        datastore: blob.datastore,
        key: blob.key,
        sha256: *digest,
    };
    unlinked.insert(object_key, codec::encode(&object).map_err(abort)?)?;
    released.push(object);
    Ok(())
}

/// The `media_by_uploader` entry of complete media, if it has one: local
/// media with a known uploader.
fn uploader_entry(key: &MediaKey, record: &MediaRecord) -> Option<(Vec<u8>, [u8; 8])> {
    let user = record.uploader.as_deref()?;
    (record.origin == Origin::Local).then(|| {
        (
            keys::by_uploader(user, record.created, key),
            record.size.to_be_bytes(),
        )
    })
}

/// A `usage_by_user` value.
fn usage_value(files: u64, bytes: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&files.to_be_bytes());
    out[8..].copy_from_slice(&bytes.to_be_bytes());
    out
}

fn parse_usage(value: &[u8]) -> (u64, u64) {
    let half = |r: std::ops::Range<usize>| {
        value
            .get(r)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    (half(0..8), half(8..16))
}

/// Adds one file of `size` bytes to (or, `add` false, takes it off) the
/// uploader's usage, inside a transaction.
fn count_usage(
    usage: &TransactionalTree,
    key: &MediaKey,
    record: &MediaRecord,
    add: bool,
) -> TxResult<()> {
    if uploader_entry(key, record).is_none() {
        return Ok(());
    }
    let Some(user) = record.uploader.as_deref() else {
        return Ok(());
    };
    let (files, bytes) = usage
        .get(user.as_bytes())?
        .map_or((0, 0), |v| parse_usage(&v));
    let (files, bytes) = if add {
        (files + 1, bytes + record.size)
    } else {
        (files.saturating_sub(1), bytes.saturating_sub(record.size))
    };
    usage.insert(user.as_bytes(), &usage_value(files, bytes)[..])?;
    Ok(())
}

fn flatten<T>(result: Result<T, TransactionError<RepoError>>) -> Result<T, RepoError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => RepoError::backend(e),
    })
}

impl Trees {
    /// Bump when the on-disk layout changes; a migration reads the old directory.
    pub(super) const LAYOUT: &'static str = "v1";

    /// Opens (or creates) the database. A lock still held by a previous
    /// instance that is shutting down is waited for, up to a few seconds.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, RepoError> {
        let config = sled::Config::new()
            .path(dir.join(Self::LAYOUT))
            .cache_capacity(cache_bytes);
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if attempts < LOCK_RETRIES && is_lock_error(&e) => {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                other => break other?,
            }
        };
        Self {
            media: db.open_tree("media_by_id")?,
            pending: db.open_tree("pending_by_owner")?,
            blobs: db.open_tree("blobs_by_sha256")?,
            blob_keys: db.open_tree("blobs_by_key")?,
            thumbs: db.open_tree("thumbs_by_media")?,
            meta: db.open_tree("meta_by_name")?,
            deleted: db.open_tree("deleted_by_id")?,
            unlinked: db.open_tree("unlinked_by_key")?,
            by_sha256: db.open_tree("media_by_sha256")?,
            by_uploader: db.open_tree("media_by_uploader")?,
            quarantined: db.open_tree("quarantined_by_sha256")?,
            quarantine_log: db.open_tree("quarantine_changes_by_seq")?,
            usage: db.open_tree("usage_by_user")?,
            quota_locks: (0..64).map(|_| Mutex::new(())).collect(),
            thumb_lock: Mutex::new(()),
            reserve_lock: Mutex::new(()),
            db,
        }
        .with_indexes()
    }

    /// Builds the content and uploader indexes of a database written before
    /// they existed (once, before anything is served).
    fn with_indexes(self) -> Result<Self, RepoError> {
        const DONE: &[u8] = b"indexes/sha256+uploader+usage";
        if self.meta.contains_key(DONE)? {
            return Ok(self);
        }
        self.usage.clear()?;
        let mut usage: std::collections::BTreeMap<String, (u64, u64)> =
            std::collections::BTreeMap::new();
        let mut indexed = 0u64;
        for entry in &self.media {
            let (key, value) = entry?;
            let (Some(media), MediaState::Complete(record)) = (
                keys::parse_media(&key),
                codec::decode::<MediaState>(&value)?,
            ) else {
                continue;
            };
            self.by_sha256
                .insert(keys::by_sha256(&record.sha256, &media), &[][..])?;
            if let Some((entry, size)) = uploader_entry(&media, &record) {
                self.by_uploader.insert(entry, &size[..])?;
                if let Some(user) = &record.uploader {
                    let totals = usage.entry(user.clone()).or_default();
                    totals.0 += 1;
                    totals.1 += record.size;
                }
            }
            indexed += 1;
        }
        for (user, (files, bytes)) in usage {
            self.usage
                .insert(user.as_bytes(), &usage_value(files, bytes)[..])?;
        }
        self.meta.insert(DONE, &[][..])?;
        self.db.flush()?;
        if indexed > 0 {
            tracing::info!(indexed, "built the content and uploader indexes");
        }
        Ok(self)
    }

    fn quota_lock(&self, user: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut hasher);
        let stripe = usize::try_from(hasher.finish() % self.quota_locks.len() as u64).unwrap_or(0);
        self.quota_locks[stripe]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn quota_usage(&self, quota: &Quota) -> Result<UserUsage, RepoError> {
        let since: Vec<UnixMillis> = quota.windows.iter().map(|w| w.since).collect();
        self.usage_of(&quota.user, &since)
    }

    pub fn usage_of(&self, user: &str, since: &[UnixMillis]) -> Result<UserUsage, RepoError> {
        let (files, bytes) = self
            .usage
            .get(user.as_bytes())?
            .map_or((0, 0), |v| parse_usage(&v));
        let now = UnixMillis::now();
        let mut pending = 0;
        for entry in self.pending.scan_prefix(keys::pending_prefix(user)) {
            let record: PendingRecord = codec::decode(&entry?.1)?;
            if record.expires > now {
                pending += 1;
            }
        }
        let prefix = keys::uploader_prefix(user);
        let mut windows = Vec::with_capacity(since.len());
        for start in since {
            let mut from = prefix.clone();
            from.extend_from_slice(&start.0.to_be_bytes());
            let (mut f, mut b) = (0u64, 0u64);
            for entry in self.by_uploader.range(from..) {
                let (entry, size) = entry?;
                if !entry.starts_with(&prefix) {
                    break;
                }
                f += 1;
                b += size.as_ref().try_into().map_or(0, u64::from_be_bytes);
            }
            windows.push((f, b));
        }
        Ok(UserUsage {
            files,
            bytes,
            pending,
            windows,
        })
    }

    fn decode_state(bytes: Option<sled::IVec>) -> Result<Option<MediaState>, RepoError> {
        Ok(bytes.map(|v| codec::decode(&v)).transpose()?)
    }

    pub fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
        quota: Option<&Quota>,
    ) -> Result<Reserve, RepoError> {
        let _quota = quota.map(|q| self.quota_lock(&q.user));
        if let Some(quota) = quota
            && !quota.admits(&self.quota_usage(quota)?, 0, true)
        {
            return Ok(Reserve::OverQuota);
        }
        let _guard = self
            .reserve_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut live = Vec::new();
        for entry in self
            .pending
            .scan_prefix(keys::pending_prefix(&pending.owner))
        {
            let (_, value) = entry?;
            let record: PendingRecord = codec::decode(&value)?;
            if record.expires > pending.created {
                live.push(record.expires);
            }
        }
        if live.len() >= max_pending {
            let next_expiry = live.into_iter().min().unwrap_or(pending.expires);
            return Ok(Reserve::TooManyPending { next_expiry });
        }
        let media_key = keys::media(key);
        let pending_key = keys::pending(&pending.owner, key);
        let state = codec::encode(&MediaState::Pending(pending.clone()))?;
        let record = codec::encode(pending)?;
        let outcome = (&self.media, &self.pending).transaction(|(media, by_owner)| {
            if media.get(&media_key)?.is_some() {
                return Ok(Reserve::Taken);
            }
            media.insert(media_key.as_slice(), state.as_slice())?;
            by_owner.insert(pending_key.as_slice(), record.as_slice())?;
            Ok(Reserve::Done)
        });
        flatten(outcome)
    }

    pub fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
        quota: Option<&Quota>,
    ) -> Result<Commit, RepoError> {
        // The quota is checked and the commit made under the user's lock:
        // no concurrent commit of theirs can slip in between.
        let _quota = quota.map(|q| self.quota_lock(&q.user));
        if let Some(quota) = quota {
            let new_file = matches!(mode, CommitMode::Fresh);
            if !quota.admits(&self.quota_usage(quota)?, record.size, new_file) {
                return Ok(Commit::OverQuota);
            }
        }
        let media_key = keys::media(key);
        let fresh_blob = fresh_blob(blob, record.size, record.created);
        let content_key = keys::by_sha256(&record.sha256, key);
        let uploader = uploader_entry(key, record);

        // sled may re-run this closure on conflict: it has no side effects
        // outside the transactional trees.
        let outcome = (
            &self.media,
            &self.pending,
            &self.blobs,
            &self.blob_keys,
            &self.by_sha256,
            &self.by_uploader,
            &self.quarantined,
            &self.quarantine_log,
            &self.usage,
        )
            .transaction(
                |(
                    media,
                    pending,
                    blobs,
                    blob_keys,
                    by_sha256,
                    by_uploader,
                    quarantined,
                    log,
                    usage,
                )| {
                    let current: Option<MediaState> = tx_get(media, &media_key)?;
                    match (mode, current) {
                        (CommitMode::Fresh, Some(_)) => return Ok(Commit::Taken),
                        (CommitMode::Fresh, None) => {}
                        (CommitMode::Reserved { .. }, None | Some(MediaState::Deleted { .. })) => {
                            return Ok(Commit::NotReserved);
                        }
                        (CommitMode::Reserved { .. }, Some(MediaState::Complete(_))) => {
                            return Ok(Commit::AlreadyHasContent);
                        }
                        (CommitMode::Reserved { owner, now }, Some(MediaState::Pending(p))) => {
                            if p.expires <= *now {
                                return Ok(Commit::NotReserved);
                            }
                            if &p.owner != owner {
                                return Ok(Commit::NotOwner);
                            }
                            pending.remove(keys::pending(&p.owner, key))?;
                        }
                    }
                    let deduplicated = attach_blob(blobs, blob_keys, &record.sha256, &fresh_blob)?;
                    let mut stored = record.clone();
                    // Content quarantined as such arrives quarantined.
                    if let Some(content) =
                        tx_get::<QuarantinedContent>(quarantined, &record.sha256.0)?
                    {
                        stored.quarantined = true;
                        stored.quarantined_by = Some(content.by);
                        catalog::log_change(log, key, true)?;
                    }
                    let value = codec::encode(&MediaState::Complete(stored)).map_err(abort)?;
                    media.insert(media_key.as_slice(), value)?;
                    by_sha256.insert(content_key.as_slice(), &[][..])?;
                    if let Some((entry, size)) = &uploader {
                        by_uploader.insert(entry.as_slice(), &size[..])?;
                    }
                    count_usage(usage, key, record, true)?;
                    Ok(Commit::Done { deduplicated })
                },
            );
        flatten(outcome)
    }

    fn get(&self, key: &MediaKey) -> Result<Option<MediaState>, RepoError> {
        Self::decode_state(self.media.get(keys::media(key))?)
    }

    pub fn lookup(&self, key: &MediaKey) -> Result<Lookup, RepoError> {
        Ok(match self.get(key)? {
            None | Some(MediaState::Deleted { .. }) => Lookup::Missing,
            Some(MediaState::Pending(pending)) => Lookup::Pending(pending),
            Some(MediaState::Complete(record)) => {
                let blob = self.blob(&record.sha256)?;
                Lookup::Complete { record, blob }
            }
        })
    }

    /// Removes complete media and its thumbnails, releasing their blobs.
    pub fn delete(&self, key: &MediaKey, tombstone: bool) -> Result<Deletion, RepoError> {
        let _thumbs = self
            .thumb_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut thumb_keys = Vec::new();
        for entry in self.thumbs.scan_prefix(keys::thumb_prefix(key)) {
            thumb_keys.push(entry?.0);
        }
        let media_key = keys::media(key);
        let tombstone_value = codec::encode(&MediaState::Deleted {
            at: UnixMillis::now(),
        })?;
        let outcome = (
            &self.media,
            &self.thumbs,
            &self.blobs,
            &self.blob_keys,
            &self.unlinked,
            &self.deleted,
            &self.by_sha256,
            &self.by_uploader,
            &self.usage,
        )
            .transaction(
                |(
                    media,
                    thumbs,
                    blobs,
                    blob_keys,
                    unlinked,
                    deleted,
                    by_sha256,
                    by_uploader,
                    usage,
                )| {
                    let Some(MediaState::Complete(record)) =
                        tx_get::<MediaState>(media, &media_key)?
                    else {
                        return Ok(Deletion::Missing);
                    };
                    by_sha256.remove(keys::by_sha256(&record.sha256, key))?;
                    if let Some((entry, _)) = uploader_entry(key, &record) {
                        by_uploader.remove(entry)?;
                    }
                    count_usage(usage, key, &record, false)?;
                    let mut released = Vec::new();
                    for thumb_key in &thumb_keys {
                        if let Some(thumb) = tx_get::<ThumbRecord>(thumbs, thumb_key)? {
                            thumbs.remove(thumb_key)?;
                            release_blob(blobs, blob_keys, unlinked, &thumb.sha256, &mut released)?;
                        }
                    }
                    release_blob(blobs, blob_keys, unlinked, &record.sha256, &mut released)?;
                    if tombstone {
                        media.insert(media_key.as_slice(), tombstone_value.as_slice())?;
                        deleted.insert(media_key.as_slice(), &[][..])?;
                    } else {
                        media.remove(media_key.as_slice())?;
                    }
                    Ok(Deletion::Deleted { unlinked: released })
                },
            );
        flatten(outcome)
    }

    pub fn thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<StoredThumb>, RepoError> {
        let Some(found) = self.thumbs.get(keys::thumb(key, size))? else {
            return Ok(None);
        };
        let record: ThumbRecord = codec::decode(&found)?;
        let blob = self
            .blob(&record.sha256)?
            .ok_or(RepoError::Inconsistent("thumbnail record without its blob"))?;
        Ok(Some(StoredThumb { record, blob }))
    }

    pub fn commit_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError> {
        let _thumbs = self
            .thumb_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let thumb_key = keys::thumb(key, size);
        let media_key = keys::media(key);
        let value = codec::encode(record)?;
        let fresh_blob = fresh_blob(blob, record.size, record.created);
        let outcome = (&self.media, &self.thumbs, &self.blobs, &self.blob_keys).transaction(
            |(media, thumbs, blobs, blob_keys)| {
                if !matches!(
                    tx_get::<MediaState>(media, &media_key)?,
                    Some(MediaState::Complete(_))
                ) {
                    return Ok(CommitThumb::MediaGone);
                }
                if let Some(existing) = tx_get::<ThumbRecord>(thumbs, &thumb_key)? {
                    let blob =
                        tx_get::<BlobRecord>(blobs, &existing.sha256.0)?.ok_or_else(|| {
                            abort(RepoError::Inconsistent("thumbnail record without its blob"))
                        })?;
                    return Ok(CommitThumb::Exists(StoredThumb {
                        record: existing,
                        blob,
                    }));
                }
                let deduplicated = attach_blob(blobs, blob_keys, &record.sha256, &fresh_blob)?;
                thumbs.insert(thumb_key.as_slice(), value.as_slice())?;
                let blob = tx_get::<BlobRecord>(blobs, &record.sha256.0)?
                    .ok_or_else(|| abort(RepoError::Inconsistent("blob vanished in commit")))?;
                Ok(CommitThumb::Done {
                    deduplicated,
                    stored: StoredThumb {
                        record: record.clone(),
                        blob,
                    },
                })
            },
        );
        flatten(outcome)
    }
}
