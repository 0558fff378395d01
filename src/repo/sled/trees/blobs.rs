//! The blob index of the sled database: blob records by digest and by
//! object key, moves between datastores, the sweep's view of keys, and the
//! objects deletions released.

use sled::Transactional;

use super::{Trees, abort, flatten, keys, tx_get};
use crate::{
    ids::{BlobKey, DatastoreId, Sha256Digest},
    media::ports::{BlobRecord, RepoError, Unlinked},
};

use super::super::codec;

impl Trees {
    pub fn unlinked(&self, limit: usize) -> Result<Vec<Unlinked>, RepoError> {
        let mut out = Vec::new();
        for entry in self.unlinked.iter().take(limit) {
            out.push(codec::decode(&entry?.1)?);
        }
        Ok(out)
    }

    pub fn forget_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        self.unlinked
            .remove(keys::blob_key(&object.datastore, &object.key))?;
        Ok(())
    }

    pub fn blob(&self, sha256: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError> {
        Ok(self
            .blobs
            .get(sha256.0)?
            .map(|v| codec::decode(&v))
            .transpose()?)
    }

    pub fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let prefix = keys::blob_key_prefix(datastore);
        let start = match after {
            Some(key) => {
                let mut k = keys::blob_key(datastore, key);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for entry in self.blob_keys.range(start..) {
            let (key, digest) = entry?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let mut bytes = [0u8; 32];
            if digest.len() == 32 {
                bytes.copy_from_slice(&digest);
                let digest = Sha256Digest(bytes);
                if let Some(record) = self.blob(&digest)? {
                    out.push((digest, record));
                }
            }
        }
        Ok(out)
    }

    pub fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError> {
        let mut n = 0;
        for entry in self.blob_keys.scan_prefix(keys::blob_key_prefix(datastore)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    pub fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let iter = match after {
            Some(d) => self.blobs.range((
                std::ops::Bound::Excluded(d.0.to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.blobs.iter(),
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (key, value) = entry?;
            if key.len() == 32 {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&key);
                out.push((Sha256Digest(bytes), codec::decode(&value)?));
            }
        }
        Ok(out)
    }

    pub fn move_blob(
        &self,
        digest: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError> {
        let old_key = keys::blob_key(from.0, from.1);
        let new_key = keys::blob_key(to.0, to.1);
        let outcome =
            (&self.blobs, &self.blob_keys).transaction(|(blobs, blob_keys)| {
                match tx_get::<BlobRecord>(blobs, &digest.0)? {
                    Some(mut record) if &record.datastore == from.0 && &record.key == from.1 => {
                        record.datastore = to.0.clone();
                        record.key = to.1.clone();
                        blobs.insert(&digest.0[..], codec::encode(&record).map_err(abort)?)?;
                        blob_keys.remove(old_key.as_slice())?;
                        blob_keys.insert(new_key.as_slice(), &digest.0[..])?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            });
        flatten(outcome)
    }

    pub fn unknown_keys(
        &self,
        datastore: &DatastoreId,
        listed: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError> {
        let mut unknown = Vec::new();
        for key in listed {
            if !self
                .blob_keys
                .contains_key(keys::blob_key(datastore, &key))?
            {
                unknown.push(key);
            }
        }
        Ok(unknown)
    }
}
