//! One file per endpoint family, plus what the media-serving ones share.

use std::time::Duration;

use crate::{
    http::{AppState, error::ApiError},
    ids::MediaKey,
    media::MediaError,
};

pub mod config;
pub mod download;
pub mod federation;
pub mod health;
pub mod thumbnail;
pub mod upload;

/// Spec default for `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// The media a download or thumbnail request names, validated before any
/// storage access, and how long it may wait for pending media. With
/// `allow_remote=false`, other servers' media is refused up front.
fn media_target(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<i64>,
    allow_remote: Option<bool>,
) -> Result<(MediaKey, Duration), ApiError> {
    let key = MediaKey::parse(server_name, media_id)
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    if allow_remote == Some(false) && key.server != state.media.server_name() {
        return Err(MediaError::NotFound.into());
    }
    let wait_ms = timeout_ms.map_or(DEFAULT_TIMEOUT_MS, |ms| u64::try_from(ms).unwrap_or(0));
    Ok((key, Duration::from_millis(wait_ms)))
}
