//! `SledRepo`: the embedded default metadata store, an adapter of the
//! metadata ports. Engine calls run on the blocking pool; commits that must
//! be durable share one flush with concurrent commits (group commit).

mod backup;
mod codec;
mod flush;
mod keys;
mod trees;

use std::{
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use async_trait::async_trait;

use self::{flush::GroupFlush, trees::Trees};
use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        Accesses, BackupReport, BlobIndex, BlobRecord, Catalog, ClaimRecord, Commit, CommitMode,
        CommitThumb, Counts, DatabaseIdentity, Deletion, Housekeeping, Lookup, MediaPage,
        MediaPageQuery, MediaRecord, MediaRecords, NewBlob, PendingRecord, QuarantineChange,
        QuarantineEvent, QuarantinedContent, Quota, RepoError, Reserve, Reserved, StoredThumb,
        ThumbRecord, ThumbSize, Transfer, Unlinked, Usage, UserUsage,
    },
};

/// Cheap to clone; every clone is the same open database.
#[derive(Clone)]
pub struct SledRepo {
    trees: Arc<Trees>,
    group: Arc<GroupFlush>,
    /// Engine calls that may write hold it shared; a backup holds it alone,
    /// so the copy it takes is of one moment.
    gate: Arc<RwLock<()>>,
}

impl SledRepo {
    /// Opens (or creates) the database under `dir`. A lock still held by a
    /// previous instance that is shutting down is waited for, briefly.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, RepoError> {
        Ok(Self {
            trees: Arc::new(Trees::open(dir, cache_bytes)?),
            group: Arc::default(),
            gate: Arc::default(),
        })
    }

    /// Restores a backup made by [`Transfer::backup`] into `dir`, which
    /// must hold no database; open it with [`Self::open`] afterwards.
    pub fn restore(
        backup: &Path,
        dir: &Path,
    ) -> Result<crate::media::records::RestoreReport, RepoError> {
        backup::restore(backup, dir, Trees::LAYOUT)
    }

    /// Whether every handle has been dropped, so the database is closed
    /// and another instance (or a restart in this process) may open it.
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.trees);
        move || weak.strong_count() == 0
    }

    async fn run<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        F: FnOnce(&Trees) -> Result<T, RepoError> + Send + 'static,
        T: Send + 'static,
    {
        let (trees, gate) = (Arc::clone(&self.trees), Arc::clone(&self.gate));
        tokio::task::spawn_blocking(move || {
            let _shared = gate.read().unwrap_or_else(PoisonError::into_inner);
            f(&trees)
        })
        .await
        .map_err(RepoError::backend)?
    }

    /// Runs a point read right here, on the caller's thread: a lookup of
    /// one key in sled's page cache takes microseconds, less than the trip
    /// to the blocking pool would (only the request path's hottest reads
    /// come this way; scans and writes go through [`Self::run`]).
    fn read<T>(&self, f: impl FnOnce(&Trees) -> Result<T, RepoError>) -> Result<T, RepoError> {
        f(&self.trees)
    }

    /// Runs `f`, then makes its writes durable when `durable` says they
    /// need it, sharing the flush with concurrent callers.
    async fn run_durably<T, F, D>(&self, f: F, durable: D) -> Result<T, RepoError>
    where
        F: FnOnce(&Trees) -> Result<T, RepoError> + Send + 'static,
        D: FnOnce(&T) -> bool + Send + 'static,
        T: Send + 'static,
    {
        let trees = Arc::clone(&self.trees);
        let group = Arc::clone(&self.group);
        let gate = Arc::clone(&self.gate);
        tokio::task::spawn_blocking(move || {
            let out = {
                let _shared = gate.read().unwrap_or_else(PoisonError::into_inner);
                f(&trees)?
            };
            if durable(&out) {
                group.flush(|| trees.flush())?;
            }
            Ok(out)
        })
        .await
        .map_err(RepoError::backend)?
    }
}

