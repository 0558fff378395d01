//! Housekeeping in the sled database: expiry of reservations, counts, the
//! database identity and datastore claims, health and flushing.

use sled::Transactional;

use super::{MediaState, Trees, flatten, keys, tx_get};
use crate::{
    ids::{DatastoreId, MediaKey, UnixMillis},
    media::ports::{ClaimRecord, Counts, DatabaseIdentity, PendingRecord, RepoError},
};

use super::super::codec;

impl Trees {
    /// Removes up to `limit` reservations expired at `now`, durably.
    pub fn expire_pending(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MediaKey>, RepoError> {
        let mut removed = Vec::new();
        for key in self.expired_pending(now, limit)? {
            if self.remove_expired_pending(&key, now)? {
                removed.push(key);
            }
        }
        if !removed.is_empty() {
            self.flush()?;
        }
        Ok(removed)
    }

    fn expired_pending(&self, now: UnixMillis, limit: usize) -> Result<Vec<MediaKey>, RepoError> {
        let mut out = Vec::new();
        for entry in &self.pending {
            let (key, value) = entry?;
            let record: PendingRecord = codec::decode(&value)?;
            if record.expires <= now {
                if let Some(media) = keys::parse_pending(&key) {
                    out.push(media);
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn remove_expired_pending(&self, key: &MediaKey, now: UnixMillis) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let outcome = (&self.media, &self.pending).transaction(|(media, pending)| {
            match tx_get::<MediaState>(media, &media_key)? {
                Some(MediaState::Pending(p)) if p.expires <= now => {
                    media.remove(media_key.as_slice())?;
                    pending.remove(keys::pending(&p.owner, key))?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        });
        flatten(outcome)
    }

    pub fn counts(&self) -> Counts {
        let pending = self.pending.len() as u64;
        let deleted = self.deleted.len() as u64;
        Counts {
            media: (self.media.len() as u64).saturating_sub(pending + deleted),
            pending,
            blobs: self.blobs.len() as u64,
        }
    }

    pub fn pending_count(&self) -> u64 {
        self.pending.len() as u64
    }

    pub fn identity(&self) -> Result<DatabaseIdentity, RepoError> {
        const KEY: &[u8] = b"identity";
        if let Some(found) = self.meta.get(KEY)? {
            return Ok(codec::decode(&found)?);
        }
        let fresh = DatabaseIdentity {
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: UnixMillis::now(),
        };
        // Two first callers race: the first insert wins, both read it back.
        let _ = self
            .meta
            .compare_and_swap(KEY, None::<&[u8]>, Some(codec::encode(&fresh)?))?;
        self.db.flush()?;
        let stored = self.meta.get(KEY)?.ok_or(RepoError::Inconsistent(
            "identity vanished after its insert",
        ))?;
        Ok(codec::decode(&stored)?)
    }

    pub fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError> {
        let key = format!("claim/{datastore}");
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    pub fn put_claim(&self, datastore: &DatastoreId, claim: &ClaimRecord) -> Result<(), RepoError> {
        let key = format!("claim/{datastore}");
        self.meta.insert(key.as_bytes(), codec::encode(claim)?)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn ping(&self) -> Result<(), RepoError> {
        // A point lookup of a key no record uses (records never start with 0).
        self.media.get([0u8])?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), RepoError> {
        self.db.flush()?;
        Ok(())
    }

    /// Every tree to the file `out`; the caller keeps writers out.
    pub fn backup(
        &self,
        out: &std::path::Path,
    ) -> Result<crate::media::records::BackupReport, RepoError> {
        super::super::backup::write(&self.db, Self::LAYOUT, out)
    }
}
