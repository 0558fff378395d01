//! Thumbnails: snap the request to a configured size, serve the stored
//! thumbnail, or make it once (identical concurrent requests share one
//! generation) on a blocking thread behind a semaphore, and store it as a
//! deduplicated blob with its record, so the next request is a plain read.
//! A small JPEG or PNG original is its own thumbnail: the record points at
//! the original's blob, and no new object is written.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use tokio::sync::Semaphore;

use super::{Access, Download, MediaError, MediaService};
use crate::{
    config::{DatastoreKind, ThumbnailConfig},
    ids::{BlobKey, MediaKey, UnixMillis},
    repo::{BlobRecord, CommitThumb, NewBlob, ThumbRecord},
    storage::StorageError,
    thumbnail::{self, Format, Limits, Method, Spec, ThumbnailError},
};

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct ThumbRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    /// `animated=true`: an animated source gives an animated thumbnail.
    /// Absent or false: always a still one (spec: MUST NOT animate on false).
    pub animated: bool,
}

/// A thumbnail ready to be served.
#[derive(Debug, Clone)]
pub struct Thumb {
    pub record: ThumbRecord,
    pub blob: BlobRecord,
}

/// Thumbnail machinery shared by every request.
pub(super) struct Thumbnailer {
    config: ThumbnailConfig,
    permits: Semaphore,
    /// Generations in progress, keyed by media and size.
    flights: moka::future::Cache<(MediaKey, Spec, bool), Thumb>,
}

impl Thumbnailer {
    pub(super) fn new(config: ThumbnailConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let permits = if config.concurrency == 0 {
            cores
        } else {
            config.concurrency
        };
        Self {
            config,
            permits: Semaphore::new(permits),
            flights: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(30))
                .build(),
        }
    }
}