#[async_trait]
impl MediaRecords for SledRepo {
    async fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
        quota: Option<&Quota>,
    ) -> Result<Reserve, RepoError> {
        let (key, pending, quota) = (key.clone(), pending.clone(), quota.cloned());
        self.run_durably(
            move |t| t.reserve(&key, &pending, max_pending, quota.as_ref()),
            |outcome| matches!(outcome, Reserve::Done),
        )
        .await
    }

    async fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
        quota: Option<&Quota>,
    ) -> Result<Commit, RepoError> {
        let (key, record, blob, mode) = (key.clone(), record.clone(), blob.clone(), mode.clone());
        let quota = quota.cloned();
        self.run_durably(
            move |t| t.commit(&key, &record, &blob, &mode, quota.as_ref()),
            |outcome| matches!(outcome, Commit::Done { .. }),
        )
        .await
    }

    async fn lookup(&self, key: &MediaKey) -> Result<Lookup, RepoError> {
        self.read(|t| t.lookup(key))
    }

    async fn delete(&self, key: &MediaKey, tombstone: bool) -> Result<Deletion, RepoError> {
        let key = key.clone();
        self.run_durably(
            move |t| t.delete(&key, tombstone),
            |outcome| matches!(outcome, Deletion::Deleted { .. }),
        )
        .await
    }

    async fn thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<StoredThumb>, RepoError> {
        self.read(|t| t.thumbnail(key, size))
    }

    async fn commit_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError> {
        let (key, size, record, blob) = (key.clone(), *size, record.clone(), blob.clone());
        self.run_durably(
            move |t| t.commit_thumbnail(&key, &size, &record, &blob),
            |_| true,
        )
        .await
    }
}

#[async_trait]
impl BlobIndex for SledRepo {
    async fn blob(&self, digest: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError> {
        let digest = *digest;
        self.run(move |t| t.blob(&digest)).await
    }

    async fn move_blob(
        &self,
        digest: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError> {
        let digest = *digest;
        let (from_store, from_key) = (from.0.clone(), from.1.clone());
        let (to_store, to_key) = (to.0.clone(), to.1.clone());
        self.run_durably(
            move |t| t.move_blob(&digest, (&from_store, &from_key), (&to_store, &to_key)),
            |moved| *moved,
        )
        .await
    }

    async fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let (datastore, after) = (datastore.clone(), after.cloned());
        self.run(move |t| t.blobs_in(&datastore, after.as_ref(), limit))
            .await
    }

    async fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError> {
        let datastore = datastore.clone();
        self.run(move |t| t.count_blobs_in(&datastore)).await
    }

    async fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let after = after.copied();
        self.run(move |t| t.blobs_after(after.as_ref(), limit))
            .await
    }

    async fn unlinked(&self, limit: usize) -> Result<Vec<Unlinked>, RepoError> {
        self.run(move |t| t.unlinked(limit)).await
    }

    async fn forget_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        let object = object.clone();
        self.run_durably(move |t| t.forget_unlinked(&object), |()| true)
            .await
    }

    async fn unknown_keys(
        &self,
        datastore: &DatastoreId,
        keys: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError> {
        let datastore = datastore.clone();
        self.run(move |t| t.unknown_keys(&datastore, keys)).await
    }
}

#[async_trait]
impl Catalog for SledRepo {
    async fn quarantine(
        &self,
        targets: &[MediaKey],
        change: &QuarantineChange,
    ) -> Result<u64, RepoError> {
        let (targets, change) = (targets.to_vec(), change.clone());
        self.run_durably(move |t| t.quarantine(&targets, &change), |_| true)
            .await
    }

    async fn quarantined_content(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<QuarantinedContent>, RepoError> {
        let digest = *digest;
        self.run(move |t| t.quarantined_content(&digest)).await
    }

    async fn set_protected(&self, key: &MediaKey, protected: bool) -> Result<bool, RepoError> {
        let key = key.clone();
        self.run_durably(move |t| t.set_protected(&key, protected), |found| *found)
            .await
    }

    async fn uploads(&self, user: &str, query: &MediaPageQuery) -> Result<MediaPage, RepoError> {
        let (user, query) = (user.to_owned(), *query);
        self.run(move |t| t.uploads(&user, &query)).await
    }

    async fn media_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, MediaRecord)>, RepoError> {
        let after = after.cloned();
        self.run(move |t| t.media_after(after.as_ref(), limit))
            .await
    }

    async fn usage(
        &self,
        from: Option<UnixMillis>,
        until: Option<UnixMillis>,
    ) -> Result<Vec<Usage>, RepoError> {
        self.run(move |t| t.usage(from, until)).await
    }

    async fn quarantine_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineEvent>, RepoError> {
        self.run(move |t| t.quarantine_log(after, limit)).await
    }

