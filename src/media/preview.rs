//! URL previews: the Open Graph of a page for a client to show under a
//! link. The previewer adapter fetches (through the address guard, within
//! its budgets); here each URL is previewed once at a time (concurrent
//! requests share the fetch), answers and failures are cached, previews
//! are rate-limited per user and address and run a bounded number at once,
//! and the image that stands for a page is stored as this server's own
//! media (so it is served, thumbnailed and quarantined like any other),
//! with its size and dimensions.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use ruma::UserId;
use serde_json::{Map, Value, json};
use url::Url;

use super::{
    MediaError, MediaService,
    meter::Pace,
    ports::{Fetched, Lookup, PreviewError, Previewer},
    rates::Family,
    upload::{UploadMeta, UploadTarget},
};
use crate::{config::UrlPreviewConfig, storage::ByteStream, thumbnail};

/// Bytes of a preview image kept aside to read its dimensions from.
const HEAD: usize = 64 * 1024;
/// Longest a preview waits for a free fetch slot.
const QUEUE: Duration = Duration::from_secs(30);

/// A preview, or why there is none (cached either way).
type Outcome = Result<Arc<Map<String, Value>>, PreviewError>;

struct CacheExpiry {
    ok: Duration,
    failed: Duration,
}

impl moka::Expiry<String, Outcome> for CacheExpiry {
    fn expire_after_create(&self, _: &String, value: &Outcome, _: Instant) -> Option<Duration> {
        Some(if value.is_ok() { self.ok } else { self.failed })
    }
}

/// The preview machinery, when previews are on.
pub(super) struct Previews {
    previewer: Arc<dyn Previewer>,
    cache: moka::future::Cache<String, Outcome>,
    permits: tokio::sync::Semaphore,
    image_pace: Pace,
}

impl Previews {
    pub(super) fn new(previewer: Arc<dyn Previewer>, config: &UrlPreviewConfig) -> Self {
        Self {
            previewer,
            cache: moka::future::Cache::builder()
                .max_capacity(config.cache_entries)
                .expire_after(CacheExpiry {
                    ok: config.cache_ttl,
                    failed: config.failure_ttl,
                })
                .build(),
            permits: tokio::sync::Semaphore::new(config.concurrency.max(1)),
            image_pace: Pace {
                limit: config.max_image_size.as_u64(),
                idle: config.timeout,
                min_rate: 0,
                deadline: config.timeout,
            },
        }
    }
}

/// One `preview_url` request.
pub struct PreviewRequest<'a> {
    pub url: &'a str,
    pub user: &'a UserId,
    pub client: Option<IpAddr>,
}

impl MediaService {
    /// Whether `/preview_url` is served.
    pub fn previews_enabled(&self) -> bool {
        self.inner.previews.is_some()
    }

    /// The Open Graph of `request.url`: `og:*` properties, and the page's
    /// image as an `mxc://` URI of ours with its type, dimensions and size.
    pub async fn preview_url(
        &self,
        request: &PreviewRequest<'_>,
    ) -> Result<Arc<Map<String, Value>>, MediaError> {
        let previews = self.inner.previews.as_ref().ok_or(MediaError::NotFound)?;
        let mut url = Url::parse(request.url.trim())
            .map_err(|e| MediaError::Invalid(format!("Invalid URL: {e}")))?;
        // A fragment is never sent: one page, one cache entry.
        url.set_fragment(None);
        if !previews.previewer.permits(&url) {
            return Err(MediaError::Preview(PreviewError::Blocked(
                "URL blocked by the URL preview patterns".to_owned(),
            )));
        }
        self.rate_check(Family::Previews, Some(request.user), request.client)
            .await?;
        let key = url.to_string();
        let service = self.clone();
        let outcome = previews
            .cache
            .get_with(key, async move { service.make_preview(&url).await })
            .await;
        if outcome.is_ok() {
            self.inner.metrics.preview("served");
        }
        outcome.map_err(MediaError::Preview)
    }

