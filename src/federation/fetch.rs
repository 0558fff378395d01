//! Fetching another server's media for our clients: once per mxc however
//! many ask at once, signed as our homeserver, the federation endpoint first
//! and the legacy one only where the remote does not know it, size- and
//! time-capped, failures remembered, busy hosts backed off, and the result
//! stored as `remote_media` under its own key. Nothing of the remote's
//! response passes through but the media's type, name and bytes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::Method;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _, stream::BoxStream};
use ruma::{OwnedServerName, OwnedUserId, UserId};

use super::Federation;
use crate::{
    ids::MediaKey,
    media::{MediaError, MediaService, Pace, UploadMeta, clean_filename},
    repo::MediaState,
};

/// How long the remote may take to have pending media ready, as asked.
const REMOTE_TIMEOUT_MS: u64 = 20_000;
/// Largest part headers and metadata part we read.
const MAX_PART_HEAD: usize = 16 * 1024;
const MAX_METADATA: usize = 64 * 1024;
/// Longest a host is backed off after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error, Clone)]
pub enum FetchError {
    #[error("the remote server does not have this media")]
    NotFound,
    #[error("media from this server is blocked here")]
    Blocked,
    #[error("the remote file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("fetching remote media is not configured here")]
    NotConfigured,
    #[error("the remote server failed: {0}")]
    Unavailable(String),
    #[error("the remote server failed recently; not retried yet")]
    BackingOff,
    /// Every remote-fetch slot stayed taken while this request waited.
    #[error("too many remote fetches at once; try again shortly")]
    Busy { retry_after: Duration },
    /// The user's remote-fetch byte budget for the current window is spent.
    #[error("you have fetched too much remote media; try again later")]
    OverBudget { retry_after: Duration },
}

impl FetchError {
    /// Whether the failure says something about the media or its server
    /// (worth remembering), rather than about our own load or the caller.
    fn is_remote_failure(&self) -> bool {
        !matches!(self, Self::Busy { .. } | Self::OverBudget { .. })
    }
}