    async fn quarantine_log_head(&self) -> Result<u64, RepoError> {
        self.run(Trees::quarantine_log_head).await
    }

    async fn usage_of(&self, user: &str, since: &[UnixMillis]) -> Result<UserUsage, RepoError> {
        let (user, since) = (user.to_owned(), since.to_vec());
        self.run(move |t| t.usage_of(&user, &since)).await
    }

    async fn touch(&self, accesses: &Accesses) -> Result<(), RepoError> {
        let accesses = accesses.clone();
        self.run(move |t| t.touch(&accesses)).await
    }

    async fn thumbnails_after(
        &self,
        after: Option<&(MediaKey, ThumbSize)>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, ThumbSize, ThumbRecord)>, RepoError> {
        let after = after.cloned();
        self.run(move |t| t.thumbnails_after(after.as_ref(), limit))
            .await
    }

    async fn delete_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<Vec<Unlinked>>, RepoError> {
        let (key, size) = (key.clone(), *size);
        self.run_durably(move |t| t.delete_thumbnail(&key, &size), Option::is_some)
            .await
    }
}

#[async_trait]
impl Housekeeping for SledRepo {
    async fn expire_pending(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MediaKey>, RepoError> {
        self.run(move |t| t.expire_pending(now, limit)).await
    }

    async fn counts(&self) -> Result<Counts, RepoError> {
        self.run(|t| Ok(t.counts())).await
    }

    async fn pending_count(&self) -> Result<u64, RepoError> {
        self.run(|t| Ok(t.pending_count())).await
    }

    async fn identity(&self) -> Result<DatabaseIdentity, RepoError> {
        self.run(Trees::identity).await
    }

    async fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError> {
        let datastore = datastore.clone();
        self.run(move |t| t.claim(&datastore)).await
    }

    async fn put_claim(
        &self,
        datastore: &DatastoreId,
        claim: &ClaimRecord,
    ) -> Result<(), RepoError> {
        let (datastore, claim) = (datastore.clone(), claim.clone());
        self.run(move |t| t.put_claim(&datastore, &claim)).await
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.run(Trees::ping).await
    }

    async fn close(&self) -> Result<(), RepoError> {
        self.run(Trees::flush).await
    }
}

#[async_trait]
impl Transfer for SledRepo {
    async fn reserved_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, Reserved)>, RepoError> {
        let after = after.cloned();
        self.run(move |t| t.reserved_after(after.as_ref(), limit))
            .await
    }

    async fn put_reserved(&self, key: &MediaKey, reserved: &Reserved) -> Result<bool, RepoError> {
        let (key, reserved) = (key.clone(), reserved.clone());
        self.run_durably(move |t| t.put_reserved(&key, &reserved), |_| true)
            .await
    }

    async fn quarantined_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, QuarantinedContent)>, RepoError> {
        let after = after.copied();
        self.run(move |t| t.quarantined_after(after.as_ref(), limit))
            .await
    }

    async fn put_quarantined(
        &self,
        digest: &Sha256Digest,
        content: &QuarantinedContent,
    ) -> Result<(), RepoError> {
        let (digest, content) = (*digest, content.clone());
        self.run_durably(move |t| t.put_quarantined(&digest, &content), |()| true)
            .await
    }

    async fn claims(&self) -> Result<Vec<(DatastoreId, ClaimRecord)>, RepoError> {
        self.run(Trees::claims).await
    }

    async fn adopt_identity(&self, identity: &DatabaseIdentity) -> Result<bool, RepoError> {
        let identity = identity.clone();
        self.run(move |t| t.adopt_identity(&identity)).await
    }

    async fn put_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        let object = object.clone();
        self.run_durably(move |t| t.put_unlinked(&object), |()| true)
            .await
    }

    async fn backup(&self, out: &Path) -> Result<BackupReport, RepoError> {
        let (trees, gate, out) = (
            Arc::clone(&self.trees),
            Arc::clone(&self.gate),
            out.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let _alone = gate.write().unwrap_or_else(PoisonError::into_inner);
            trees.backup(&out)
        })
        .await
        .map_err(RepoError::backend)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sled adapter keeps every promise of the metadata ports.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract_suite() {
        crate::repo::contract::run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let repo = SledRepo::open(dir.path(), 8 << 20).unwrap();
            (dir, Arc::new(repo))
        })
        .await;
    }
}
