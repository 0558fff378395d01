//! Access times and thumbnails for retention in the sled database: batched
//! touches, thumbnails in key order, and the removal of one thumbnail.

use sled::Transactional;

use super::{MediaState, Trees, abort, flatten, keys, release_blob, tx_get};
use crate::{
    ids::{MediaKey, UnixMillis},
    media::ports::{Accesses, RepoError, ThumbRecord, ThumbSize, Unlinked},
};

use super::super::codec;

/// The later of a stored access time and a new one.
fn later(stored: Option<UnixMillis>, at: UnixMillis) -> UnixMillis {
    stored.map_or(at, |s| s.max(at))
}

impl Trees {
    pub fn touch(&self, accesses: &Accesses) -> Result<(), RepoError> {
        for (key, at) in &accesses.media {
            let media_key = keys::media(key);
            let outcome = self.media.transaction(|media| {
                if let Some(MediaState::Complete(mut record)) =
                    tx_get::<MediaState>(media, &media_key)?
                    && record.last_access.is_none_or(|s| s < *at)
                {
                    record.last_access = Some(later(record.last_access, *at));
                    let value = codec::encode(&MediaState::Complete(record)).map_err(abort)?;
                    media.insert(media_key.as_slice(), value)?;
                }
                Ok(())
            });
            flatten(outcome)?;
        }
        for (key, size, at) in &accesses.thumbnails {
            let thumb_key = keys::thumb(key, size);
            let outcome = self.thumbs.transaction(|thumbs| {
                if let Some(mut record) = tx_get::<ThumbRecord>(thumbs, &thumb_key)?
                    && record.last_access.is_none_or(|s| s < *at)
                {
                    record.last_access = Some(later(record.last_access, *at));
                    let value = codec::encode(&record).map_err(abort)?;
                    thumbs.insert(thumb_key.as_slice(), value)?;
                }
                Ok(())
            });
            flatten(outcome)?;
        }
        Ok(())
    }

    pub fn thumbnails_after(
        &self,
        after: Option<&(MediaKey, ThumbSize)>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, ThumbSize, ThumbRecord)>, RepoError> {
        let iter = match after {
            Some((key, size)) => self.thumbs.range((
                std::ops::Bound::Excluded(keys::thumb(key, size)),
                std::ops::Bound::Unbounded,
            )),
            None => self.thumbs.iter(),
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (entry, value) = entry?;
            let (key, size) = keys::parse_thumb(&entry)
                .ok_or_else(|| RepoError::Corrupt("thumbnail key".to_owned()))?;
            out.push((key, size, codec::decode(&value)?));
        }
        Ok(out)
    }

    pub fn delete_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<Vec<Unlinked>>, RepoError> {
        let _thumbs = self
            .thumb_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let thumb_key = keys::thumb(key, size);
        let outcome = (&self.thumbs, &self.blobs, &self.blob_keys, &self.unlinked).transaction(
            |(thumbs, blobs, blob_keys, unlinked)| {
                let Some(thumb) = tx_get::<ThumbRecord>(thumbs, &thumb_key)? else {
                    return Ok(None);
                };
                thumbs.remove(thumb_key.as_slice())?;
                let mut released = Vec::new();
                release_blob(blobs, blob_keys, unlinked, &thumb.sha256, &mut released)?;
                Ok(Some(released))
            },
        );
        flatten(outcome)
    }
}
