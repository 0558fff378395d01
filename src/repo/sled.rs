//! `SledRepo`: the embedded default metadata store. Trees are named
//! `<record>_by_<key>` under a versioned directory; a layout change means a new
//! version directory plus a migration, never in-place reinterpretation.

use std::{path::Path, sync::Mutex};

use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
};

use super::{
    BlobRecord, ClaimRecord, Commit, CommitMode, CommitThumb, Counts, DatabaseIdentity,
    MediaRecord, MediaRepo, MediaState, NewBlob, PendingRecord, RepoError, Reserve, ThumbRecord,
    codec, keys,
};
use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    thumbnail::Spec,
};

pub struct SledRepo {
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

fn flatten<T>(result: Result<T, TransactionError<RepoError>>) -> Result<T, RepoError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => RepoError::Sled(e),
    })
}

impl SledRepo {
    /// Bump when the on-disk layout changes; a migration reads the old directory.
    const LAYOUT: &'static str = "v1";

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
        Ok(Self {
            media: db.open_tree("media_by_id")?,
            pending: db.open_tree("pending_by_owner")?,
            blobs: db.open_tree("blobs_by_sha256")?,
            blob_keys: db.open_tree("blobs_by_key")?,
            thumbs: db.open_tree("thumbs_by_media")?,
            meta: db.open_tree("meta_by_name")?,
            reserve_lock: Mutex::new(()),
            db,
        })
    }

    fn decode_state(bytes: Option<sled::IVec>) -> Result<Option<MediaState>, RepoError> {
        Ok(bytes.map(|v| codec::decode(&v)).transpose()?)
    }
}

