//! Moderation and administration use cases: what an admin sees of a media
//! item, quarantine and protection, and deletion that frees the object
//! store. Every action is logged with who did it and counted.

use ruma::UserId;

use super::{
    MediaError, MediaService,
    ports::{Deletion, Lookup, Moderation, Origin, Unlinked},
};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    storage::StorageError,
};

/// Unlinked objects removed per metadata round trip in the sweep.
const BATCH: usize = 256;

/// What an admin sees of one media item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    pub key: MediaKey,
    pub origin: Origin,
    pub uploader: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub upload_name: Option<String>,
    pub created: UnixMillis,
    pub quarantined: bool,
    pub quarantined_by: Option<String>,
    /// Created while unauthenticated media was frozen.
    pub requires_auth: bool,
    pub protected: bool,
    pub sha256: Sha256Digest,
}

impl MediaService {
    /// The stored facts of `key` (local or cached remote media).
    pub async fn media_info(&self, key: &MediaKey) -> Result<MediaInfo, MediaError> {
        let Lookup::Complete { record, .. } = self.inner.meta.records.lookup(key).await? else {
            return Err(MediaError::NotFound);
        };
        Ok(MediaInfo {
            key: key.clone(),
            origin: record.origin,
            uploader: record.uploader,
            content_type: record.content_type,
            size: record.size,
            upload_name: record.upload_name,
            created: record.created,
            quarantined: record.quarantined,
            quarantined_by: record.quarantined_by,
            requires_auth: record.requires_auth,
            protected: record.protected,
            sha256: record.sha256,
        })
    }

    /// Applies `change` to `key` on behalf of `admin`; false when there is
    /// no such complete media. Quarantined media is served to nobody, on
    /// every route.
    pub async fn moderate(
        &self,
        key: &MediaKey,
        change: Moderation,
        admin: &UserId,
    ) -> Result<bool, MediaError> {
        let changed = self.inner.meta.records.moderate(key, &change).await?;
        let action = match change {
            Moderation::Quarantine { .. } => "quarantine",
            Moderation::Unquarantine => "unquarantine",
            Moderation::Protect => "protect",
            Moderation::Unprotect => "unprotect",
        };
        self.inner.metrics.moderation(action, changed);
        tracing::info!(target: "mxmedia::audit", admin = %admin, action, mxc = %key, found = changed, "moderation");
        Ok(changed)
    }

    /// Quarantines (or releases) complete media, as the server itself (for
    /// tests and tools); false when there is none.
    pub async fn set_quarantined(
        &self,
        key: &MediaKey,
        quarantined: bool,
    ) -> Result<bool, MediaError> {
        let change = if quarantined {
            Moderation::Quarantine {
                by: format!("@mxmedia:{}", self.inner.server_name),
            }
        } else {
            Moderation::Unquarantine
        };
        Ok(self.inner.meta.records.moderate(key, &change).await?)
    }

    /// Deletes our own media `key` with its thumbnails on behalf of
    /// `admin`: the records go first (one transaction, the freed objects
    /// recorded as unlinked in it), then the objects whose last reference
    /// went, then their hot-cache copies. An object whose removal fails stays
    /// recorded and is retried by the sweep. False when there is no such
    /// media. The id is never handed out again.
    pub async fn delete_media(&self, key: &MediaKey, admin: &UserId) -> Result<bool, MediaError> {
        if key.server != self.inner.server_name {
            return Err(MediaError::NotLocal);
        }
        let deletion = self.inner.meta.records.delete(key, true).await?;
        let Deletion::Deleted { unlinked } = deletion else {
            self.inner.metrics.moderation("delete", false);
            return Ok(false);
        };
        self.inner.metrics.moderation("delete", true);
        tracing::info!(target: "mxmedia::audit", admin = %admin, action = "delete", mxc = %key, objects = unlinked.len(), "moderation");
        for object in &unlinked {
            if let Err(error) = self.remove_unlinked(object).await {
                tracing::warn!(datastore = %object.datastore, key = object.key.as_str(), %error, "object not deleted yet; the sweep retries");
            }
        }
        Ok(true)
    }

    /// Removes one unlinked object from its datastore and the hot cache,
    /// then forgets it. Removing an object that is already gone succeeds.
    async fn remove_unlinked(&self, object: &Unlinked) -> Result<(), MediaError> {
        let store = self.inner.stores.get(&object.datastore)?;
        match store.delete(&object.key).await {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(other) => return Err(other.into()),
        }
        if let Some(cache) = &self.inner.cache {
            cache.forget(&object.sha256);
        }
        self.inner.meta.blobs.forget_unlinked(object).await?;
        Ok(())
    }

    /// Removes the objects deletions left behind (a failure or a crash
    /// between the record and the object); the count removed.
    pub(super) async fn sweep_unlinked(&self) -> Result<u64, MediaError> {
        let mut removed = 0;
        loop {
            let batch = self.inner.meta.blobs.unlinked(BATCH).await?;
            let full = batch.len() == BATCH;
            let mut progress = false;
            for object in &batch {
                match self.remove_unlinked(object).await {
                    Ok(()) => {
                        removed += 1;
                        progress = true;
                    }
                    Err(error) => {
                        tracing::warn!(datastore = %object.datastore, key = object.key.as_str(), %error, "unlinked object not deleted");
                    }
                }
            }
            if !full || !progress {
                return Ok(removed);
            }
        }
    }
}
