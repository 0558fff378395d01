//! Small helpers every outbound HTTP client shares (the homeserver's token
//! check, federation, URL previews): reading a body under a cap, and
//! describing an error with its causes.

use bytes::Bytes;

/// Why a capped body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CappedError {
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("reading the body: {0}")]
    Read(#[source] reqwest::Error),
}

/// Reads a response body, refusing one over `limit` bytes as it arrives
/// (or at once, when its declared length says so).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, CappedError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(CappedError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(CappedError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// `error: cause: cause…`, for logs and reports.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