/// Bytes of remote media one user has made us fetch in the current window.
#[derive(Debug, Clone, Copy)]
struct Spent {
    since: Instant,
    bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

struct Inner {
    federation: Federation,
    media: MediaService,
    limit: u64,
    flights: moka::future::Cache<MediaKey, ()>,
    failures: moka::future::Cache<MediaKey, FetchError>,
    backoff: moka::sync::Cache<OwnedServerName, Backoff>,
    /// Fetches running at once, across all remote servers.
    slots: tokio::sync::Semaphore,
    /// Bytes fetched per user in the current budget window.
    spent: moka::sync::Cache<OwnedUserId, Spent>,
}

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct RemoteMedia {
    inner: Arc<Inner>,
}

impl RemoteMedia {
    pub fn new(federation: Federation, media: MediaService, upload_limit: u64) -> Self {
        let config = federation.config();
        let limit = config
            .max_remote_size
            .map_or(upload_limit, |size| size.as_u64());
        let failures = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.failure_cache_ttl)
            .build();
        let slots = tokio::sync::Semaphore::new(config.max_concurrent_fetches);
        let spent = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.user_budget_window)
            .build();
        Self {
            inner: Arc::new(Inner {
                federation,
                media,
                limit,
                flights: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(1))
                    .build(),
                failures,
                backoff: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(MAX_BACKOFF)
                    .build(),
                slots,
                spent,
            }),
        }
    }

    /// Makes sure `key`, another server's media, is in our store: a no-op
    /// for our own media and for media already cached. A fetch started for
    /// `user` counts against their byte budget.
    pub async fn ensure(&self, key: &MediaKey, user: Option<&UserId>) -> Result<(), FetchError> {
        let inner = &self.inner;
        if key.server == inner.federation.server_name() {
            return Ok(());
        }
        if inner.federation.is_blocked(&key.server) {
            return Err(FetchError::Blocked);
        }
        let k = key.clone();
        let cached = inner
            .media
            .repo()
            .blocking(move |r| r.get(&k))
            .await
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        if matches!(cached, Some(MediaState::Complete(_))) {
            return Ok(());
        }
        if let Some(failure) = inner.failures.get(key).await {
            return Err(failure);
        }
        if let Some(user) = user {
            self.check_budget(user)?;
        }
        let this = self.clone();
        let k = key.clone();
        let payer = user.map(ToOwned::to_owned);
        let result = inner
            .flights
            .try_get_with(key.clone(), async move {
                let size = this.fetch(&k).await?;
                if let Some(user) = payer {
                    this.charge(user, size);
                }
                Ok(())
            })
            .await
            .map_err(|e: Arc<FetchError>| (*e).clone());
        if let Err(error) = &result
            && error.is_remote_failure()
        {
            inner.failures.insert(key.clone(), error.clone()).await;
        }
        result
    }

    /// Refuses a user who has used up their budget in this window.
    fn check_budget(&self, user: &UserId) -> Result<(), FetchError> {
        let config = self.inner.federation.config();
        let Some(spent) = self.inner.spent.get(user) else {
            return Ok(());
        };
        let window_end = spent.since + config.user_budget_window;
        if spent.bytes >= config.user_budget.as_u64() && window_end > Instant::now() {
            return Err(FetchError::OverBudget {
                retry_after: window_end.saturating_duration_since(Instant::now()),
            });
        }
        Ok(())
    }

    fn charge(&self, user: OwnedUserId, bytes: u64) {
        let window = self.inner.federation.config().user_budget_window;
        let now = Instant::now();
        self.inner.spent.entry(user).and_upsert_with(|current| {
            match current.map(moka::Entry::into_value) {
                Some(spent) if spent.since + window > now => Spent {
                    since: spent.since,
                    bytes: spent.bytes.saturating_add(bytes),
                },
                _ => Spent { since: now, bytes },
            }
        });
    }

    /// Fetches and stores `key`; its size on success.
    async fn fetch(&self, key: &MediaKey) -> Result<u64, FetchError> {
        let inner = &self.inner;
        if !inner.federation.can_sign() {
            return Err(FetchError::NotConfigured);
        }
        if let Some(backoff) = inner.backoff.get(&key.server)
            && backoff.until > Instant::now()
        {
            return Err(FetchError::BackingOff);
        }
        let config = inner.federation.config();
        let Ok(Ok(_slot)) =
            tokio::time::timeout(config.fetch_queue_timeout, inner.slots.acquire()).await
        else {
            return Err(FetchError::Busy {
                retry_after: Duration::from_secs(5),
            });
        };
        let total = config.total_timeout;
        let deadline = tokio::time::Instant::now() + total;
        let result =
            match tokio::time::timeout_at(deadline, self.fetch_and_store(key, deadline)).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Unavailable(format!(
                    "no complete answer within {total:?}"
                ))),
            };
        match &result {
            Err(FetchError::Unavailable(_)) => {
                let failures = inner.backoff.get(&key.server).map_or(0, |b| b.failures) + 1;
                let delay = Duration::from_secs(1 << failures.min(10)).min(MAX_BACKOFF);
                inner.backoff.insert(
                    key.server.clone(),
                    Backoff {
                        failures,
                        until: Instant::now() + delay,
                    },
                );
            }
            _ => inner.backoff.invalidate(&key.server),
        }
        if let Err(error) = &result {
            tracing::info!(mxc = %key, %error, "remote media not fetched");
        }
        result
    }

    async fn fetch_and_store(
        &self,
        key: &MediaKey,
        deadline: tokio::time::Instant,
    ) -> Result<u64, FetchError> {
        let inner = &self.inner;
        let unavailable = |e: String| FetchError::Unavailable(e);
        let base = inner
            .federation
            .discover(&key.server)
            .await
            .map_err(unavailable)?;
        let path = format!(
            "/_matrix/federation/v1/media/download/{}?timeout_ms={REMOTE_TIMEOUT_MS}",
            key.id
        );
        let response = self.signed_get(key, &base, &path).await?;
        let (response, unrecognized) = classify_federation_answer(response).await?;
        let (meta, body) = if unrecognized {
            // Only a server without the federation endpoint gets the legacy
            // one, and never lets it fetch from anyone else.
            let legacy = format!(
                "/_matrix/media/v3/download/{}/{}?allow_remote=false&allow_redirect=true&timeout_ms={REMOTE_TIMEOUT_MS}",
                key.server, key.id
            );
            let response = self.signed_get(key, &base, &legacy).await?;
            let response = check_status(response)?;
            (meta_from(response.headers()), byte_stream(response))
        } else {
            let response =
                response.ok_or_else(|| FetchError::Unavailable("no answer".to_owned()))?;
            let response = check_status(response)?;
            self.read_multipart(response).await?
        };
        // The body's own deadline and cap stop the transfer itself: the
        // write runs detached, and would otherwise go on reading after this
        // future is dropped at the deadline.
        let pace = Pace {
            limit: inner.limit,
            idle: inner.federation.config().idle_timeout,
            min_rate: 0,
            deadline: deadline.saturating_duration_since(tokio::time::Instant::now()),
        };
        inner
            .media
            .store_remote(key.clone(), meta, body, pace)
            .await
            .map_err(|e| match e {
                MediaError::TooLarge { limit } => FetchError::TooLarge { limit },
                other => FetchError::Unavailable(other.to_string()),
            })
    }

    async fn signed_get(
        &self,
        key: &MediaKey,
        base: &url::Url,
        path: &str,
    ) -> Result<reqwest::Response, FetchError> {
        let federation = &self.inner.federation;
        let url = base
            .join(path)
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        federation
            .guard()
            .check_url(&url)
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        let authorization = federation
            .sign(&key.server, &Method::GET, path)
            .ok_or(FetchError::NotConfigured)?;
        federation
            .client()
            .get(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(error_chain(&e)))
    }

    /// The second part of a federation media body: its bytes, or the
    /// `Location` it points at (fetched unsigned, through the same guard).
    async fn read_multipart(
        &self,
        response: reqwest::Response,
    ) -> Result<(UploadMeta, crate::storage::ByteStream), FetchError> {
        let bad = |e: &str| FetchError::Unavailable(format!("bad multipart body: {e}"));
        let boundary = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .filter(|m| m.type_() == mime::MULTIPART && m.subtype() == "mixed")
            .and_then(|m| m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned()))
            .ok_or_else(|| bad("not multipart/mixed with a boundary"))?;
        let mut reader = PartReader::new(
            response
                .bytes_stream()
                .map_err(std::io::Error::other)
                .boxed(),
            &boundary,
        );
        reader.skip_preamble().await.map_err(|e| bad(&e))?;
        let _metadata_headers = reader.headers().await.map_err(|e| bad(&e))?;
        let _metadata = reader.read_part(MAX_METADATA).await.map_err(|e| bad(&e))?;
        let headers = reader.headers().await.map_err(|e| bad(&e))?;
        if let Some(location) = headers.get(reqwest::header::LOCATION) {
            let url = location
                .to_str()
                .ok()
                .and_then(|l| url::Url::parse(l).ok())
                .ok_or_else(|| bad("unusable Location"))?;
            let federation = &self.inner.federation;
            federation
                .guard()
                .check_url(&url)
                .map_err(|e| FetchError::Unavailable(e.to_string()))?;
            let response = federation
                .client()
                .get(url)
                .send()
                .await
                .map_err(|e| FetchError::Unavailable(error_chain(&e)))?;
            let response = check_status(response)?;
            return Ok((meta_from(response.headers()), byte_stream(response)));
        }
        Ok((meta_from(&headers), reader.into_body()))
    }
}

