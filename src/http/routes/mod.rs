//! One file per endpoint family, plus what the media-serving ones share.

use std::time::Duration;

use ruma::UserId;

use crate::{
    http::{AppState, error::ApiError},
    ids::MediaKey,
    media::Access,
};

pub mod config;
pub mod download;
pub mod federation;
pub mod health;
pub mod thumbnail;
pub mod upload;

/// Spec default for `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// Fetches another server's media into our store first, when the request
/// names some and allows it (our own media, and media already cached, pass
/// straight on; with `allow_remote=false` only the cache is looked at).
/// Unauthenticated requests never start a fetch while the freeze is on:
/// what they would fetch is new media, which the freeze never lets them see,
/// so a fetch would only spend our bandwidth and disk for an anonymous caller.
async fn fetch_if_remote(
    state: &AppState,
    key: &MediaKey,
    allow_remote: Option<bool>,
    access: Access,
    user: Option<&UserId>,
) -> Result<(), ApiError> {
    if key.server == state.media.server_name() || allow_remote == Some(false) {
        return Ok(());
    }
    if access == Access::Legacy && state.config.media.freeze_unauthenticated {
        return Ok(());
    }
    state.remote.ensure(key, user).await?;
    Ok(())
}

/// The media a download or thumbnail request names, validated before any
/// storage access, and how long it may wait for pending media.
fn media_target(
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<i64>,
) -> Result<(MediaKey, Duration), ApiError> {
    let key = MediaKey::parse(server_name, media_id)
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    let wait_ms = timeout_ms.map_or(DEFAULT_TIMEOUT_MS, |ms| u64::try_from(ms).unwrap_or(0));
    Ok((key, Duration::from_millis(wait_ms)))
}
