//! `storage fsck`: compare metadata with what the datastores hold. Reports
//! orphan objects (no record points at them) and records whose bytes are
//! missing. With `repair`: orphans older than the grace period are deleted,
//! and missing bytes are restored from the hot cache when it holds a copy
//! whose SHA-256 checks out. Nothing else is safe to repair automatically.
//! Repairs touch only datastores whose ownership marker names this database,
//! and never delete objects older than its claim.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{MediaError, MediaService};
use crate::{
    ids::Sha256Digest,
    storage::{StorageError, digest},
};

const BATCH: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FsckRequest {
    #[serde(default)]
    pub repair: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsckReport {
    /// Blob records when the run started (for progress).
    #[serde(default)]
    pub total: u64,
    /// Objects listed in the datastores so far.
    #[serde(default)]
    pub objects_listed: u64,
    pub records_checked: u64,
    /// Bytes of the records checked so far.
    #[serde(default)]
    pub bytes_checked: u64,
    /// `datastore:key` of objects no record points at.
    pub orphans: Vec<String>,
    pub orphans_deleted: u64,
    /// `sha256 in datastore:key` of records whose object is gone.
    pub missing: Vec<String>,
    pub restored_from_cache: u64,
}

/// The counters of an fsck so far, without its growing lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsckProgress {
    pub total: u64,
    pub objects_listed: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    pub orphans: u64,
    pub missing: u64,
}

impl FsckReport {
    pub fn progress(&self) -> FsckProgress {
        FsckProgress {
            total: self.total,
            objects_listed: self.objects_listed,
            records_checked: self.records_checked,
            bytes_checked: self.bytes_checked,
            orphans: self.orphans.len() as u64,
            missing: self.missing.len() as u64,
        }
    }
}

impl MediaService {
    /// Checks metadata against the datastores; with `repair`, fixes what is
    /// safe to fix.
    pub async fn fsck(&self, request: &FsckRequest) -> Result<FsckReport, MediaError> {
        self.fsck_with_progress(request, |_| true).await
    }

    /// [`Self::fsck`], telling `progress` the report so far after every
    /// batch; stops early (with the report so far) when it answers false.
    pub async fn fsck_with_progress(
        &self,
        request: &FsckRequest,
        mut progress: impl FnMut(&FsckReport) -> bool,
    ) -> Result<FsckReport, MediaError> {
        let mut report = FsckReport {
            total: self.inner.meta.housekeeping.counts().await?.blobs,
            ..FsckReport::default()
        };
        if self
            .fsck_orphans(request.repair, &mut report, &mut progress)
            .await?
        {
            self.fsck_records(request.repair, &mut report, &mut progress)
                .await?;
        }
        Ok(report)
    }

    /// Objects no record points at; deleted (when repairing) only if owned
    /// and older than the grace period.
    async fn fsck_orphans(
        &self,
        repair: bool,
        report: &mut FsckReport,
        progress: &mut impl FnMut(&FsckReport) -> bool,
    ) -> Result<bool, MediaError> {
        let cutoff = SystemTime::now()
            .checked_sub(self.config().orphan_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for store in self.inner.stores.iter() {
            // Refuses (with the owner named) before a single object is deleted.
            let since = if repair {
                Some(self.deletable_since(store).await?)
            } else {
                None
            };
            let mut scan = self.orphan_scan(store);
            let before = report.objects_listed;
            while let Some(orphans) = scan.next_batch().await? {
                report.objects_listed = before + scan.listed();
                if !progress(report) {
                    return Ok(false);
                }
                for orphan in orphans {
                    report
                        .orphans
                        .push(format!("{}:{}", store.id(), orphan.key.as_str()));
                    if let Some(since) = since
                        && orphan.last_modified <= cutoff
                        && orphan.last_modified >= since
                    {
                        store.delete(&orphan.key).await?;
                        report.orphans_deleted += 1;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Records whose object is gone; restored (when repairing) from the hot
    /// cache when it holds a copy whose digest checks out.
    async fn fsck_records(
        &self,
        repair: bool,
        report: &mut FsckReport,
        progress: &mut impl FnMut(&FsckReport) -> bool,
    ) -> Result<(), MediaError> {
        let mut after: Option<Sha256Digest> = None;
        loop {
            let batch = self
                .inner
                .meta
                .blobs
                .blobs_after(after.as_ref(), BATCH)
                .await?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(*last);
            if !progress(report) {
                break;
            }
            for (digest, record) in batch {
                report.records_checked += 1;
                report.bytes_checked += record.size;
                let store = self.inner.stores.get(&record.datastore)?;
                match store.head(&record.key).await {
                    Ok(_) => continue,
                    Err(StorageError::NotFound) => {}
                    Err(other) => return Err(other.into()),
                }
                report.missing.push(format!(
                    "sha256:{} in {}:{}",
                    digest.to_hex(),
                    record.datastore,
                    record.key.as_str()
                ));
                if !repair {
                    continue;
                }
                let Some(cached) = (match self.inner.cache.as_ref() {
                    Some(cache) => cache.open(&digest, None).await,
                    None => None,
                }) else {
                    continue;
                };
                let _ticket = self.writing(store.id(), &record.key).await?;
                let (stream, tap) = digest::tap(cached);
                let written = store.put_stream(&record.key, stream).await?;
                if written == record.size && tap.finish().1 == digest {
                    report.restored_from_cache += 1;
                } else {
                    store.delete(&record.key).await?;
                }
            }
        }
        Ok(())
    }
}
