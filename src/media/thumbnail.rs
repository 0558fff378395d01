//! Thumbnails: snap the request to a configured size, serve the stored
//! thumbnail, or make it once (identical concurrent requests share one
//! generation) on a blocking thread behind a semaphore, and store it as a
//! deduplicated blob with its record, so the next request is a plain read.
//! A small JPEG or PNG original is its own thumbnail: the record points at
//! the original's blob, and no new object is written.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use tokio::sync::Semaphore;

use super::{
    MediaError, MediaRequest, MediaService, MediaView, Opened,
    disposition::thumbnail_disposition,
    download::{Download, Rules},
    rates::Family,
};
use crate::{
    config::{DatastoreKind, ThumbnailConfig},
    ids::{BlobKey, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{CommitThumb, NewBlob, StoredThumb, ThumbRecord, ThumbSize},
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
pub type Thumb = StoredThumb;

/// The stored size a request for `spec` is kept under.
fn stored_size(spec: Spec, animated: bool) -> ThumbSize {
    ThumbSize {
        width: spec.width,
        height: spec.height,
        crop: spec.method == Method::Crop,
        animated,
    }
}

/// Thumbnail machinery shared by every request.
pub(super) struct Thumbnailer {
    config: ThumbnailConfig,
    permits: Semaphore,
    /// Generations in progress, keyed by media and size.
    flights: moka::future::Cache<(MediaKey, Spec, bool), Thumb>,
    /// Pictures we refused to thumbnail, by content: asking again (under
    /// any id, at any size) costs no read and no decode.
    refused: moka::sync::Cache<Sha256Digest, ThumbnailError>,
}

impl Thumbnailer {
    /// The decoding budgets of the configuration.
    pub(super) fn limits(&self) -> Limits {
        let config = &self.config;
        Limits {
            max_pixels: config.max_pixels,
            max_frames: config.max_frames,
            max_bytes: config.max_job_memory.as_u64(),
            max_animation_pixels: config.max_animation_pixels,
            formats: crate::thumbnail::Formats::of(&config.formats),
        }
    }

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
            refused: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
        }
    }
}