/// Whether the remote does not know the federation media endpoint (404 or
/// 400 with `M_UNRECOGNIZED`, or 405/501), so the legacy one is worth a
/// try; a plain 404 means the media does not exist.
async fn classify_federation_answer(
    response: reqwest::Response,
) -> Result<(Option<reqwest::Response>, bool), FetchError> {
    match response.status().as_u16() {
        405 | 501 => Ok((None, true)),
        400 | 404 => {
            let status = response.status().as_u16();
            let body = super::read_capped(response, MAX_METADATA)
                .await
                .unwrap_or_default();
            let errcode = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("errcode")?.as_str().map(str::to_owned));
            match (status, errcode.as_deref()) {
                (_, Some("M_UNRECOGNIZED")) => Ok((None, true)),
                (404, _) => Err(FetchError::NotFound),
                _ => Err(FetchError::Unavailable(format!("answered {status}"))),
            }
        }
        _ => Ok((Some(response), false)),
    }
}

fn check_status(response: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    match response.status().as_u16() {
        200..=299 => Ok(response),
        404 => Err(FetchError::NotFound),
        status => Err(FetchError::Unavailable(format!("answered {status}"))),
    }
}

/// Only the media's type and name are kept from the remote's headers.
fn meta_from(headers: &reqwest::header::HeaderMap) -> UploadMeta {
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| v.parse::<mime::Mime>().is_ok())
        .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned);
    let upload_name = headers
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(filename_from_disposition)
        .and_then(|name| clean_filename(&name));
    UploadMeta {
        content_type,
        upload_name,
    }
}

