//! Background sweeps: expired async-upload ids, and objects in a datastore
//! that no blob record points at (left by a crash or a lost cleanup).

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::{MediaError, MediaService};
use crate::{
    ids::{DatastoreId, UnixMillis},
    storage::ListedBlob,
};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_pending: u64,
    pub orphan_blobs: u64,
}

const BATCH: usize = 256;

impl MediaService {
    /// Objects in any datastore that no blob record points at, and that are
    /// not being written right now (whatever their age).
    pub async fn orphans(&self) -> Result<Vec<(DatastoreId, ListedBlob)>, MediaError> {
        let mut found = Vec::new();
        for store in self.inner.stores.iter() {
            let mut listed = store.list().try_chunks(BATCH);
            while let Some(batch) = listed.next().await {
                // In-flight first, then known: an upload leaves the in-flight
                // set only after its commit, so a key that is in neither at
                // these two moments is a true orphan.
                let batch: Vec<ListedBlob> = batch
                    .map_err(|e| e.1)?
                    .into_iter()
                    .filter(|b| !self.is_in_flight(store.id(), &b.key))
                    .collect();
                let id = store.id().clone();
                let unknown = self
                    .inner
                    .repo
                    .blocking(move |r| {
                        let mut unknown = Vec::new();
                        for blob in batch {
                            if !r.blob_key_known(&id, &blob.key)? {
                                unknown.push((id.clone(), blob));
                            }
                        }
                        Ok(unknown)
                    })
                    .await?;
                found.extend(unknown);
            }
        }
        Ok(found)
    }

    /// One full sweep. Safe to run while uploads are in progress: blobs being
    /// written are skipped, and so is anything younger than `orphan_grace`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn sweep(&self) -> Result<SweepReport, MediaError> {
        let mut report = SweepReport::default();
        loop {
            let now = UnixMillis::now();
            let expired = self
                .inner
                .repo
                .blocking(move |r| r.expired_pending(now, BATCH))
                .await?;
            if expired.is_empty() {
                break;
            }
            let n = expired.len();
            let removed = self
                .inner
                .repo
                .blocking(move |r| {
                    let mut removed = 0;
                    for key in &expired {
                        removed += u64::from(r.remove_expired_pending(key, now)?);
                    }
                    r.flush()?;
                    Ok(removed)
                })
                .await?;
            report.expired_pending += removed;
            if n < BATCH {
                break;
            }
        }

        let cutoff = SystemTime::now()
            .checked_sub(self.inner.config.orphan_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (store, orphan) in self.orphans().await? {
            if orphan.last_modified > cutoff {
                continue;
            }
            let store = self.inner.stores.get(&store)?;
            store.delete(&orphan.key).await?;
            tracing::info!(datastore = %store.id(), key = orphan.key.as_str(), "removed orphaned blob");
            report.orphan_blobs += 1;
        }
        if report != SweepReport::default() {
            tracing::info!(?report, "sweep finished");
        }
        Ok(report)
    }
}
