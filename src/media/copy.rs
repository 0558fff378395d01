//! Copying one metadata store into another (`mxmedia db copy`, sled to
//! PostgreSQL and back), with the server stopped. The target takes on the
//! source's identity, so the datastores' ownership markers still name it;
//! a target that belongs to another deployment is refused. Records are
//! committed through the same ports as uploads (reference counts rebuilt as
//! they go), then reserved and retired ids, quarantined content, claims and
//! unlinked objects follow. Idempotent: a second run after an interruption
//! skips what is there. Verified: counts compared, and every record read
//! back from the target.

use serde::Serialize;

use super::{
    MediaError,
    ports::{CommitMode, CommitThumb, Lookup, Metadata, NewBlob},
};
use crate::{
    ids::{MediaKey, Sha256Digest},
    media::ports::{Commit, RepoError},
};

const PAGE: usize = 500;

impl super::MediaService {
    /// A point-in-time copy of the metadata, written to the file `out`
    /// (absolute: it is the server that writes it) while uploads go on.
    pub async fn backup(
        &self,
        out: &std::path::Path,
    ) -> Result<super::records::BackupReport, MediaError> {
        if !out.is_absolute() {
            return Err(MediaError::Invalid(format!(
                "the backup path must be absolute: {}",
                out.display()
            )));
        }
        Ok(self.inner.meta.transfer.backup(out).await?)
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CopyReport {
    pub media: u64,
    pub thumbnails: u64,
    /// Reserved (async uploads waiting) and retired (deleted) ids.
    pub reserved: u64,
    pub quarantined_content: u64,
    pub claims: u64,
    pub unlinked: u64,
    /// Items the target had already (an earlier, interrupted run).
    pub already_there: u64,
    /// Records read back from the target and found equal.
    pub verified: u64,
}

/// Copies everything in `from` into `to`; `progress` hears the report
/// after every page.
pub async fn copy_metadata(
    from: &Metadata,
    to: &Metadata,
    mut progress: impl FnMut(&CopyReport),
) -> Result<CopyReport, MediaError> {
    let mut report = CopyReport::default();
    let identity = from.housekeeping.identity().await?;
    if !to.transfer.adopt_identity(&identity).await? {
        return Err(MediaError::Invalid(
            "the target database belongs to another deployment (another identity): copy into an empty database".to_owned(),
        ));
    }
    copy_media(from, to, &mut report, &mut progress).await?;
    copy_thumbnails(from, to, &mut report, &mut progress).await?;
    let mut after: Option<MediaKey> = None;
    loop {
        let page = from.transfer.reserved_after(after.as_ref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, reserved) in &page {
            if to.transfer.put_reserved(key, reserved).await? {
                report.reserved += 1;
            } else {
                report.already_there += 1;
            }
        }
        progress(&report);
    }
    let mut after = None;
    loop {
        let page = from
            .transfer
            .quarantined_after(after.as_ref(), PAGE)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (digest, content) in &page {
            to.transfer.put_quarantined(digest, content).await?;
            report.quarantined_content += 1;
        }
    }
    for (datastore, claim) in from.transfer.claims().await? {
        to.housekeeping.put_claim(&datastore, &claim).await?;
        report.claims += 1;
    }
    for object in from.blobs.unlinked(usize::MAX).await? {
        to.transfer.put_unlinked(&object).await?;
        report.unlinked += 1;
    }
    verify(from, to, &mut report).await?;
    progress(&report);
    Ok(report)
}

/// Where `from` keeps the object of `sha256`, offered to the target's
/// commit as the blob to register (or share).
async fn location_of(from: &Metadata, sha256: &Sha256Digest) -> Result<NewBlob, MediaError> {
    let blob = from
        .blobs
        .blob(sha256)
        .await?
        .ok_or(RepoError::Inconsistent("a record points at a missing blob"))?;
    Ok(NewBlob {
        datastore: blob.datastore,
        key: blob.key,
    })
}

async fn copy_media(
    from: &Metadata,
    to: &Metadata,
    report: &mut CopyReport,
    progress: &mut impl FnMut(&CopyReport),
) -> Result<(), MediaError> {
    let mut after: Option<MediaKey> = None;
    loop {
        let page = from.catalog.media_after(after.as_ref(), PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, record) in &page {
            let location = location_of(from, &record.sha256).await?;
            match to
                .records
                .commit(key, record, &location, &CommitMode::Fresh, None)
                .await?
            {
                Commit::Done { .. } => report.media += 1,
                _ => report.already_there += 1,
            }
        }
        progress(report);
    }
}

async fn copy_thumbnails(
    from: &Metadata,
    to: &Metadata,
    report: &mut CopyReport,
    progress: &mut impl FnMut(&CopyReport),
) -> Result<(), MediaError> {
    let mut after = None;
    loop {
        let page = from.catalog.thumbnails_after(after.as_ref(), PAGE).await?;
        let Some((key, size, _)) = page.last() else {
            return Ok(());
        };
        after = Some((key.clone(), *size));
        for (key, size, record) in &page {
            let blob = from
                .blobs
                .blob(&record.sha256)
                .await?
                .ok_or(RepoError::Inconsistent(
                    "a thumbnail points at a missing blob",
                ))?;
            let location = NewBlob {
                datastore: blob.datastore,
                key: blob.key,
            };
            match to
                .records
                .commit_thumbnail(key, size, record, &location)
                .await?
            {
                CommitThumb::Done { .. } => report.thumbnails += 1,
                _ => report.already_there += 1,
            }
        }
        progress(report);
    }
}

/// Counts agree, and every record reads back equal, pointing at the same
/// object.
async fn verify(from: &Metadata, to: &Metadata, report: &mut CopyReport) -> Result<(), MediaError> {
    let (source, target) = (
        from.housekeeping.counts().await?,
        to.housekeeping.counts().await?,
    );
    if source != target {
        return Err(MediaError::Invalid(format!(
            "after the copy the target holds {target:?}, the source {source:?}"
        )));
    }
    let mut after: Option<MediaKey> = None;
    loop {
        let page = from.catalog.media_after(after.as_ref(), PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, record) in &page {
            let Lookup::Complete {
                record: copied,
                blob: Some(blob),
            } = to.records.lookup(key).await?
            else {
                return Err(MediaError::Invalid(format!(
                    "{key} is missing from the target"
                )));
            };
            let source_blob = from.blobs.blob(&record.sha256).await?;
            let same_object = source_blob.is_some_and(|b| {
                b.datastore == blob.datastore && b.key == blob.key && b.refs == blob.refs
            });
            if copied != *record || !same_object {
                return Err(MediaError::Invalid(format!("{key} differs in the target")));
            }
            report.verified += 1;
        }
    }
}