/// The file name of a `Content-Disposition` value: `filename*` (RFC 8187,
/// UTF-8) first, else `filename`.
fn filename_from_disposition(value: &str) -> Option<String> {
    let params: Vec<(String, &str)> = value
        .split(';')
        .skip(1)
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim()))
        })
        .collect();
    let extended = params
        .iter()
        .find(|(n, _)| n == "filename*")
        .and_then(|(_, v)| {
            let (charset, rest) = v.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            charset
                .eq_ignore_ascii_case("utf-8")
                .then(|| {
                    percent_encoding::percent_decode_str(encoded)
                        .decode_utf8()
                        .ok()
                })
                .flatten()
                .map(std::borrow::Cow::into_owned)
        });
    extended.or_else(|| {
        params.iter().find(|(n, _)| n == "filename").map(|(_, v)| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map_or_else(|| (*v).to_owned(), |v| v.replace("\\\"", "\""))
        })
    })
}

fn byte_stream(response: reqwest::Response) -> crate::storage::ByteStream {
    response
        .bytes_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a multipart body part by part, streaming the last one.
struct PartReader {
    input: BoxStream<'static, std::io::Result<Bytes>>,
    buffer: BytesMut,
    /// `\r\n--boundary`: what ends every part.
    delimiter: Vec<u8>,
}

impl PartReader {
    fn new(input: BoxStream<'static, std::io::Result<Bytes>>, boundary: &str) -> Self {
        Self {
            input,
            buffer: BytesMut::new(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
        }
    }

    async fn fill(&mut self) -> Result<bool, String> {
        match self.input.next().await {
            Some(Ok(chunk)) => {
                self.buffer.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(false),
        }
    }

    /// Reads until `needle`, returning what came before it (at most `cap`
    /// bytes) and consuming the needle.
    async fn until(&mut self, needle: &[u8], cap: usize) -> Result<Bytes, String> {
        loop {
            if let Some(at) = find(&self.buffer, needle) {
                let before = self.buffer.split_to(at).freeze();
                let _ = self.buffer.split_to(needle.len());
                return Ok(before);
            }
            if self.buffer.len() > cap + needle.len() {
                return Err("a part is too large".to_owned());
            }
            if !self.fill().await? {
                return Err("the body ended early".to_owned());
            }
        }
    }

    /// Up to and past the first boundary line.
    async fn skip_preamble(&mut self) -> Result<(), String> {
        // The first delimiter may come without the leading CRLF.
        let first = self.delimiter[2..].to_vec();
        self.until(&first, MAX_PART_HEAD).await?;
        self.after_delimiter().await
    }

    /// After a delimiter: CRLF starts another part, `--` ends the body.
    async fn after_delimiter(&mut self) -> Result<(), String> {
        while self.buffer.len() < 2 {
            if !self.fill().await? {
                return Err("the body ended early".to_owned());
            }
        }
        if self.buffer.starts_with(b"--") {
            return Err("fewer parts than the spec's two".to_owned());
        }
        // Transport padding may precede the CRLF.
        self.until(b"\r\n", MAX_PART_HEAD).await.map(|_| ())
    }

    async fn headers(&mut self) -> Result<reqwest::header::HeaderMap, String> {
        let mut raw = self.until(b"\r\n\r\n", MAX_PART_HEAD).await?.to_vec();
        raw.extend_from_slice(b"\r\n\r\n");
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&raw, &mut slots)
        else {
            return Err("unreadable part headers".to_owned());
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for h in parsed {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(h.name.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(h.value),
            ) {
                headers.append(name, value);
            }
        }
        Ok(headers)
    }

    /// A whole (small) part, then past its delimiter.
    async fn read_part(&mut self, cap: usize) -> Result<Bytes, String> {
        let delimiter = self.delimiter.clone();
        let part = self.until(&delimiter, cap).await?;
        self.after_delimiter().await?;
        Ok(part)
    }

    /// The rest of the current part as a stream, ending at its delimiter; a
    /// body that ends without one is an error, so a cut-off transfer is
    /// never stored as complete.
    fn into_body(self) -> crate::storage::ByteStream {
        futures::stream::try_unfold(Some(self), |state| async move {
            let Some(mut reader) = state else {
                return Ok(None);
            };
            loop {
                if let Some(at) = find(&reader.buffer, &reader.delimiter) {
                    let last = reader.buffer.split_to(at).freeze();
                    return Ok(Some((last, None)));
                }
                // Keep what could be the start of the delimiter.
                let keep = reader.delimiter.len() - 1;
                if reader.buffer.len() > keep {
                    let ready = reader.buffer.split_to(reader.buffer.len() - keep).freeze();
                    return Ok(Some((ready, Some(reader))));
                }
                if !reader.fill().await.map_err(std::io::Error::other)? {
                    return Err(std::io::Error::other("the remote body ended early"));
                }
            }
        })
        .try_filter(|chunk| futures::future::ready(!chunk.is_empty()))
        .boxed()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(body: &[u8], size: usize) -> BoxStream<'static, std::io::Result<Bytes>> {
        let chunks: Vec<std::io::Result<Bytes>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    async fn second_part(body: &[u8], size: usize) -> Result<(String, Vec<u8>), String> {
        let mut reader = PartReader::new(chunked(body, size), "BOUND");
        reader.skip_preamble().await?;
        reader.headers().await?;
        reader.read_part(MAX_METADATA).await?;
        let headers = reader.headers().await?;
        let content_type = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes: Vec<Bytes> = reader
            .into_body()
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((content_type, bytes.concat()))
    }

    #[test]
    fn disposition_names_are_read() {
        assert_eq!(
            filename_from_disposition("inline; filename=\"a b.png\"").as_deref(),
            Some("a b.png")
        );
        assert_eq!(
            filename_from_disposition("attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            filename_from_disposition(
                "attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
            )
            .as_deref(),
            Some("€ rates.txt")
        );
        assert_eq!(filename_from_disposition("inline"), None);
    }

    #[tokio::test]
    async fn parts_are_read_whatever_the_chunking() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut body = b"--BOUND\r\nContent-Type: application/json\r\n\r\n{}\r\n--BOUND\r\nContent-Type: image/png\r\n\r\n".to_vec();
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\r\n--BOUND--\r\n");
        for size in [1, 2, 3, 7, 64, 4096, 100_000] {
            let (ct, bytes) = second_part(&body, size).await.unwrap();
            assert_eq!(ct, "image/png");
            assert_eq!(bytes, payload, "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn truncated_or_malformed_bodies_fail() {
        let good = b"--BOUND\r\nContent-Type: application/json\r\n\r\n{}\r\n--BOUND\r\nContent-Type: text/plain\r\n\r\nhello\r\n--BOUND--\r\n";
        assert!(second_part(good, 5).await.is_ok());
        // Cut off before the closing delimiter: never a complete file.
        assert!(second_part(&good[..good.len() - 14], 5).await.is_err());
        // One part only.
        let one = b"--BOUND\r\nContent-Type: application/json\r\n\r\n{}\r\n--BOUND--\r\n";
        assert!(second_part(one, 5).await.is_err());
        // Endless headers are cut off.
        let mut endless = b"--BOUND\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 100_000));
        assert!(second_part(&endless, 4096).await.is_err());
    }
}
