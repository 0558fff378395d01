//! Reading stored media back out: every record and thumbnail page by page
//! with its bytes from the datastore (never the hot cache), for exports to
//! another media repository and for an import's read-back check.

use super::{
    MediaError, MediaService,
    ports::{Lookup, MediaRecord, ThumbRecord, ThumbSize},
};
use crate::{
    ids::{MediaKey, Sha256Digest},
    storage::{ByteStream, StorageError, digest::digest_stream},
};

/// What reading stored media back found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Its bytes are there, with the recorded size and digest (and the
    /// expected one, when given).
    Intact,
    /// No complete media of that id.
    NotStored,
    /// The record is there, its object is not.
    Missing,
    /// The object holds other bytes than recorded or expected.
    Differs { size: u64, sha256: Sha256Digest },
}

impl MediaService {
    /// The next `limit` stored thumbnails after `after`, which it moves
    /// past them; empty once every thumbnail was read.
    pub async fn thumbnail_page(
        &self,
        after: &mut Option<(MediaKey, ThumbSize)>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, ThumbSize, ThumbRecord)>, MediaError> {
        let page = self
            .inner
            .meta
            .catalog
            .thumbnails_after(after.as_ref(), limit)
            .await?;
        if let Some((key, size, _)) = page.last() {
            *after = Some((key.clone(), *size));
        }
        Ok(page)
    }

    /// `key`'s record and bytes, read from its datastore; `None` when there
    /// is no complete media of that id or its object is gone.
    pub async fn read_media(
        &self,
        key: &MediaKey,
    ) -> Result<Option<(MediaRecord, ByteStream)>, MediaError> {
        let Lookup::Complete {
            record,
            blob: Some(blob),
        } = self.inner.meta.records.lookup(key).await?
        else {
            return Ok(None);
        };
        let store = self.inner.stores.get(&blob.datastore)?;
        match store.open(&blob.key, None).await {
            Ok(body) => Ok(Some((record, body))),
            Err(StorageError::NotFound) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// The bytes of `key`'s thumbnail at `size`; `None` when it is gone.
    pub async fn read_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<ByteStream>, MediaError> {
        let Some(thumb) = self.inner.meta.records.thumbnail(key, size).await? else {
            return Ok(None);
        };
        let store = self.inner.stores.get(&thumb.blob.datastore)?;
        match store.open(&thumb.blob.key, None).await {
            Ok(body) => Ok(Some(body)),
            Err(StorageError::NotFound) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Reads `key`'s bytes back from its datastore and compares them with
    /// its record and with `expected`.
    pub async fn verify_stored(
        &self,
        key: &MediaKey,
        expected: Option<Sha256Digest>,
    ) -> Result<Verified, MediaError> {
        let (record, body) = match self.read_media(key).await? {
            Some(read) => read,
            None if self.is_stored(key).await? => return Ok(Verified::Missing),
            None => return Ok(Verified::NotStored),
        };
        let (size, sha256) = digest_stream(body)
            .await
            .map_err(|e| MediaError::Storage(StorageError::Read(e)))?;
        let intact =
            size == record.size && sha256 == record.sha256 && expected.is_none_or(|e| e == sha256);
        Ok(if intact {
            Verified::Intact
        } else {
            Verified::Differs { size, sha256 }
        })
    }
}
