//! `storage sync`: move every blob of one datastore to another while the
//! server keeps serving. Each blob is copied, its SHA-256 checked against the
//! record (and, with `verify`, re-read from the target), then the record is
//! re-pointed in one transaction that only applies if nothing moved it
//! meanwhile. Readers find the bytes wherever the record says; a run that is
//! interrupted resumes where it stopped, because moved blobs are no longer
//! in the source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MediaError, MediaService, ports::BlobRecord};
use crate::{
    ids::{BlobKey, DatastoreId, Sha256Digest},
    storage::{BlobStore, StorageError, digest},
};

/// Readers that looked a record up just before it moved have opened the old
/// object well within this; only then is the source deleted.
const SOURCE_DELETE_GRACE: Duration = Duration::from_secs(2);
const BATCH: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub delete_source: bool,
    #[serde(default)]
    pub verify: bool,
}

/// Where a run stands; the last one is the final report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncProgress {
    /// Blobs in the source when the run started.
    pub total: u64,
    pub done: u64,
    pub moved: u64,
    pub bytes: u64,
    /// Records that changed during the copy (deleted, or moved by someone else).
    pub skipped: u64,
    pub failed: u64,
    pub deleted_sources: u64,
    /// One line per failed blob.
    pub errors: Vec<String>,
    pub finished: bool,
}

/// Why one blob was not moved.
#[derive(Debug, thiserror::Error)]
enum MoveFailure {
    #[error("read: {0}")]
    Read(#[source] StorageError),
    #[error("write: {0}")]
    Write(#[source] StorageError),
    #[error("the source's bytes do not match their SHA-256; left in place")]
    SourceCorrupt,
    #[error("verify: the copy differs from the source")]
    CopyDiffers,
    #[error("verify: {0}")]
    Verify(String),
    #[error("metadata: {0}")]
    Metadata(#[source] super::RepoError),
}

enum Moved {
    Yes,
    Changed,
}

impl MediaService {
    /// Runs a sync. `progress` is called after every blob; returning false stops
    /// the run early (the CLI went away); it resumes on the next run.
    pub async fn sync(
        &self,
        request: &SyncRequest,
        mut progress: impl FnMut(&SyncProgress) -> bool + Send,
    ) -> Result<SyncProgress, MediaError> {
        let from = DatastoreId(request.from.clone());
        let to = DatastoreId(request.to.clone());
        if from == to {
            return Err(MediaError::Invalid(
                "--from and --to are the same datastore".to_owned(),
            ));
        }
        let source = self.inner.stores.get(&from)?.clone();
        let target = self.inner.stores.get(&to)?.clone();
        if target.kinds().is_empty() {
            return Err(MediaError::Invalid(format!(
                "datastore {to} is read-only (no kinds)"
            )));
        }
        let mut report = SyncProgress {
            total: self.inner.meta.blobs.count_blobs_in(&from).await?,
            ..SyncProgress::default()
        };
        let mut cursor: Option<BlobKey> = None;
        let mut to_delete = Vec::new();
        'batches: loop {
            let batch = self
                .inner
                .meta
                .blobs
                .blobs_in(&from, cursor.as_ref(), BATCH)
                .await?;
            let Some((_, last)) = batch.last() else { break };
            cursor = Some(last.key.clone());
            for (digest, record) in batch {
                match self
                    .move_one(&source, &target, &digest, &record, request.verify)
                    .await
                {
                    Ok(Moved::Yes) => {
                        report.moved += 1;
                        report.bytes += record.size;
                        if request.delete_source {
                            to_delete.push(record.key.clone());
                        }
                    }
                    Ok(Moved::Changed) => report.skipped += 1,
                    Err(why) => {
                        report.failed += 1;
                        report.errors.push(format!(
                            "sha256:{} ({}): {why}",
                            digest.to_hex(),
                            record.key.as_str()
                        ));
                    }
                }
                report.done += 1;
                if !progress(&report) {
                    break 'batches;
                }
            }
        }
        if !to_delete.is_empty() {
            tokio::time::sleep(SOURCE_DELETE_GRACE).await;
            for key in to_delete {
                match source.delete(&key).await {
                    Ok(()) => report.deleted_sources += 1,
                    Err(e) => report
                        .errors
                        .push(format!("{}: source not deleted: {e}", key.as_str())),
                }
            }
        }
        report.finished = true;
        progress(&report);
        Ok(report)
    }

    async fn move_one(
        &self,
        source: &BlobStore,
        target: &BlobStore,
        digest: &Sha256Digest,
        record: &BlobRecord,
        verify: bool,
    ) -> Result<Moved, MoveFailure> {
        let _ticket = self
            .writing(target.id(), &record.key)
            .await
            .map_err(MoveFailure::Metadata)?;
        let stream = source
            .open(&record.key, None)
            .await
            .map_err(MoveFailure::Read)?;
        let (stream, tap) = digest::tap(stream);
        let written = target
            .put_stream(&record.key, stream)
            .await
            .map_err(MoveFailure::Write)?;
        let discard = |why: MoveFailure| async move {
            let _ = target.delete(&record.key).await;
            Err::<Moved, MoveFailure>(why)
        };
        if written != record.size || tap.finish().1 != *digest {
            return discard(MoveFailure::SourceCorrupt).await;
        }
        if verify {
            let reread = match target.open(&record.key, None).await {
                Ok(stream) => digest::digest_stream(stream)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match reread {
                Ok((size, read_digest)) if size == record.size && read_digest == *digest => {}
                Ok(_) => return discard(MoveFailure::CopyDiffers).await,
                Err(e) => return discard(MoveFailure::Verify(e)).await,
            }
        }
        let switched = self
            .inner
            .meta
            .blobs
            .move_blob(
                digest,
                (source.id(), &record.key),
                (target.id(), &record.key),
            )
            .await
            .map_err(MoveFailure::Metadata)?;
        if switched {
            Ok(Moved::Yes)
        } else {
            let _ = target.delete(&record.key).await;
            Ok(Moved::Changed)
        }
    }
}
