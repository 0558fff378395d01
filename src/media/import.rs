//! Importing media from another media repository (Synapse's `media_store`
//! first): one item at a time under its own id and with its own metadata,
//! its bytes checked against the digest the source recorded, idempotent (an
//! item already here is left alone, so an interrupted import is simply run
//! again), and quarantine carried over to every copy of the bytes.

use std::time::Duration;

use super::{
    MediaError, MediaService,
    meter::{Meter, Pace},
    ports::{Commit, CommitMode, Lookup, MediaRecord, NewBlob, Origin, QuarantineChange},
    upload::{BlobGuard, write_detached},
};
use crate::{
    config::DatastoreKind,
    ids::{MediaKey, Sha256Digest, UnixMillis},
    storage::ByteStream,
};

/// What the source knows of one media item.
#[derive(Clone, Debug)]
pub struct ImportItem {
    pub key: MediaKey,
    pub origin: Origin,
    pub content_type: String,
    pub upload_name: Option<String>,
    pub uploader: Option<String>,
    pub created: UnixMillis,
    pub last_access: Option<UnixMillis>,
    /// The admin who quarantined it, when it is quarantined.
    pub quarantined_by: Option<String>,
    pub protected: bool,
    /// Served only on the authenticated endpoints (created during the
    /// source's freeze of unauthenticated media).
    pub requires_auth: bool,
    /// The digest the source recorded, checked against the bytes read.
    pub sha256: Option<Sha256Digest>,
}

/// What became of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// Stored now: its size and digest, and whether its bytes were here
    /// already (another item's).
    Stored {
        size: u64,
        sha256: Sha256Digest,
        deduplicated: bool,
    },
    /// Already here (an earlier run, or a concurrent one): left alone.
    AlreadyHere,
}

/// Imports are an operator's job on trusted files: no size cap, but a
/// source that stalls is given up on.
const PACE: Pace = Pace {
    limit: u64::MAX,
    idle: Duration::from_secs(300),
    min_rate: 0,
    deadline: Duration::from_secs(24 * 3600),
};

impl MediaService {
    /// Stores one item from another media repository under its own id,
    /// with its metadata; refuses bytes whose digest differs from the
    /// recorded one (nothing is stored then).
    pub async fn import(&self, item: ImportItem, body: ByteStream) -> Result<Imported, MediaError> {
        if self.is_stored(&item.key).await? {
            return Ok(Imported::AlreadyHere);
        }
        let kind = match item.origin {
            Origin::Local => DatastoreKind::LocalMedia,
            Origin::Remote => DatastoreKind::RemoteMedia,
        };
        let store = self.inner.stores.writer_for(kind)?;
        let guard = BlobGuard::new(self, store).await?;
        let (body, meter) = Meter::wrap(body, PACE);
        write_detached(store, &guard.key, body)
            .await
            .map_err(|e| meter.explain(e, PACE))?;
        let (size, sha256) = meter.finish();
        if let Some(expected) = item.sha256
            && expected != sha256
        {
            return Err(MediaError::Invalid(format!(
                "{}: the bytes read have SHA-256 {}, the source recorded {}",
                item.key,
                sha256.to_hex(),
                expected.to_hex()
            )));
        }
        let blob = NewBlob {
            datastore: store.id().clone(),
            key: guard.key.clone(),
        };
        let imported = self.commit_import(item, size, sha256, &blob).await?;
        if let Imported::Stored {
            deduplicated: false,
            ..
        } = imported
        {
            guard.disarm();
        }
        Ok(imported)
    }

    /// Stores one item whose bytes are those of `source`, stored already
    /// (an archive that holds one file for several ids): nothing is read.
    pub async fn import_same_bytes(
        &self,
        item: ImportItem,
        source: &MediaKey,
    ) -> Result<Imported, MediaError> {
        if self.is_stored(&item.key).await? {
            return Ok(Imported::AlreadyHere);
        }
        let Lookup::Complete {
            record,
            blob: Some(blob),
        } = self.inner.meta.records.lookup(source).await?
        else {
            return Err(MediaError::Invalid(format!(
                "{}: its bytes were to come from {source}, which is not stored",
                item.key
            )));
        };
        if let Some(expected) = item.sha256
            && expected != record.sha256
        {
            return Err(MediaError::Invalid(format!(
                "{}: the source recorded SHA-256 {}, the bytes it shares have {}",
                item.key,
                expected.to_hex(),
                record.sha256.to_hex()
            )));
        }
        let existing = NewBlob {
            datastore: blob.datastore,
            key: blob.key,
        };
        self.commit_import(item, record.size, record.sha256, &existing)
            .await
    }

    /// Commits an imported item's record on `blob` (deduplicated when its
    /// digest is stored already), then quarantines every copy of its bytes
    /// if the source had it quarantined.
    async fn commit_import(
        &self,
        item: ImportItem,
        size: u64,
        sha256: Sha256Digest,
        blob: &NewBlob,
    ) -> Result<Imported, MediaError> {
        let record = MediaRecord {
            sha256,
            size,
            content_type: item.content_type,
            upload_name: item.upload_name,
            uploader: item.uploader,
            created: item.created,
            origin: item.origin,
            requires_auth: item.requires_auth,
            quarantined: item.quarantined_by.is_some(),
            quarantined_by: item.quarantined_by.clone(),
            protected: item.protected,
            last_access: item.last_access,
        };
        let records = &self.inner.meta.records;
        let deduplicated = match records
            .commit(&item.key, &record, blob, &CommitMode::Fresh, None)
            .await?
        {
            Commit::Done { deduplicated } => deduplicated,
            Commit::Taken => return Ok(Imported::AlreadyHere),
            other => {
                tracing::warn!(mxc = %item.key, outcome = ?other, "import not committed");
                return Err(MediaError::Internal("an import commit was refused"));
            }
        };
        if let Some(by) = item.quarantined_by {
            // Every copy of these bytes, and later uploads of them, too.
            let change = QuarantineChange::Quarantine { by };
            self.inner
                .meta
                .catalog
                .quarantine(std::slice::from_ref(&item.key), &change)
                .await?;
        }
        self.inner.committed.notify_waiters();
        Ok(Imported::Stored {
            size,
            sha256,
            deduplicated,
        })
    }
}