    async fn make_preview(&self, url: &Url) -> Outcome {
        let Some(previews) = self.inner.previews.as_ref() else {
            return Err(PreviewError::Failed("previews are off".to_owned()));
        };
        let _permit = tokio::time::timeout(QUEUE, previews.permits.acquire())
            .await
            .map_err(|_| PreviewError::Failed("too many previews at once".to_owned()))?
            .map_err(|_| PreviewError::Failed("previews are shutting down".to_owned()))?;
        let fetched = previews.previewer.page(url).await;
        let mut og = Map::new();
        match fetched {
            Ok(Fetched::Page { og: found, image }) => {
                for (name, value) in found {
                    og.entry(name).or_insert(Value::String(value));
                }
                if let Some(image) = image
                    && let Ok(Fetched::Media {
                        content_type,
                        length,
                        body,
                    }) = previews.previewer.image(&image).await
                {
                    og.extend(self.store_image(content_type, length, body).await);
                }
                self.inner.metrics.preview("page");
            }
            Ok(Fetched::Media {
                content_type,
                length,
                body,
            }) => {
                og.extend(self.store_image(content_type, length, body).await);
                self.inner.metrics.preview("image");
            }
            Ok(Fetched::Other) => self.inner.metrics.preview("other"),
            Err(error) => {
                self.inner.metrics.preview("failed");
                tracing::debug!(%url, %error, "no preview");
                return Err(error);
            }
        }
        Ok(Arc::new(og))
    }

    /// Stores a preview image as our own media; its `og:image` fields, or
    /// none when it is too large, not really an image, or quarantined.
    async fn store_image(
        &self,
        content_type: String,
        length: Option<u64>,
        body: ByteStream,
    ) -> Map<String, Value> {
        let Some(previews) = self.inner.previews.as_ref() else {
            return Map::new();
        };
        let pace = previews.image_pace;
        if length.is_some_and(|len| len > pace.limit) {
            return Map::new();
        }
        // Only what really is an image is stored: the first bytes decide.
        let Some((first, rest)) = peek(body, 16).await else {
            return Map::new();
        };
        if thumbnail::sniff(&first).is_none() {
            return Map::new();
        }
        let head = Arc::new(Mutex::new(Vec::new()));
        let body = keep_head(first, rest, head.clone());
        let meta = UploadMeta {
            content_type: content_type.clone(),
            upload_name: None,
            declared_length: length,
            client: None,
        };
        let stored = self
            .store(None, meta, body, UploadTarget::Fetched { pace })
            .await;
        let (key, size) = match stored {
            Ok(stored) => stored,
            Err(error) => {
                tracing::debug!(%error, "preview image not stored");
                return Map::new();
            }
        };
        // Bytes quarantined elsewhere arrive quarantined: not shown.
        match self.inner.meta.records.lookup(&key).await {
            Ok(Lookup::Complete { record, .. }) if !record.quarantined => {}
            _ => return Map::new(),
        }
        // Shown only when its header reads as an image within the pixel
        // budget (a decompression bomb is stored, never shown).
        let head = head.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = self.inner.thumbnailer.limits();
        let Ok(Some((_, width, height))) = thumbnail::probe_head(&head, limits) else {
            return Map::new();
        };
        let mut og = Map::new();
        og.insert("og:image".to_owned(), json!(key.to_string()));
        og.insert("og:image:type".to_owned(), json!(content_type));
        og.insert("og:image:width".to_owned(), json!(width));
        og.insert("og:image:height".to_owned(), json!(height));
        og.insert("matrix:image:size".to_owned(), json!(size));
        og
    }
}

/// At least `n` first bytes of `body` (fewer only if it is shorter), and
/// the rest of it; `None` if it fails or is empty.
async fn peek(mut body: ByteStream, n: usize) -> Option<(Bytes, ByteStream)> {
    let mut first = Vec::new();
    while first.len() < n {
        match body.next().await {
            Some(Ok(chunk)) => first.extend_from_slice(&chunk),
            Some(Err(_)) => return None,
            None => break,
        }
    }
    (!first.is_empty()).then(|| (Bytes::from(first), body))
}

/// `first` then `rest`, with the first `HEAD` bytes copied into `head`.
fn keep_head(first: Bytes, rest: ByteStream, head: Arc<Mutex<Vec<u8>>>) -> ByteStream {
    futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                let mut head = head.lock().unwrap_or_else(PoisonError::into_inner);
                let take = HEAD.saturating_sub(head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
        })
        .boxed()
}
