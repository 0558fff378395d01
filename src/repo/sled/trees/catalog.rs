//! The admin's view of the sled database: quarantine over identical
//! content, protection, a user's uploads, bulk scans, usage and the
//! quarantine log.

use std::collections::{BTreeMap, BTreeSet};

use sled::{Transactional, transaction::TransactionalTree};

use super::{MediaState, Trees, TxResult, abort, flatten, keys, tx_get};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::{
        catalog::TopK,
        ports::{
            MediaOrder, MediaPage, MediaPageQuery, MediaRecord, QuarantineChange, QuarantineEvent,
            QuarantinedContent, RepoError, Usage,
        },
    },
};

use super::super::codec;

/// Appends one change to the quarantine log (inside the transaction that
/// makes it). Positions come from sled's id generator: unique and growing.
pub(super) fn log_change(
    log: &TransactionalTree,
    key: &MediaKey,
    quarantined: bool,
) -> TxResult<()> {
    let seq = log.generate_id()? + 1;
    let mut value = vec![u8::from(quarantined)];
    value.extend_from_slice(&keys::media(key));
    log.insert(&seq.to_be_bytes()[..], value)?;
    Ok(())
}

impl Trees {
    pub fn quarantine(
        &self,
        targets: &[MediaKey],
        change: &QuarantineChange,
    ) -> Result<u64, RepoError> {
        let quarantining = matches!(change, QuarantineChange::Quarantine { .. });
        let mut digests = BTreeSet::new();
        for key in targets {
            if let Some(MediaState::Complete(record)) = self.get(key)?
                && !(quarantining && record.protected)
            {
                digests.insert(record.sha256);
            }
        }
        // The content first: a commit from now on sees it, and every commit
        // before it is in the content index scanned below.
        for digest in &digests {
            match change {
                QuarantineChange::Quarantine { by } => {
                    let content = QuarantinedContent {
                        by: by.clone(),
                        at: UnixMillis::now(),
                    };
                    self.quarantined
                        .insert(digest.0, codec::encode(&content)?)?;
                }
                QuarantineChange::Release => {
                    self.quarantined.remove(digest.0)?;
                }
            }
        }
        let mut changed = 0;
        for digest in &digests {
            for entry in self.by_sha256.scan_prefix(digest.0) {
                let (entry, _) = entry?;
                let key = keys::parse_by_sha256(&entry)
                    .ok_or_else(|| RepoError::Corrupt("content index entry".to_owned()))?;
                if self.apply_quarantine(&key, change)? {
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Quarantines or releases one complete media item; whether it changed.
    fn apply_quarantine(
        &self,
        key: &MediaKey,
        change: &QuarantineChange,
    ) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let outcome = (&self.media, &self.quarantine_log).transaction(|(media, log)| {
            let Some(MediaState::Complete(mut record)) = tx_get::<MediaState>(media, &media_key)?
            else {
                return Ok(false);
            };
            match change {
                QuarantineChange::Quarantine { by } => {
                    if record.protected || record.quarantined {
                        return Ok(false);
                    }
                    record.quarantined = true;
                    record.quarantined_by = Some(by.clone());
                }
                QuarantineChange::Release => {
                    if !record.quarantined {
                        return Ok(false);
                    }
                    record.quarantined = false;
                    record.quarantined_by = None;
                }
            }
            let quarantined = record.quarantined;
            let value = codec::encode(&MediaState::Complete(record)).map_err(abort)?;
            media.insert(media_key.as_slice(), value)?;
            log_change(log, key, quarantined)?;
            Ok(true)
        });
        flatten(outcome)
    }

    pub fn quarantined_content(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<QuarantinedContent>, RepoError> {
        Ok(self
            .quarantined
            .get(digest.0)?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    pub fn set_protected(&self, key: &MediaKey, protected: bool) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let outcome = self.media.transaction(|media| {
            let Some(MediaState::Complete(mut record)) = tx_get::<MediaState>(media, &media_key)?
            else {
                return Ok(false);
            };
            record.protected = protected;
            let value = codec::encode(&MediaState::Complete(record)).map_err(abort)?;
            media.insert(media_key.as_slice(), value)?;
            Ok(true)
        });
        flatten(outcome)
    }

    fn complete(&self, key: &MediaKey) -> Result<Option<MediaRecord>, RepoError> {
        Ok(match self.get(key)? {
            Some(MediaState::Complete(record)) => Some(record),
            _ => None,
        })
    }

    pub fn uploads(&self, user: &str, query: &MediaPageQuery) -> Result<MediaPage, RepoError> {
        let prefix = keys::uploader_prefix(user);
        let mut total = 0u64;
        for entry in self.by_uploader.scan_prefix(&prefix) {
            entry?;
            total += 1;
        }
        let media = if query.order == MediaOrder::CreatedTs {
            let mut page = Vec::new();
            for key in self.uploads_by_time(&prefix, query)? {
                if let Some(record) = self.complete(&key)? {
                    page.push((key, record));
                }
            }
            page
        } else {
            let keep =
                usize::try_from(query.from.saturating_add(query.limit)).unwrap_or(usize::MAX);
            let (order, backwards) = (query.order, query.backwards);
            let mut top = TopK::new(keep, move |a: &(MediaKey, MediaRecord), b: &_| {
                order.compare(backwards, a, b)
            });
            for entry in self.by_uploader.scan_prefix(&prefix) {
                let (entry, _) = entry?;
                let Some((_, _, key)) = keys::parse_by_uploader(&entry) else {
                    continue;
                };
                if let Some(record) = self.complete(&key)? {
                    top.push((key, record));
                }
            }
            let skip = usize::try_from(query.from).unwrap_or(usize::MAX);
            top.finish().into_iter().skip(skip).collect()
        };
        Ok(MediaPage { media, total })
    }

    /// The keys of one page of a user's uploads by creation time, read in
    /// index order; equal times list by ascending media id either way.
    fn uploads_by_time(
        &self,
        prefix: &[u8],
        query: &MediaPageQuery,
    ) -> Result<Vec<MediaKey>, RepoError> {
        let mut page = Vec::new();
        let mut seen = 0u64;
        let mut take = |key: MediaKey| {
            if seen >= query.from {
                page.push(key);
            }
            seen += 1;
            (page.len() as u64) < query.limit
        };
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let entries = self.by_uploader.scan_prefix(prefix);
        if query.backwards {
            // Reversed index order lists equal times by descending id:
            // each run of equal times is turned around before it is taken.
            let mut run: Vec<MediaKey> = Vec::new();
            let mut run_time = None;
            let mut open = true;
            for entry in entries.rev() {
                let (entry, _) = entry?;
                let Some((_, created, key)) = keys::parse_by_uploader(&entry) else {
                    continue;
                };
                if run_time != Some(created) {
                    open = run.drain(..).rev().all(&mut take);
                    if !open {
                        break;
                    }
                    run_time = Some(created);
                }
                run.push(key);
            }
            if open {
                run.drain(..).rev().all(&mut take);
            }
        } else {
            for entry in entries {
                let (entry, _) = entry?;
                if let Some((_, _, key)) = keys::parse_by_uploader(&entry)
                    && !take(key)
                {
                    break;
                }
            }
        }
        Ok(page)
    }

    pub fn media_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, MediaRecord)>, RepoError> {
        self.states_after(after, limit, |key, state| match state {
            MediaState::Complete(record) => Some((key, record)),
            _ => None,
        })
    }

    /// Up to `limit` media keys after `after`, in key order, with what
    /// `pick` makes of their state (states it refuses are passed over).
    pub(super) fn states_after<T>(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
        pick: impl Fn(MediaKey, MediaState) -> Option<T>,
    ) -> Result<Vec<T>, RepoError> {
        let iter = match after {
            Some(key) => self.media.range((
                std::ops::Bound::Excluded(keys::media(key)),
                std::ops::Bound::Unbounded,
            )),
            None => self.media.iter(),
        };
        let mut out = Vec::new();
        for entry in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let Some(key) = keys::parse_media(&key) else {
                continue;
            };
            if let Some(item) = pick(key, codec::decode::<MediaState>(&value)?) {
                out.push(item);
            }
        }
        Ok(out)
    }

    pub fn usage(
        &self,
        from: Option<UnixMillis>,
        until: Option<UnixMillis>,
    ) -> Result<Vec<Usage>, RepoError> {
        let mut users: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for entry in &self.by_uploader {
            let (entry, size) = entry?;
            let Some((user, created, _)) = keys::parse_by_uploader(&entry) else {
                continue;
            };
            if from.is_some_and(|from| created < from)
                || until.is_some_and(|until| created >= until)
            {
                continue;
            }
            let size = size
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            let totals = users.entry(user.to_owned()).or_default();
            totals.0 += 1;
            totals.1 += size;
        }
        Ok(users
            .into_iter()
            .map(|(user, (count, bytes))| Usage { user, count, bytes })
            .collect())
    }

    pub fn quarantine_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineEvent>, RepoError> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.quarantine_log.range(start..).take(limit) {
            let (seq, value) = entry?;
            let seq = seq
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| RepoError::Corrupt("quarantine log position".to_owned()))?;
            let (flag, key) = value
                .split_first()
                .ok_or_else(|| RepoError::Corrupt("quarantine log entry".to_owned()))?;
            let key = keys::parse_media(key)
                .ok_or_else(|| RepoError::Corrupt("quarantine log media key".to_owned()))?;
            out.push(QuarantineEvent {
                seq,
                key,
                quarantined: *flag == 1,
            });
        }
        Ok(out)
    }

    pub fn quarantine_log_head(&self) -> Result<u64, RepoError> {
        Ok(match self.quarantine_log.last()? {
            Some((seq, _)) => seq.as_ref().try_into().map_or(0, u64::from_be_bytes),
            None => 0,
        })
    }
}
