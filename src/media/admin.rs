//! Moderation and administration use cases: what an admin sees of a media
//! item, quarantine and protection, and deletion that frees the object
//! store. Every action is logged with who did it and counted.

use std::collections::HashSet;

use ruma::UserId;

use super::{
    MediaError, MediaService,
    ports::{Deletion, Lookup, MediaPageQuery, MediaRecord, Origin, Unlinked},
};
use crate::{
    auth::Credentials,
    ids::{MediaKey, Sha256Digest, UnixMillis},
    storage::StorageError,
};

/// Unlinked objects removed per metadata round trip in the sweep.
const BATCH: usize = 256;
/// Media records read per metadata round trip by bulk deletions.
const SCAN_PAGE: usize = 500;

/// Which local media a purge by date and size removes.
#[derive(Clone, Copy, Debug)]
pub struct LocalPurge {
    pub before: UnixMillis,
    pub size_gt: u64,
    /// Keep media the homeserver says is a user's or a room's avatar.
    pub keep_profiles: bool,
    /// Count only; delete nothing.
    pub dry_run: bool,
}

/// What a purge deleted (or, dry, would delete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub deleted: Vec<MediaKey>,
    pub bytes: u64,
}

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
    /// Last served (coarsely), if ever since it was recorded.
    pub last_access: Option<UnixMillis>,
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
            last_access: record.last_access,
            quarantined: record.quarantined,
            quarantined_by: record.quarantined_by,
            requires_auth: record.requires_auth,
            protected: record.protected,
            sha256: record.sha256,
        })
    }

    /// Deletes our own media `key` with its thumbnails on behalf of
    /// `actor`: the records go first (one transaction, the freed objects
    /// recorded as unlinked in it), then the objects whose last reference
    /// went, then their hot-cache copies. An object whose removal fails stays
    /// recorded and is retried by the sweep. False when there is no such
    /// media. The id is never handed out again.
    pub async fn delete_media(&self, key: &MediaKey, actor: &str) -> Result<bool, MediaError> {
        if key.server != self.inner.server_name {
            return Err(MediaError::NotLocal);
        }
        let deleted = self.remove(key, true).await?;
        self.inner.metrics.moderation("delete", deleted);
        if deleted {
            tracing::info!(target: "mxmedia::audit", admin = actor, action = "delete", mxc = %key, "moderation");
        }
        Ok(deleted)
    }

    /// Removes media and its thumbnails, then the objects it was the last
    /// reference to; `tombstone` keeps the id from being used again.
    pub(super) async fn remove(&self, key: &MediaKey, tombstone: bool) -> Result<bool, MediaError> {
        let Deletion::Deleted { unlinked } = self.inner.meta.records.delete(key, tombstone).await?
        else {
            return Ok(false);
        };
        if !tombstone {
            self.forget_fetch(key).await;
        }
        for object in &unlinked {
            if let Err(error) = self.remove_unlinked(object).await {
                tracing::warn!(datastore = %object.datastore, key = object.key.as_str(), %error, "object not deleted yet; the sweep retries");
            }
        }
        Ok(true)
    }

    /// Deletes one page of what `user` uploaded (Synapse's `DELETE
    /// /users/{user_id}/media`); the ids deleted.
    pub async fn delete_uploads(
        &self,
        user: &UserId,
        query: &MediaPageQuery,
        actor: &str,
    ) -> Result<Vec<MediaKey>, MediaError> {
        let page = self
            .inner
            .meta
            .catalog
            .uploads(user.as_str(), query)
            .await?;
        let mut deleted = Vec::new();
        for (key, _) in page.media {
            if self.remove(&key, true).await? {
                deleted.push(key);
            }
        }
        self.inner
            .metrics
            .moderation("delete_user_media", !deleted.is_empty());
        tracing::info!(target: "mxmedia::audit", admin = actor, action = "delete_user_media", user = %user, items = deleted.len(), "moderation");
        Ok(deleted)
    }

    /// Deletes local media created before `filter.before` and larger than
    /// `filter.size_gt`, keeping quarantined and protected media and, with
    /// `keep_profiles`, avatars (as the homeserver lists them to `acting`).
    /// `progress` hears the count after every page scanned.
    pub async fn purge_local(
        &self,
        filter: &LocalPurge,
        acting: Option<&Credentials>,
        actor: &str,
        progress: impl FnMut(&PurgeReport),
    ) -> Result<PurgeReport, MediaError> {
        let avatars = match (filter.keep_profiles, acting) {
            (false, _) => HashSet::new(),
            (true, Some(acting)) => self.inner.homeserver.avatars(acting).await?,
            (true, None) => {
                return Err(MediaError::Invalid(
                    "keeping avatars needs the homeserver's answer: give an admin's access token, or do not keep profile media".to_owned(),
                ));
            }
        };
        let server = self.inner.server_name.clone();
        let report = self
            .purge(
                |key, record| {
                    key.server == server
                        && record.origin == Origin::Local
                        && record.last_used() < filter.before
                        && record.size > filter.size_gt
                        && !record.quarantined
                        && !record.protected
                        && !avatars.contains(key)
                },
                true,
                filter.dry_run,
                progress,
            )
            .await?;
        self.inner
            .metrics
            .moderation("purge_local", !report.deleted.is_empty());
        tracing::info!(target: "mxmedia::audit", admin = actor, action = "purge_local", before = filter.before.0, size_gt = filter.size_gt, keep_profiles = filter.keep_profiles, dry_run = filter.dry_run, items = report.deleted.len(), bytes = report.bytes, "moderation");
        Ok(report)
    }

    /// Deletes cached remote media fetched before `before` (quarantined
    /// media excepted); fetched again when someone asks for it.
    pub async fn purge_remote(
        &self,
        before: UnixMillis,
        dry_run: bool,
        actor: &str,
        progress: impl FnMut(&PurgeReport),
    ) -> Result<PurgeReport, MediaError> {
        let report = self
            .purge(
                |_, record| {
                    record.origin == Origin::Remote
                        && record.last_used() < before
                        && !record.quarantined
                },
                false,
                dry_run,
                progress,
            )
            .await?;
        self.inner
            .metrics
            .moderation("purge_remote", !report.deleted.is_empty());
        tracing::info!(target: "mxmedia::audit", admin = actor, action = "purge_remote", before = before.0, dry_run, items = report.deleted.len(), bytes = report.bytes, "moderation");
        Ok(report)
    }

    /// Walks every media record a page at a time and deletes (or, dry,
    /// only counts) those `select` picks.
    async fn purge(
        &self,
        select: impl Fn(&MediaKey, &MediaRecord) -> bool,
        tombstone: bool,
        dry_run: bool,
        mut progress: impl FnMut(&PurgeReport),
    ) -> Result<PurgeReport, MediaError> {
        let mut report = PurgeReport::default();
        let mut after: Option<MediaKey> = None;
        loop {
            let page = self.next_media_page(&mut after, SCAN_PAGE).await?;
            if page.is_empty() {
                return Ok(report);
            }
            for (key, record) in page {
                if !select(&key, &record) {
                    continue;
                }
                if dry_run || self.remove(&key, tombstone).await? {
                    report.bytes += record.size;
                    report.deleted.push(key);
                }
            }
            progress(&report);
        }
    }

    /// The next `limit` complete media records after `after`, which it
    /// moves past them; empty once every record was read.
    pub async fn next_media_page(
        &self,
        after: &mut Option<MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, MediaRecord)>, MediaError> {
        let page = self
            .inner
            .meta
            .catalog
            .media_after(after.as_ref(), limit)
            .await?;
        if let Some((last, _)) = page.last() {
            *after = Some(last.clone());
        }
        Ok(page)
    }

    /// Removes one unlinked object from its datastore and the hot cache,
    /// then forgets it. Removing an object that is already gone succeeds.
    pub(super) async fn remove_unlinked(&self, object: &Unlinked) -> Result<(), MediaError> {
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
