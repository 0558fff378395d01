//! Multipart bodies, both ways: the framing of every part we write (the
//! federation media body, `multipart/byteranges` answers to multi-range
//! requests), and a reader that takes another server's federation media
//! body apart, the last part streamed.
//!
//! The federation media body is `multipart/mixed` with exactly two parts:
//! the JSON metadata (`{}`), then either the bytes (with their Content-Type
//! and Content-Disposition) or a `Location` to fetch them from.

use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _, stream, stream::BoxStream};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

use crate::storage::ByteStream;

/// Largest part headers (and preamble) the reader accepts.
const MAX_PART_HEAD: usize = 16 * 1024;

/// Why a multipart body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("a part is too large")]
    PartTooLarge,
    #[error("the body ended early")]
    Truncated,
    #[error("fewer parts than the spec's two")]
    TooFewParts,
    #[error("unreadable part headers")]
    BadHeaders,
    #[error("reading the body: {0}")]
    Read(#[source] std::io::Error),
}

/// A fresh boundary: 32 hex digits cannot occur by chance in the media.
pub fn boundary() -> String {
    format!("mxmedia-{:032x}", rand::rng().random::<u128>())
}

/// The `Content-Type` of a federation media body.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// What comes before a part's bytes: the delimiter (after the previous
/// part's bytes unless `first`), the part's headers and the blank line.
pub fn part_head(boundary: &str, first: bool, headers: &[(&str, &str)]) -> Bytes {
    let mut head = String::new();
    if !first {
        head.push_str("\r\n");
    }
    head.push_str("--");
    head.push_str(boundary);
    head.push_str("\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Bytes::from(head)
}

/// What ends the body, after the last part's bytes.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// The federation body's first part: empty JSON metadata.
fn metadata(boundary: &str) -> Bytes {
    let mut out =
        BytesMut::from(&part_head(boundary, true, &[("Content-Type", "application/json")])[..]);
    out.extend_from_slice(b"{}");
    out.freeze()
}

/// Metadata, then the media's own headers and bytes, streamed.
pub fn with_bytes(
    boundary: &str,
    content_type: &str,
    content_disposition: &str,
    bytes: ByteStream,
) -> ByteStream {
    let head = part_head(
        boundary,
        false,
        &[
            ("Content-Type", content_type),
            ("Content-Disposition", content_disposition),
        ],
    );
    let start = [metadata(boundary), head].concat();
    let end = closing(boundary);
    stream::once(async move { Ok(Bytes::from(start)) })
        .chain(bytes)
        .chain(stream::once(async move { Ok(end) }))
        .boxed()
}

/// Metadata, then a `Location` for the bytes.
pub fn with_location(boundary: &str, location: &str) -> Bytes {
    [
        metadata(boundary),
        part_head(boundary, false, &[("Location", location)]),
        closing(boundary),
    ]
    .concat()
    .into()
}

/// Reads a multipart body part by part, streaming the last one.
pub struct PartReader {
    input: BoxStream<'static, std::io::Result<Bytes>>,
    buffer: BytesMut,
    /// `\r\n--boundary`: what ends every part.
    delimiter: Vec<u8>,
}

impl PartReader {
    pub fn new(input: BoxStream<'static, std::io::Result<Bytes>>, boundary: &str) -> Self {
        Self {
            input,
            buffer: BytesMut::new(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
        }
    }

    async fn fill(&mut self) -> Result<bool, MultipartError> {
        match self.input.next().await {
            Some(Ok(chunk)) => {
                self.buffer.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Read(e)),
            None => Ok(false),
        }
    }

    /// Reads until `needle`, returning what came before it (at most `cap`
    /// bytes) and consuming the needle.
    async fn until(&mut self, needle: &[u8], cap: usize) -> Result<Bytes, MultipartError> {
        // Where the needle may still start: bytes already searched are not
        // searched again, so a body trickled in byte by byte costs linear
        // time, not quadratic.
        let mut from = 0;
        loop {
            if let Some(at) = find(&self.buffer[from..], needle).map(|at| at + from) {
                // One network chunk may carry more than the cap before
                // the needle: the cap holds whatever the chunking.
                if at > cap {
                    return Err(MultipartError::PartTooLarge);
                }
                let before = self.buffer.split_to(at).freeze();
                let _ = self.buffer.split_to(needle.len());
                return Ok(before);
            }
            if self.buffer.len() > cap + needle.len() {
                return Err(MultipartError::PartTooLarge);
            }
            from = self.buffer.len().saturating_sub(needle.len() - 1);
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
    }

    /// Up to and past the first boundary line.
    pub async fn skip_preamble(&mut self) -> Result<(), MultipartError> {
        // The first delimiter may come without the leading CRLF.
        let first = self.delimiter[2..].to_vec();
        self.until(&first, MAX_PART_HEAD).await?;
        self.after_delimiter().await
    }

    /// After a delimiter: CRLF starts another part, `--` ends the body.
    async fn after_delimiter(&mut self) -> Result<(), MultipartError> {
        while self.buffer.len() < 2 {
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
        if self.buffer.starts_with(b"--") {
            return Err(MultipartError::TooFewParts);
        }
        // Transport padding may precede the CRLF.
        self.until(b"\r\n", MAX_PART_HEAD).await.map(|_| ())
    }

    pub async fn headers(&mut self) -> Result<HeaderMap, MultipartError> {
        let mut raw = self.until(b"\r\n\r\n", MAX_PART_HEAD).await?.to_vec();
        raw.extend_from_slice(b"\r\n\r\n");
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&raw, &mut slots)
        else {
            return Err(MultipartError::BadHeaders);
        };
        let mut headers = HeaderMap::new();
        for h in parsed {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                headers.append(name, value);
            }
        }
        Ok(headers)
    }

    /// A whole (small) part, then past its delimiter.
    pub async fn read_part(&mut self, cap: usize) -> Result<Bytes, MultipartError> {
        let delimiter = self.delimiter.clone();
        let part = self.until(&delimiter, cap).await?;
        self.after_delimiter().await?;
        Ok(part)
    }

    /// The rest of the current part as a stream, ending at its delimiter; a
    /// body that ends without one is an error, so a cut-off transfer is
    /// never stored as complete.
    pub fn into_body(self) -> ByteStream {
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
                    return Err(std::io::Error::other(MultipartError::Truncated));
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

    /// Metadata parts in tests are tiny.
    const MAX_METADATA: usize = 64 * 1024;

    fn chunked(body: &[u8], size: usize) -> BoxStream<'static, std::io::Result<Bytes>> {
        let chunks: Vec<std::io::Result<Bytes>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    async fn second_part(body: &[u8], size: usize) -> Result<(String, Vec<u8>), MultipartError> {
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
            .map_err(MultipartError::Read)?;
        Ok((content_type, bytes.concat()))
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

    /// A part over its cap is refused whether it arrives in many chunks or
    /// in one with its delimiter (found by the `multipart` fuzz target's
    /// property: one network chunk carried a metadata part past the cap).
    #[tokio::test]
    async fn the_cap_holds_whatever_the_chunking() {
        let body = b"--BOUND\r\nContent-Type: application/json\r\n\r\n0123456789\r\n--BOUND\r\n\r\nx\r\n--BOUND--";
        for size in [1, 3, 16, body.len()] {
            let mut reader = PartReader::new(chunked(body, size), "BOUND");
            reader.skip_preamble().await.unwrap();
            reader.headers().await.unwrap();
            assert!(
                matches!(reader.read_part(5).await, Err(MultipartError::PartTooLarge)),
                "chunks of {size}"
            );
            let mut reader = PartReader::new(chunked(body, size), "BOUND");
            reader.skip_preamble().await.unwrap();
            reader.headers().await.unwrap();
            assert_eq!(&reader.read_part(10).await.unwrap()[..], b"0123456789");
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

    /// What the writer sends, the reader reads back, byte for byte.
    #[tokio::test]
    async fn the_writer_and_the_reader_agree() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let b = boundary();
        let body = with_bytes(
            &b,
            "image/png",
            "inline; filename=\"a.png\"",
            futures::stream::iter([Ok(Bytes::from(payload.clone()))]).boxed(),
        );
        let written: Vec<Bytes> = body.try_collect().await.unwrap();
        let mut reader = PartReader::new(chunked(&written.concat(), 1000), &b);
        reader.skip_preamble().await.unwrap();
        reader.headers().await.unwrap();
        assert_eq!(
            reader.read_part(MAX_METADATA).await.unwrap().as_ref(),
            b"{}"
        );
        let headers = reader.headers().await.unwrap();
        assert_eq!(headers["content-type"], "image/png");
        let bytes: Vec<Bytes> = reader.into_body().try_collect().await.unwrap();
        assert_eq!(bytes.concat(), payload);
        let location = with_location(&b, "https://cdn.example/x");
        let mut reader = PartReader::new(chunked(&location, 7), &b);
        reader.skip_preamble().await.unwrap();
        reader.headers().await.unwrap();
        reader.read_part(MAX_METADATA).await.unwrap();
        assert_eq!(
            reader.headers().await.unwrap()["location"],
            "https://cdn.example/x"
        );
    }
}
