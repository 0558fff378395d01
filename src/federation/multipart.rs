//! The federation media body: `multipart/mixed` with exactly two parts, the
//! JSON metadata (`{}`) and then either the bytes (with their Content-Type
//! and Content-Disposition) or a `Location` to fetch them from.

use bytes::Bytes;
use futures::{StreamExt as _, stream};
use rand::Rng as _;

use crate::storage::ByteStream;

/// A fresh boundary: 32 hex digits cannot occur by chance in the media.
pub fn boundary() -> String {
    format!("mxmedia-{:032x}", rand::rng().random::<u128>())
}

/// The `Content-Type` of the whole response.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

fn head(boundary: &str) -> String {
    format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n")
}

/// Metadata, then the media's own headers and bytes, streamed.
pub fn with_bytes(
    boundary: &str,
    content_type: &str,
    content_disposition: &str,
    bytes: ByteStream,
) -> ByteStream {
    let start = format!(
        "{}Content-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n",
        head(boundary)
    );
    let end = format!("\r\n--{boundary}--\r\n");
    stream::once(async move { Ok(Bytes::from(start)) })
        .chain(bytes)
        .chain(stream::once(async move { Ok(Bytes::from(end)) }))
        .boxed()
}

/// Metadata, then a `Location` for the bytes.
pub fn with_location(boundary: &str, location: &str) -> Bytes {
    Bytes::from(format!(
        "{}Location: {location}\r\n\r\n\r\n--{boundary}--\r\n",
        head(boundary)
    ))
}