impl MediaService {
    /// The thumbnail `spec` of the media `request` names, after every check
    /// a download of it would pass (auth is the edge's; then remote fetch,
    /// freeze, quarantine, wait). Thumbnails are always streamed by us.
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %request.key))]
    pub async fn thumbnail(
        &self,
        request: &MediaRequest<'_>,
        spec: ThumbRequest,
    ) -> Result<Opened, MediaError> {
        let result = match self
            .rate_check(Family::Downloads, request.user, request.client)
            .await
        {
            Ok(()) => self.find_or_make_thumbnail(request, spec).await,
            Err(limited) => Err(limited),
        };
        match result {
            Ok(thumb) => {
                let view = MediaView {
                    disposition: thumbnail_disposition(&thumb.record.content_type),
                    content_type: thumb.record.content_type,
                    size: thumb.record.size,
                    sha256: thumb.record.sha256,
                };
                Ok(Opened::stream(self, view, thumb.blob))
            }
            Err(error) => {
                if let Some((reason, detail)) = refusal_reason(&error) {
                    self.inner.metrics.thumbnail_refused(reason, detail);
                }
                Err(error)
            }
        }
    }

    async fn find_or_make_thumbnail(
        &self,
        media: &MediaRequest<'_>,
        request: ThumbRequest,
    ) -> Result<Thumb, MediaError> {
        let download = self.checked(media).await?;
        let key = &media.key;
        self.note_media_access(key, download.record.last_access, download.record.created);
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
        .ok_or(MediaError::Thumbnail(ThumbnailError::Unsupported(
            crate::thumbnail::Refused::NoSize,
        )))?;
        let size = stored_size(spec, request.animated);
        let stored = self.inner.meta.records.thumbnail(key, &size).await?;
        if let Some(thumb) = stored {
            let record = &thumb.record;
            self.note_thumbnail_access(key, size, record.last_access, record.created);
            return Ok(thumb);
        }
        if !thumbs.config.dynamic {
            return Err(MediaError::NotFound);
        }
        self.rate_check(Family::Thumbnails, media.user, media.client)
            .await?;
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
        // One instance makes it; the others wait, then find it stored.
        let size = stored_size(spec, request.animated);
        let key = &download.key;
        let work = format!(
            "thumbnail {key} {}x{} {} {}",
            size.width, size.height, size.crop, size.animated
        );
        let _flight = self.inner.meta.housekeeping.exclusive(&work).await?;
        if let Some(thumb) = self.inner.meta.records.thumbnail(key, &size).await? {
            return Ok(thumb);
        }
        let wanted = [(spec, request.width, request.height)];
        let mut made = self.produce(&download, &wanted, request.animated).await?;
        made.pop().ok_or(MediaError::Internal("no thumbnail made"))
    }

    /// Makes every configured size of freshly uploaded media from one
    /// decode. Runs detached from the upload, which it can neither delay
    /// nor fail; what it cannot do is simply made on request later.
    pub(super) fn pregenerate(&self, key: MediaKey) {
        if !self.inner.thumbnailer.config.pregenerate {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move { service.pregenerate_now(&key).await });
    }

    /// Makes every configured size of `key` now, from one decode (images
    /// within the source size cap only); how many it made. What it cannot
    /// make is made on request later, so failures are counted, not raised.
    pub async fn pregenerate_now(&self, key: &MediaKey) -> usize {
        let metrics = &self.inner.metrics;
        let download = match self
            .open_download(key, Rules::client(), std::time::Duration::ZERO)
            .await
        {
            Ok(download) => download,
            Err(error) => {
                metrics.pregeneration("skipped");
                tracing::debug!(mxc = %key, %error, "no pre-generation");
                return 0;
            }
        };
        let config = &self.inner.thumbnailer.config;
        if download.record.size > config.max_source_size.as_u64()
            || !download.record.content_type.starts_with("image/")
        {
            metrics.pregeneration("skipped");
            return 0;
        }
        let wanted: Vec<_> = config
            .sizes
            .iter()
            .map(|s| (*s, s.width, s.height))
            .collect();
        match self.produce(&download, &wanted, false).await {
            Ok(made) => {
                metrics.pregeneration("made");
                tracing::debug!(mxc = %key, count = made.len(), "thumbnails pre-generated");
                made.len()
            }
            Err(error) => {
                metrics.pregeneration("refused");
                tracing::debug!(mxc = %key, %error, "pre-generation failed");
                0
            }
        }
    }

    /// The thumbnails `wanted` (size, and the request's own width and height
    /// for the small-original rule) of `download`, from one read and one
    /// decode of the source, each stored as it is made.
    async fn produce(
        &self,
        download: &Download,
        wanted: &[(Spec, u32, u32)],
        animated: bool,
    ) -> Result<Vec<Thumb>, MediaError> {
        let thumbs = &self.inner.thumbnailer;
        let digest = download.record.sha256;
        if let Some(refusal) = thumbs.refused.get(&digest) {
            return Err(refusal.into());
        }
        // The permit comes before any byte is buffered, so the memory of
        // generations in progress is bounded by permits x (source + job).
        let _permit = thumbs
            .permits
            .acquire()
            .await
            .map_err(|_| MediaError::Internal("thumbnail semaphore closed"))?;
        let result = self.produce_with_permit(download, wanted, animated).await;
        if let Err(MediaError::Thumbnail(refusal)) = &result
            && !matches!(refusal, ThumbnailError::Encode(_))
        {
            thumbs.refused.insert(digest, refusal.clone());
        }
        result
    }

    async fn produce_with_permit(
        &self,
        download: &Download,
        wanted: &[(Spec, u32, u32)],
        animated: bool,
    ) -> Result<Vec<Thumb>, MediaError> {
        let limits = self.inner.thumbnailer.limits();
        // Sniff and read the header from a small read: a non-image or an
        // oversized picture is refused without reading the rest.
        let head_len = download.record.size.min(HEAD_READ);
        let head = self.read_exact(download, Some(0..head_len)).await?;
        thumbnail::probe_head(&head, limits)?;
        drop(head);
        let source = self.read_exact(download, None).await?;
        let probe = thumbnail::probe(&source, limits)?;
        // Small enough already, and a still picture: the original is the thumbnail.
        let still =
            probe.format == Format::Jpeg || (probe.format == Format::Png && !is_apng(&source));
        let mut done = Vec::with_capacity(wanted.len());
        let mut to_make = Vec::new();
        for &(spec, width, height) in wanted {
            if still && probe.width <= width && probe.height <= height {
                let record = ThumbRecord {
                    sha256: download.record.sha256,
                    size: download.record.size,
                    content_type: probe.format.content_type().to_owned(),
                    width: probe.width,
                    height: probe.height,
                    created: UnixMillis::now(),
                    last_access: None,
                };
                let blob = NewBlob {
                    datastore: download.blob.datastore.clone(),
                    key: download.blob.key.clone(),
                };
                done.push(
                    self.store_thumbnail(&download.key, spec, animated, record, blob, None)
                        .await?,
                );
            } else {
                to_make.push(spec);
            }
        }
        if to_make.is_empty() {
            return Ok(done);
        }

        let animate = animated && probe.frames > 1;
        let made = tokio::task::spawn_blocking(move || {
            if animate
                && let [spec] = to_make.as_slice()
                && let Some(thumb) = thumbnail::generate_animated(&source, *spec, limits)?
            {
                return Ok(vec![thumb]);
            }
            thumbnail::generate(&source, &to_make, limits)
        })
        .await
        .map_err(|_| MediaError::Internal("thumbnail task panicked"))??;
        self.inner
            .metrics
            .thumbnails_generated(animate, made.len() as u64);

        let store = self.inner.stores.writer_for(DatastoreKind::Thumbnails)?;
        for thumb in made {
            let key = BlobKey::random();
            let _ticket = self.writing(store.id(), &key).await?;
            let bytes = Bytes::from(thumb.bytes);
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
                content_type: thumb.content_type.to_owned(),
                width: thumb.width,
                height: thumb.height,
                created: UnixMillis::now(),
                last_access: None,
            };
            let blob = NewBlob {
                datastore: store.id().clone(),
                key: key.clone(),
            };
            done.push(
                self.store_thumbnail(&download.key, thumb.spec, animated, record, blob, Some(key))
                    .await?,
            );
        }
        Ok(done)
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
        let outcome = self
            .inner
            .meta
            .records
            .commit_thumbnail(media, &stored_size(spec, animated), &record, &blob)
            .await?;
        let (surplus, stored) = match outcome {
            CommitThumb::Done {
                deduplicated,
                stored,
            } => (deduplicated, Some(stored)),
            CommitThumb::Exists(stored) => (true, Some(stored)),
            CommitThumb::MediaGone => (true, None),
        };
        if surplus && let Some(key) = written {
            let store = self.inner.stores.get(&blob.datastore)?;
            store.delete(&key).await?;
        }
        stored.ok_or(MediaError::NotFound)
    }

    /// The whole blob (or `range` of it) in one buffer of exactly its size:
    /// no growth, no second copy. A blob longer than its record is an error.
    async fn read_exact(
        &self,
        download: &Download,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Vec<u8>, MediaError> {
        let len = range
            .as_ref()
            .map_or(download.record.size, |r| r.end - r.start);
        let mut stream = self.read(download, range).await?;
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| MediaError::Storage(StorageError::Read(e)))?
        {
            if (out.len() + chunk.len()) as u64 > len {
                return Err(MediaError::Internal("blob is longer than its record"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Bytes read to sniff a file and read its header before reading it all.
const HEAD_READ: u64 = 64 * 1024;

/// An animated PNG carries an `acTL` chunk before its image data.
/// Why a thumbnail was refused, for the metrics; `None` for errors that are
/// not a refusal of the picture (not found, storage, auth).
/// The detail is the kind of file for `unsupported`, the kind of failure
/// for `decode_failed`, and empty otherwise.
fn refusal_reason(error: &MediaError) -> Option<(&'static str, &'static str)> {
    match error {
        MediaError::TooLarge { .. } => Some(("source_too_large", "")),
        MediaError::Thumbnail(e) => Some(match e {
            ThumbnailError::Unsupported(kind) => ("unsupported", kind.label()),
            ThumbnailError::TooManyPixels { .. } => ("too_many_pixels", ""),
            ThumbnailError::TooManyFrames(_) => ("too_many_frames", ""),
            ThumbnailError::TooExpensive { .. } => ("over_memory_budget", ""),
            ThumbnailError::Decode(failure, _) => ("decode_failed", failure.label()),
            ThumbnailError::Encode(_) => ("encode_failed", ""),
        }),
        MediaError::Shared(shared) => refusal_reason(shared),
        _ => None,
    }
}

fn is_apng(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let idat = head
        .windows(4)
        .position(|w| w == b"IDAT")
        .unwrap_or(head.len());
    head[..idat].windows(4).any(|w| w == b"acTL")
}
