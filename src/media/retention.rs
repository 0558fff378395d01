//! Retention: media and thumbnails nobody has served for their lifetime
//! are deleted through the same path as an admin's deletion, so their bytes
//! leave the object store. Local media keeps quarantined items (evidence),
//! protected items and avatars; cached remote media keeps quarantined
//! copies. Runs in the background every `retention.interval` and from
//! `mxmedia media retention`, a batch of records per metadata round trip.

use std::{collections::HashSet, time::Duration};

use serde::Serialize;

use super::{
    MediaError, MediaService,
    ports::{MediaRecord, Origin},
};
use crate::ids::{MediaKey, UnixMillis};

/// Items deleted and bytes freed of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Freed {
    pub items: u64,
    pub bytes: u64,
}

impl Freed {
    fn add(&mut self, bytes: u64) {
        self.items += 1;
        self.bytes += bytes;
    }
}

/// What a retention run deleted (or, dry, would delete).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub local: Freed,
    pub remote: Freed,
    pub thumbnails: Freed,
}

/// The time before which an item unused for `lifetime` expired.
fn cutoff(now: UnixMillis, lifetime: Option<Duration>) -> Option<UnixMillis> {
    let lifetime = u64::try_from(lifetime?.as_millis()).unwrap_or(u64::MAX);
    Some(UnixMillis(now.0.saturating_sub(lifetime)))
}

impl MediaService {
    /// One retention run over every record; `progress` hears the totals
    /// after every batch.
    pub async fn retention(
        &self,
        dry_run: bool,
        mut progress: impl FnMut(&RetentionReport),
    ) -> Result<RetentionReport, MediaError> {
        let config = &self.inner.policies.retention;
        // One instance deletes at a time; a dry run needs no lease.
        let lease = if dry_run {
            None
        } else {
            let lease = self.inner.meta.housekeeping.lease("retention").await?;
            if lease.is_none() {
                tracing::info!("another instance is running retention");
                return Ok(RetentionReport {
                    dry_run,
                    ..RetentionReport::default()
                });
            }
            lease
        };
        let _lease = lease;
        // Accesses noted so far count.
        self.flush_accesses().await?;
        let now = UnixMillis::now();
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        // Thumbnails first: those of expired media would otherwise go with
        // their media uncounted.
        if let Some(before) = cutoff(now, config.thumbnails) {
            self.expire_thumbnails(before, &mut report, &mut progress)
                .await?;
        }
        let local = cutoff(now, config.local);
        let remote = cutoff(now, config.remote);
        if local.is_some() || remote.is_some() {
            let avatars = self.avatars_to_keep(local.is_some()).await?;
            self.expire_media(local, remote, &avatars, &mut report, &mut progress)
                .await?;
        }
        let metrics = &self.inner.metrics;
        if !dry_run {
            metrics.retention("local", report.local.items, report.local.bytes);
            metrics.retention("remote", report.remote.items, report.remote.bytes);
            metrics.retention(
                "thumbnail",
                report.thumbnails.items,
                report.thumbnails.bytes,
            );
        }
        tracing::info!(
            dry_run,
            local = report.local.items,
            local_bytes = report.local.bytes,
            remote = report.remote.items,
            remote_bytes = report.remote.bytes,
            thumbnails = report.thumbnails.items,
            thumbnail_bytes = report.thumbnails.bytes,
            "retention"
        );
        Ok(report)
    }

    /// Media the homeserver says is an avatar, when local media expires and
    /// avatars are kept.
    async fn avatars_to_keep(&self, local: bool) -> Result<HashSet<MediaKey>, MediaError> {
        let policies = &self.inner.policies;
        if !local || !policies.retention.keep_avatars {
            return Ok(HashSet::new());
        }
        let Some(token) = &policies.homeserver_token else {
            return Err(MediaError::Invalid(
                "retention keeps avatars but homeserver.admin_token is not set".to_owned(),
            ));
        };
        Ok(self.inner.homeserver.avatars(token).await?)
    }

    /// Whether `record` expired: local media (kept when quarantined,
    /// protected or an avatar) before `local`, remote before `remote`.
    fn expired(
        key: &MediaKey,
        record: &MediaRecord,
        (local, remote): (Option<UnixMillis>, Option<UnixMillis>),
        avatars: &HashSet<MediaKey>,
    ) -> bool {
        let before = match record.origin {
            Origin::Local => local,
            Origin::Remote => remote,
        };
        let Some(before) = before else {
            return false;
        };
        record.last_used() < before
            && !record.quarantined
            && !(record.origin == Origin::Local && (record.protected || avatars.contains(key)))
    }

    async fn expire_media(
        &self,
        local: Option<UnixMillis>,
        remote: Option<UnixMillis>,
        avatars: &HashSet<MediaKey>,
        report: &mut RetentionReport,
        progress: &mut impl FnMut(&RetentionReport),
    ) -> Result<(), MediaError> {
        let batch = self.inner.policies.retention.batch;
        let mut after: Option<MediaKey> = None;
        loop {
            let page = self.next_media_page(&mut after, batch).await?;
            if page.is_empty() {
                return Ok(());
            }
            for (key, record) in page {
                if !Self::expired(&key, &record, (local, remote), avatars) {
                    continue;
                }
                let is_local = record.origin == Origin::Local;
                if report.dry_run || self.remove(&key, is_local).await? {
                    let freed = if is_local {
                        &mut report.local
                    } else {
                        &mut report.remote
                    };
                    freed.add(record.size);
                }
            }
            progress(report);
            tokio::task::yield_now().await;
        }
    }

    async fn expire_thumbnails(
        &self,
        before: UnixMillis,
        report: &mut RetentionReport,
        progress: &mut impl FnMut(&RetentionReport),
    ) -> Result<(), MediaError> {
        let batch = self.inner.policies.retention.batch;
        let catalog = &self.inner.meta.catalog;
        let mut after = None;
        loop {
            let page = catalog.thumbnails_after(after.as_ref(), batch).await?;
            let Some((key, size, _)) = page.last() else {
                return Ok(());
            };
            after = Some((key.clone(), *size));
            for (key, size, record) in page {
                let last = record.last_access.unwrap_or(record.created);
                if last >= before {
                    continue;
                }
                if report.dry_run {
                    report.thumbnails.add(record.size);
                    continue;
                }
                if let Some(unlinked) = catalog.delete_thumbnail(&key, &size).await? {
                    for object in &unlinked {
                        if let Err(error) = self.remove_unlinked(object).await {
                            tracing::warn!(%error, "thumbnail object not deleted yet; the sweep retries");
                        }
                    }
                    report.thumbnails.add(record.size);
                }
            }
            progress(report);
            tokio::task::yield_now().await;
        }
    }
}