impl MediaRepo for SledRepo {
    fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
    ) -> Result<Reserve, RepoError> {
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

    fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
    ) -> Result<Commit, RepoError> {
        let media_key = keys::media(key);
        let value = codec::encode(&MediaState::Complete(record.clone()))?;
        let fresh_blob = fresh_blob(blob, record.size, record.created);

        // sled may re-run this closure on conflict: it has no side effects
        // outside the transactional trees.
        let outcome = (&self.media, &self.pending, &self.blobs, &self.blob_keys).transaction(
            |(media, pending, blobs, blob_keys)| {
                let current: Option<MediaState> = tx_get(media, &media_key)?;
                match (mode, current) {
                    (CommitMode::Fresh, Some(_)) => return Ok(Commit::Taken),
                    (CommitMode::Fresh, None) => {}
                    (CommitMode::Reserved { .. }, None) => return Ok(Commit::NotReserved),
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
                media.insert(media_key.as_slice(), value.as_slice())?;
                Ok(Commit::Done { deduplicated })
            },
        );
        flatten(outcome)
    }

    fn get(&self, key: &MediaKey) -> Result<Option<MediaState>, RepoError> {
        Self::decode_state(self.media.get(keys::media(key))?)
    }

    fn set_quarantined(&self, key: &MediaKey, quarantined: bool) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let outcome =
            self.media
                .transaction(|media| match tx_get::<MediaState>(media, &media_key)? {
                    Some(MediaState::Complete(mut record)) => {
                        record.quarantined = quarantined;
                        let value = codec::encode(&MediaState::Complete(record)).map_err(abort)?;
                        media.insert(media_key.as_slice(), value)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                });
        flatten(outcome)
    }

    fn get_thumbnail(
        &self,
        key: &MediaKey,
        spec: &Spec,
        animated: bool,
    ) -> Result<Option<ThumbRecord>, RepoError> {
        Ok(self
            .thumbs
            .get(keys::thumb(key, spec, animated))?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    fn commit_thumbnail(
        &self,
        key: &MediaKey,
        spec: &Spec,
        animated: bool,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError> {
        let thumb_key = keys::thumb(key, spec, animated);
        let value = codec::encode(record)?;
        let fresh_blob = fresh_blob(blob, record.size, record.created);
        let outcome = (&self.thumbs, &self.blobs, &self.blob_keys).transaction(
            |(thumbs, blobs, blob_keys)| {
                if let Some(existing) = tx_get::<ThumbRecord>(thumbs, &thumb_key)? {
                    return Ok(CommitThumb::Exists(existing));
                }
                let deduplicated = attach_blob(blobs, blob_keys, &record.sha256, &fresh_blob)?;
                thumbs.insert(thumb_key.as_slice(), value.as_slice())?;
                Ok(CommitThumb::Done { deduplicated })
            },
        );
        flatten(outcome)
    }

    fn blob(&self, sha256: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError> {
        Ok(self
            .blobs
            .get(sha256.0)?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let prefix = keys::blob_key_prefix(datastore);
        let start = match after {
            Some(key) => {
                let mut k = keys::blob_key(datastore, key);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for entry in self.blob_keys.range(start..) {
            let (key, digest) = entry?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let mut bytes = [0u8; 32];
            if digest.len() == 32 {
                bytes.copy_from_slice(&digest);
                let digest = Sha256Digest(bytes);
                if let Some(record) = self.blob(&digest)? {
                    out.push((digest, record));
                }
            }
        }
        Ok(out)
    }

    fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError> {
        let mut n = 0;
        for entry in self.blob_keys.scan_prefix(keys::blob_key_prefix(datastore)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let iter = match after {
            Some(d) => self.blobs.range((
                std::ops::Bound::Excluded(d.0.to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.blobs.iter(),
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (key, value) = entry?;
            if key.len() == 32 {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&key);
                out.push((Sha256Digest(bytes), codec::decode(&value)?));
            }
        }
        Ok(out)
    }

    fn move_blob(
        &self,
        digest: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError> {
        let old_key = keys::blob_key(from.0, from.1);
        let new_key = keys::blob_key(to.0, to.1);
        let outcome =
            (&self.blobs, &self.blob_keys).transaction(|(blobs, blob_keys)| {
                match tx_get::<BlobRecord>(blobs, &digest.0)? {
                    Some(mut record) if &record.datastore == from.0 && &record.key == from.1 => {
                        record.datastore = to.0.clone();
                        record.key = to.1.clone();
                        blobs.insert(&digest.0[..], codec::encode(&record).map_err(abort)?)?;
                        blob_keys.remove(old_key.as_slice())?;
                        blob_keys.insert(new_key.as_slice(), &digest.0[..])?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            });
        flatten(outcome)
    }

    fn blob_key_known(&self, datastore: &DatastoreId, key: &BlobKey) -> Result<bool, RepoError> {
        Ok(self
            .blob_keys
            .contains_key(keys::blob_key(datastore, key))?)
    }

    fn expired_pending(&self, now: UnixMillis, limit: usize) -> Result<Vec<MediaKey>, RepoError> {
        let mut out = Vec::new();
        for entry in &self.pending {
            let (key, value) = entry?;
            let record: PendingRecord = codec::decode(&value)?;
            if record.expires <= now {
                if let Some(media) = keys::parse_pending(&key) {
                    out.push(media);
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn remove_expired_pending(&self, key: &MediaKey, now: UnixMillis) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let outcome = (&self.media, &self.pending).transaction(|(media, pending)| {
            match tx_get::<MediaState>(media, &media_key)? {
                Some(MediaState::Pending(p)) if p.expires <= now => {
                    media.remove(media_key.as_slice())?;
                    pending.remove(keys::pending(&p.owner, key))?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        });
        flatten(outcome)
    }

    fn counts(&self) -> Result<Counts, RepoError> {
        let pending = self.pending.len() as u64;
        Ok(Counts {
            media: (self.media.len() as u64).saturating_sub(pending),
            pending,
            blobs: self.blobs.len() as u64,
        })
    }

    fn pending_count(&self) -> Result<u64, RepoError> {
        Ok(self.pending.len() as u64)
    }

    fn identity(&self) -> Result<DatabaseIdentity, RepoError> {
        const KEY: &[u8] = b"identity";
        if let Some(found) = self.meta.get(KEY)? {
            return Ok(codec::decode(&found)?);
        }
        let fresh = DatabaseIdentity {
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: UnixMillis::now(),
        };
        // Two first callers race: the first insert wins, both read it back.
        let _ = self
            .meta
            .compare_and_swap(KEY, None::<&[u8]>, Some(codec::encode(&fresh)?))?;
        self.db.flush()?;
        let stored = self
            .meta
            .get(KEY)?
            .ok_or(RepoError::Codec(codec::CodecError::Empty))?;
        Ok(codec::decode(&stored)?)
    }

    fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError> {
        let key = format!("claim/{datastore}");
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    fn put_claim(&self, datastore: &DatastoreId, claim: &ClaimRecord) -> Result<(), RepoError> {
        let key = format!("claim/{datastore}");
        self.meta.insert(key.as_bytes(), codec::encode(claim)?)?;
        self.db.flush()?;
        Ok(())
    }

    fn ping(&self) -> Result<(), RepoError> {
        // A point lookup of a key no record uses (records never start with 0).
        self.media.get([0u8])?;
        Ok(())
    }

    fn flush(&self) -> Result<(), RepoError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Origin;

    fn repo() -> (tempfile::TempDir, SledRepo) {
        let dir = tempfile::tempdir().unwrap();
        let repo = SledRepo::open(dir.path(), 8 << 20).unwrap();
        (dir, repo)
    }

    fn record(sha: u8) -> MediaRecord {
        MediaRecord {
            sha256: Sha256Digest([sha; 32]),
            size: 3,
            content_type: "text/plain".into(),
            upload_name: None,
            uploader: Some("@a:x".into()),
            created: UnixMillis(10),
            origin: Origin::Local,
            requires_auth: true,
            quarantined: false,
        }
    }

    fn key(id: &str) -> MediaKey {
        MediaKey::parse("x", id).unwrap()
    }

    fn blob() -> NewBlob {
        NewBlob {
            datastore: DatastoreId("local".into()),
            key: BlobKey::random(),
        }
    }

    /// Identical content shares one blob; the reference count follows.
    #[test]
    fn commits_deduplicate_by_digest() {
        let (_d, repo) = repo();
        let first = blob();
        assert_eq!(
            repo.commit(&key("a"), &record(1), &first, &CommitMode::Fresh)
                .unwrap(),
            Commit::Done {
                deduplicated: false
            }
        );
        assert_eq!(
            repo.commit(&key("b"), &record(1), &blob(), &CommitMode::Fresh)
                .unwrap(),
            Commit::Done { deduplicated: true }
        );
        assert_eq!(
            repo.commit(&key("a"), &record(2), &blob(), &CommitMode::Fresh)
                .unwrap(),
            Commit::Taken
        );
        let shared = repo.blob(&Sha256Digest([1; 32])).unwrap().unwrap();
        assert_eq!((shared.refs, shared.key), (2, first.key.clone()));
        assert!(repo.blob_key_known(&first.datastore, &first.key).unwrap());
        assert_eq!(
            repo.counts().unwrap(),
            Counts {
                media: 2,
                pending: 0,
                blobs: 1
            }
        );
    }

    /// Blobs are listed per datastore in key order, resumably, and a move
    /// only applies while the record is still where the mover saw it.
    #[test]
    fn blobs_are_listed_per_datastore_and_moved_atomically() {
        let (_d, repo) = repo();
        let mut created = Vec::new();
        for i in 1..=5u8 {
            let b = blob();
            repo.commit(&key(&format!("m{i}")), &record(i), &b, &CommitMode::Fresh)
                .unwrap();
            created.push(b);
        }
        let local = DatastoreId("local".into());
        let other = DatastoreId("s3".into());
        assert_eq!(repo.count_blobs_in(&local).unwrap(), 5);
        let first = repo.blobs_in(&local, None, 2).unwrap();
        let rest = repo.blobs_in(&local, Some(&first[1].1.key), 10).unwrap();
        assert_eq!((first.len(), rest.len()), (2, 3));
        let (digest, rec) = &first[0];
        let to = BlobKey::random();
        assert!(
            repo.move_blob(digest, (&local, &rec.key), (&other, &to))
                .unwrap()
        );
        assert!(
            !repo
                .move_blob(digest, (&local, &rec.key), (&other, &to))
                .unwrap(),
            "stale move refused"
        );
        assert_eq!(repo.count_blobs_in(&local).unwrap(), 4);
        assert_eq!(repo.count_blobs_in(&other).unwrap(), 1);
        assert!(repo.blob_key_known(&other, &to).unwrap());
        assert!(!repo.blob_key_known(&local, &rec.key).unwrap());
        assert_eq!(repo.blob(digest).unwrap().unwrap().datastore, other);
        let all = repo.blobs_after(None, 3).unwrap();
        let more = repo.blobs_after(Some(&all[2].0), 10).unwrap();
        assert_eq!(all.len() + more.len(), 5);
    }

    /// Async upload rules: owner only, once, before expiry.
    #[test]
    fn reserved_commits_check_owner_expiry_and_overwrite() {
        let (_d, repo) = repo();
        let pending = PendingRecord {
            owner: "@a:x".into(),
            created: UnixMillis(0),
            expires: UnixMillis(100),
        };
        assert_eq!(repo.reserve(&key("p"), &pending, 5).unwrap(), Reserve::Done);
        assert_eq!(
            repo.reserve(&key("p"), &pending, 5).unwrap(),
            Reserve::Taken
        );
        let as_b = CommitMode::Reserved {
            owner: "@b:x".into(),
            now: UnixMillis(50),
        };
        let as_a = CommitMode::Reserved {
            owner: "@a:x".into(),
            now: UnixMillis(50),
        };
        let late = CommitMode::Reserved {
            owner: "@a:x".into(),
            now: UnixMillis(100),
        };
        assert_eq!(
            repo.commit(&key("p"), &record(1), &blob(), &as_b).unwrap(),
            Commit::NotOwner
        );
        assert_eq!(
            repo.commit(&key("p"), &record(1), &blob(), &late).unwrap(),
            Commit::NotReserved
        );
        assert_eq!(
            repo.commit(&key("q"), &record(1), &blob(), &as_a).unwrap(),
            Commit::NotReserved
        );
        assert_eq!(
            repo.commit(&key("p"), &record(1), &blob(), &as_a).unwrap(),
            Commit::Done {
                deduplicated: false
            }
        );
        assert_eq!(
            repo.commit(&key("p"), &record(1), &blob(), &as_a).unwrap(),
            Commit::AlreadyHasContent
        );
        assert_eq!(repo.counts().unwrap().pending, 0);
    }

    /// The per-user cap counts only unexpired reservations.
    #[test]
    fn reserve_caps_live_pending_per_owner() {
        let (_d, repo) = repo();
        let at = |created, expires| PendingRecord {
            owner: "@a:x".into(),
            created: UnixMillis(created),
            expires: UnixMillis(expires),
        };
        assert_eq!(
            repo.reserve(&key("a"), &at(0, 50), 2).unwrap(),
            Reserve::Done
        );
        assert_eq!(
            repo.reserve(&key("b"), &at(0, 80), 2).unwrap(),
            Reserve::Done
        );
        assert_eq!(
            repo.reserve(&key("c"), &at(10, 90), 2).unwrap(),
            Reserve::TooManyPending {
                next_expiry: UnixMillis(50)
            }
        );
        // At t=60 the first has expired and no longer counts.
        assert_eq!(
            repo.reserve(&key("c"), &at(60, 90), 2).unwrap(),
            Reserve::Done
        );
        assert_eq!(
            repo.expired_pending(UnixMillis(60), 10).unwrap(),
            vec![key("a")]
        );
        assert!(
            repo.remove_expired_pending(&key("a"), UnixMillis(60))
                .unwrap()
        );
        assert!(
            !repo
                .remove_expired_pending(&key("b"), UnixMillis(60))
                .unwrap()
        );
        assert_eq!(repo.get(&key("a")).unwrap(), None);
    }
}
