//! Background sweeps: expired async-upload ids, objects in a datastore that
//! no blob record points at (left by a crash or a lost cleanup), and staging
//! files of writes a crash interrupted. Only datastores whose ownership
//! marker names this database are swept, and only objects written since it
//! claimed them. Listing is incremental: one page of the store at a time.

use std::{collections::HashSet, time::SystemTime};

use futures::{StreamExt, TryStreamExt, stream::BoxStream};

use super::{MediaError, MediaService};
use crate::{
    ids::{BlobKey, DatastoreId, UnixMillis},
    storage::{BlobStore, ListedBlob, StorageError},
};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_pending: u64,
    /// Objects of deleted media whose removal had failed or was cut off.
    pub unlinked_objects: u64,
    pub orphan_blobs: u64,
    pub staging_files: u64,
    /// Datastores left alone because their ownership could not be proven.
    pub stores_skipped: u64,
}

/// Objects looked up per metadata round trip; S3 lists 1,000 per request.
const BATCH: usize = 256;

/// Walks one datastore's listing a page at a time and yields the objects no
/// blob record points at.
pub(super) struct OrphanScan {
    service: MediaService,
    store: DatastoreId,
    listed: BoxStream<'static, Result<Vec<ListedBlob>, StorageError>>,
    /// Objects listed so far.
    count: u64,
}

impl OrphanScan {
    /// How many objects the listing has yielded so far.
    pub(super) fn listed(&self) -> u64 {
        self.count
    }

    /// The next orphans found (possibly none), or `None` at the end.
    pub(super) async fn next_batch(&mut self) -> Result<Option<Vec<ListedBlob>>, MediaError> {
        let Some(batch) = self.listed.next().await else {
            return Ok(None);
        };
        let batch = batch?;
        self.count += batch.len() as u64;
        // In-flight first, then known: an upload leaves the in-flight set
        // only after its commit, so a key that is in neither at these two
        // moments is a true orphan.
        let batch: Vec<ListedBlob> = batch
            .into_iter()
            .filter(|b| !self.service.is_in_flight(&self.store, &b.key))
            .collect();
        let keys = batch.iter().map(|b| b.key.clone()).collect();
        let unknown: HashSet<BlobKey> = self
            .service
            .inner
            .meta
            .blobs
            .unknown_keys(&self.store, keys)
            .await?
            .into_iter()
            .collect();
        Ok(Some(
            batch
                .into_iter()
                .filter(|b| unknown.contains(&b.key))
                .collect(),
        ))
    }
}

impl MediaService {
    /// A scan of `store` for objects no blob record points at.
    pub(super) fn orphan_scan(&self, store: &BlobStore) -> OrphanScan {
        OrphanScan {
            service: self.clone(),
            store: store.id().clone(),
            listed: store.list().try_chunks(BATCH).map_err(|e| e.1).boxed(),
            count: 0,
        }
    }

    /// Since when `store` is provably this database's (its marker names us):
    /// only objects written after that may ever be deleted as orphans.
    pub(super) async fn deletable_since(
        &self,
        store: &BlobStore,
    ) -> Result<SystemTime, MediaError> {
        let since = self.owned_since(store).await?;
        Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(since.0))
    }

    /// One full sweep. Safe to run while uploads are in progress: blobs being
    /// written are skipped, and so is anything younger than `orphan_grace`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn sweep(&self) -> Result<SweepReport, MediaError> {
        // One instance sweeps at a time; the others skip this round.
        let Some(_lease) = self.inner.meta.housekeeping.lease("sweep").await? else {
            tracing::debug!("another instance is sweeping");
            return Ok(SweepReport::default());
        };
        let mut report = SweepReport {
            expired_pending: self.sweep_pending().await?,
            unlinked_objects: self.sweep_unlinked().await?,
            ..SweepReport::default()
        };
        let cutoff = SystemTime::now()
            .checked_sub(self.inner.config.orphan_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for store in self.inner.stores.iter() {
            let since = match self.deletable_since(store).await {
                Ok(since) => since,
                Err(error) => {
                    tracing::error!(datastore = %store.id(), %error, "not sweeping this datastore");
                    report.stores_skipped += 1;
                    continue;
                }
            };
            let deletable = |modified: SystemTime| modified <= cutoff && modified >= since;
            let mut scan = self.orphan_scan(store);
            while let Some(orphans) = scan.next_batch().await? {
                for orphan in orphans.into_iter().filter(|o| deletable(o.last_modified)) {
                    store.delete(&orphan.key).await?;
                    tracing::info!(datastore = %store.id(), key = orphan.key.as_str(), "removed orphaned blob");
                    report.orphan_blobs += 1;
                }
            }
            let stale: Vec<_> = store
                .stale_staging(cutoff)
                .await?
                .into_iter()
                .filter(|s| deletable(s.last_modified) && !self.is_in_flight(store.id(), &s.key))
                .collect();
            if stale.is_empty() {
                continue;
            }
            // Another instance sharing this directory may be writing it.
            let keys = stale.iter().map(|s| s.key.clone()).collect();
            let busy: HashSet<BlobKey> = self
                .inner
                .meta
                .housekeeping
                .being_written(store.id(), keys)
                .await?
                .into_iter()
                .collect();
            for staging in stale.into_iter().filter(|s| !busy.contains(&s.key)) {
                store.remove_staging(&staging).await?;
                tracing::info!(datastore = %store.id(), path = %staging.path.display(), "removed an interrupted write's staging file");
                report.staging_files += 1;
            }
        }
        if report != SweepReport::default() {
            tracing::info!(?report, "sweep finished");
        }
        Ok(report)
    }

    /// Removes expired async-upload reservations, a batch at a time.
    async fn sweep_pending(&self) -> Result<u64, MediaError> {
        let mut total = 0;
        loop {
            let removed = self
                .inner
                .meta
                .housekeeping
                .expire_pending(UnixMillis::now(), BATCH)
                .await?;
            total += removed.len() as u64;
            if removed.len() < BATCH {
                return Ok(total);
            }
        }
    }
}
