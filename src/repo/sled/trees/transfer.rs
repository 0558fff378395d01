//! Reading and writing whole what `mxmedia db copy` carries besides
//! records, blobs and thumbnails: reserved and retired ids, quarantined
//! content, claims, the identity and unlinked objects.

use sled::Transactional;

use super::{MediaState, Trees, flatten, keys, tx_get};
use crate::{
    ids::{DatastoreId, MediaKey, Sha256Digest},
    media::ports::{
        ClaimRecord, DatabaseIdentity, QuarantinedContent, RepoError, Reserved, Unlinked,
    },
};

use super::super::codec;

impl Trees {
    pub fn reserved_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, Reserved)>, RepoError> {
        self.states_after(after, limit, |key, state| match state {
            MediaState::Pending(p) => Some((key, Reserved::Pending(p))),
            MediaState::Deleted { at } => Some((key, Reserved::Retired { at })),
            MediaState::Complete(_) => None,
        })
    }

    pub fn put_reserved(&self, key: &MediaKey, reserved: &Reserved) -> Result<bool, RepoError> {
        let media_key = keys::media(key);
        let state = match reserved {
            Reserved::Pending(p) => MediaState::Pending(p.clone()),
            Reserved::Retired { at } => MediaState::Deleted { at: *at },
        };
        let value = codec::encode(&state)?;
        let pending = match reserved {
            Reserved::Pending(p) => Some((keys::pending(&p.owner, key), codec::encode(p)?)),
            Reserved::Retired { .. } => None,
        };
        let outcome = (&self.media, &self.pending, &self.deleted).transaction(
            |(media, by_owner, deleted)| {
                if tx_get::<MediaState>(media, &media_key)?.is_some() {
                    return Ok(false);
                }
                media.insert(media_key.as_slice(), value.as_slice())?;
                match &pending {
                    Some((entry, record)) => {
                        by_owner.insert(entry.as_slice(), record.as_slice())?;
                    }
                    None => {
                        deleted.insert(media_key.as_slice(), &[][..])?;
                    }
                }
                Ok(true)
            },
        );
        flatten(outcome)
    }

    pub fn quarantined_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, QuarantinedContent)>, RepoError> {
        let iter = match after {
            Some(d) => self.quarantined.range((
                std::ops::Bound::Excluded(d.0.to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.quarantined.iter(),
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (key, value) = entry?;
            let digest: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| RepoError::Corrupt("quarantined content key".to_owned()))?;
            out.push((Sha256Digest(digest), codec::decode(&value)?));
        }
        Ok(out)
    }

    pub fn put_quarantined(
        &self,
        digest: &Sha256Digest,
        content: &QuarantinedContent,
    ) -> Result<(), RepoError> {
        self.quarantined.insert(digest.0, codec::encode(content)?)?;
        Ok(())
    }

    pub fn claims(&self) -> Result<Vec<(DatastoreId, ClaimRecord)>, RepoError> {
        let mut out = Vec::new();
        for entry in self.meta.scan_prefix(b"claim/") {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key["claim/".len()..]).into_owned();
            out.push((DatastoreId(id), codec::decode(&value)?));
        }
        Ok(out)
    }

    pub fn adopt_identity(&self, identity: &DatabaseIdentity) -> Result<bool, RepoError> {
        const KEY: &[u8] = b"identity";
        let _ = self
            .meta
            .compare_and_swap(KEY, None::<&[u8]>, Some(codec::encode(identity)?))?;
        self.flush()?;
        let stored: DatabaseIdentity = codec::decode(&self.meta.get(KEY)?.ok_or(
            RepoError::Inconsistent("identity vanished after its insert"),
        )?)?;
        Ok(stored.id == identity.id)
    }

    pub fn put_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        self.unlinked.insert(
            keys::blob_key(&object.datastore, &object.key),
            codec::encode(object)?,
        )?;
        Ok(())
    }
}
