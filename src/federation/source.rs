//! Other servers' media through the federation API, as the core's
//! [`RemoteSource`]: the authenticated federation endpoint first (signed as
//! our homeserver), the legacy media endpoint only where the remote does
//! not know it, and a `Location` answer followed through the same guard.

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use http::Method;
use ruma::{ServerName, http_headers::ContentDisposition};

use super::Federation;
use crate::{
    ids::MediaKey,
    media::ports::{RemoteAnswer, RemoteError, RemoteSource},
    multipart::PartReader,
    net::{error_chain, read_capped},
    storage::ByteStream,
};

/// How long the remote may take to have pending media ready, as asked.
const REMOTE_TIMEOUT_MS: u64 = 20_000;
/// Largest metadata part (and error body) we read.
const MAX_METADATA: usize = 64 * 1024;

fn unavailable(error: impl std::fmt::Display) -> RemoteError {
    RemoteError::Unavailable(error.to_string())
}

#[async_trait]
impl RemoteSource for Federation {
    async fn fetch(&self, key: &MediaKey) -> Result<RemoteAnswer, RemoteError> {
        if !self.can_sign() {
            return Err(RemoteError::NotConfigured);
        }
        let base = self.discover(&key.server).await.map_err(unavailable)?;
        let path = format!(
            "/_matrix/federation/v1/media/download/{}?timeout_ms={REMOTE_TIMEOUT_MS}",
            key.id
        );
        let response = self.signed_get(key, &base, &path).await?;
        if let Some(response) = classify_federation_answer(response).await? {
            return self.read_multipart(check_status(response)?).await;
        }
        // Only a server without the federation endpoint gets the legacy
        // one, and never lets it fetch from anyone else.
        let legacy = format!(
            "/_matrix/media/v3/download/{}/{}?allow_remote=false&allow_redirect=true&timeout_ms={REMOTE_TIMEOUT_MS}",
            key.server, key.id
        );
        let response = check_status(self.signed_get(key, &base, &legacy).await?)?;
        Ok(whole(response))
    }

    fn is_blocked(&self, server: &ServerName) -> bool {
        Federation::is_blocked(self, server)
    }
}

impl Federation {
    async fn signed_get(
        &self,
        key: &MediaKey,
        base: &url::Url,
        path: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let url = base.join(path).map_err(unavailable)?;
        self.guard().check_url(&url).map_err(unavailable)?;
        let authorization = self
            .sign(&key.server, &Method::GET, path)
            .ok_or(RemoteError::NotConfigured)?;
        self.client()
            .get(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| RemoteError::Unavailable(error_chain(&e)))
    }

    /// The second part of a federation media body: its bytes, or the
    /// `Location` it points at (fetched unsigned, through the same guard).
    async fn read_multipart(
        &self,
        response: reqwest::Response,
    ) -> Result<RemoteAnswer, RemoteError> {
        let bad = |e: &dyn std::fmt::Display| {
            RemoteError::Unavailable(format!("bad multipart body: {e}"))
        };
        let boundary = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .filter(|m| m.type_() == mime::MULTIPART && m.subtype() == "mixed")
            .and_then(|m| m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned()))
            .ok_or_else(|| bad(&"not multipart/mixed with a boundary"))?;
        let mut reader = PartReader::new(byte_stream(response), &boundary);
        reader.skip_preamble().await.map_err(|e| bad(&e))?;
        let _metadata_headers = reader.headers().await.map_err(|e| bad(&e))?;
        let _metadata = reader.read_part(MAX_METADATA).await.map_err(|e| bad(&e))?;
        let headers = reader.headers().await.map_err(|e| bad(&e))?;
        if let Some(location) = headers.get(reqwest::header::LOCATION) {
            let url = location
                .to_str()
                .ok()
                .and_then(|l| url::Url::parse(l).ok())
                .ok_or_else(|| bad(&"unusable Location"))?;
            self.guard().check_url(&url).map_err(unavailable)?;
            let response = self
                .client()
                .get(url)
                .send()
                .await
                .map_err(|e| RemoteError::Unavailable(error_chain(&e)))?;
            return Ok(whole(check_status(response)?));
        }
        Ok(answer(&headers, reader.into_body()))
    }
}

/// The federation answer to read, or `None` when the remote does not know
/// the federation media endpoint (404 or 400 with `M_UNRECOGNIZED`, or
/// 405/501) so the legacy one is worth a try; a plain 404 means the media
/// does not exist.
async fn classify_federation_answer(
    response: reqwest::Response,
) -> Result<Option<reqwest::Response>, RemoteError> {
    match response.status().as_u16() {
        405 | 501 => Ok(None),
        status @ (400 | 404) => {
            let body = read_capped(response, MAX_METADATA)
                .await
                .unwrap_or_default();
            let errcode = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("errcode")?.as_str().map(str::to_owned));
            match (status, errcode.as_deref()) {
                (_, Some("M_UNRECOGNIZED")) => Ok(None),
                (404, _) => Err(RemoteError::NotFound),
                _ => Err(RemoteError::Unavailable(format!("answered {status}"))),
            }
        }
        _ => Ok(Some(response)),
    }
}

fn check_status(response: reqwest::Response) -> Result<reqwest::Response, RemoteError> {
    match response.status().as_u16() {
        200..=299 => Ok(response),
        404 => Err(RemoteError::NotFound),
        status => Err(RemoteError::Unavailable(format!("answered {status}"))),
    }
}

/// Only the media's type and file name are taken from the remote's headers.
fn answer(headers: &http::HeaderMap, body: ByteStream) -> RemoteAnswer {
    RemoteAnswer {
        content_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        file_name: headers
            .get(http::header::CONTENT_DISPOSITION)
            .and_then(|v| file_name(v.as_bytes())),
        body,
    }
}

/// A plain (not multipart) answer: the media is the whole body.
fn whole(response: reqwest::Response) -> RemoteAnswer {
    let headers = response.headers().clone();
    answer(&headers, byte_stream(response))
}

/// The file name of a `Content-Disposition` value (`filename*` first).
pub fn file_name(value: &[u8]) -> Option<String> {
    ContentDisposition::try_from(value).ok()?.filename
}

fn byte_stream(response: reqwest::Response) -> ByteStream {
    response
        .bytes_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(value: &str) -> Option<String> {
        file_name(value.as_bytes())
    }

    #[test]
    fn disposition_names_are_read() {
        assert_eq!(
            name("inline; filename=\"a b.png\"").as_deref(),
            Some("a b.png")
        );
        assert_eq!(
            name("attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            name("attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt")
                .as_deref(),
            Some("€ rates.txt")
        );
        assert_eq!(name("inline"), None);
    }
}