impl MediaService {
    /// The thumbnail of `key` for `request`, after every check a download of
    /// it would pass (auth is the caller's, then freeze, quarantine, wait).
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %key))]
    pub async fn thumbnail(
        &self,
        key: &MediaKey,
        request: ThumbRequest,
        access: Access,
        wait: std::time::Duration,
    ) -> Result<Thumb, MediaError> {
        let download = self.open_download(key, access, wait).await?;
        let thumbs = &self.inner.thumbnailer;
        if download.record.size > thumbs.config.max_source_size.as_u64() {
            return Err(MediaError::TooLarge {
                limit: thumbs.config.max_source_size.as_u64(),
            });
        }
        let spec = thumbnail::snap(
            &thumbs.config.sizes,
            request.width,
            request.height,
            request.method,
        )
        .ok_or(MediaError::Thumbnail(ThumbnailError::Unsupported))?;
        let (k, s, animated) = (key.clone(), spec, request.animated);
        let stored = self
            .inner
            .repo
            .blocking(move |r| {
                Ok(match r.get_thumbnail(&k, &s, animated)? {
                    Some(record) => r.blob(&record.sha256)?.map(|blob| Thumb { record, blob }),
                    None => None,
                })
            })
            .await?;
        if let Some(thumb) = stored {
            return Ok(thumb);
        }
        if !thumbs.config.dynamic {
            return Err(MediaError::NotFound);
        }
        let service = self.clone();
        thumbs
            .flights
            .try_get_with((key.clone(), spec, request.animated), async move {
                service.make_thumbnail(download, spec, request).await
            })
            .await
            .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(MediaError::Shared))
    }

    async fn make_thumbnail(
        &self,
        download: Download,
        spec: Spec,
        request: ThumbRequest,
    ) -> Result<Thumb, MediaError> {
        let config = &self.inner.thumbnailer.config;
        let source = self
            .read_all(&download, config.max_source_size.as_u64())
            .await?;
        let limits = Limits {
            max_pixels: config.max_pixels,
            max_frames: config.max_frames,
        };
        let probe = thumbnail::probe(&source, limits)?;
        let (format, width, height) = (probe.format, probe.width, probe.height);
        // Small enough already, and a still picture: the original is the thumbnail.
        let still = format == Format::Jpeg || (format == Format::Png && !is_apng(&source));
        if still && width <= request.width && height <= request.height {
            let record = ThumbRecord {
                sha256: download.record.sha256,
                size: download.record.size,
                content_type: format.content_type().to_owned(),
                width,
                height,
                created: UnixMillis::now(),
            };
            let blob = NewBlob {
                datastore: download.blob.datastore.clone(),
                key: download.blob.key.clone(),
            };
            return self
                .store_thumbnail(&download.key, spec, request.animated, record, blob, None)
                .await;
        }

        let permit = self
            .inner
            .thumbnailer
            .permits
            .acquire()
            .await
            .map_err(|_| MediaError::Internal("thumbnail semaphore closed"))?;
        let animated = request.animated && probe.frames > 1;
        let made = tokio::task::spawn_blocking(move || {
            if animated && let Some(thumb) = thumbnail::generate_animated(&source, spec, limits)? {
                return Ok(thumb);
            }
            thumbnail::generate(&source, &[spec], limits)?
                .into_iter()
                .next()
                .ok_or(ThumbnailError::Encode("no thumbnail made".to_owned()))
        })
        .await
        .map_err(|_| MediaError::Internal("thumbnail task panicked"))??;
        drop(permit);

        let store = self.inner.stores.writer_for(DatastoreKind::Thumbnails)?;
        let key = BlobKey::random();
        let _ticket = self.writing(store.id(), &key);
        let bytes = Bytes::from(made.bytes);
        let sha256 =
            crate::ids::Sha256Digest(<sha2::Sha256 as sha2::Digest>::digest(&bytes).into());
        let size = bytes.len() as u64;
        store
            .put_stream(
                &key,
                Box::pin(futures::stream::once(async move { Ok(bytes) })),
            )
            .await?;
        let record = ThumbRecord {
            sha256,
            size,
            content_type: made.content_type.to_owned(),
            width: made.width,
            height: made.height,
            created: UnixMillis::now(),
        };
        let blob = NewBlob {
            datastore: store.id().clone(),
            key: key.clone(),
        };
        self.store_thumbnail(
            &download.key,
            spec,
            request.animated,
            record,
            blob,
            Some(key),
        )
        .await
    }

    /// Commits a thumbnail record; `written` is the new object to drop if
    /// the content was already stored or another request won.
    async fn store_thumbnail(
        &self,
        media: &MediaKey,
        spec: Spec,
        animated: bool,
        record: ThumbRecord,
        blob: NewBlob,
        written: Option<BlobKey>,
    ) -> Result<Thumb, MediaError> {
        let (k, r, b) = (media.clone(), record.clone(), blob.clone());
        let outcome = self
            .inner
            .repo
            .blocking(move |repo| {
                let outcome = repo.commit_thumbnail(&k, &spec, animated, &r, &b)?;
                let record = match &outcome {
                    CommitThumb::Done { .. } => r,
                    CommitThumb::Exists(existing) => existing.clone(),
                };
                let blob_record = repo.blob(&record.sha256)?;
                repo.flush()?;
                Ok((outcome, record, blob_record))
            })
            .await?;
        let (outcome, record, blob_record) = outcome;
        let surplus = !matches!(
            outcome,
            CommitThumb::Done {
                deduplicated: false
            }
        );
        if surplus && let Some(key) = written {
            let store = self.inner.stores.get(&blob.datastore)?;
            store.delete(&key).await?;
        }
        let blob = blob_record.ok_or(MediaError::Internal("thumbnail record without its blob"))?;
        Ok(Thumb { record, blob })
    }

    /// The whole blob in memory, refusing one larger than `limit`.
    async fn read_all(&self, download: &Download, limit: u64) -> Result<Vec<u8>, MediaError> {
        let mut stream = self.read(download, None).await?;
        let mut out =
            BytesMut::with_capacity(usize::try_from(download.record.size.min(limit)).unwrap_or(0));
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| MediaError::Storage(StorageError::Read(e)))?
        {
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(MediaError::TooLarge { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.to_vec())
    }
}

/// An animated PNG carries an `acTL` chunk before its image data.
fn is_apng(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let idat = head
        .windows(4)
        .position(|w| w == b"IDAT")
        .unwrap_or(head.len());
    head[..idat].windows(4).any(|w| w == b"acTL")
}
