//! One file per endpoint family, plus what the media-serving ones share.

use std::time::Duration;

use ruma::UserId;

use crate::{
    http::error::ApiError,
    ids::MediaKey,
    media::{Access, MediaRequest},
};

pub mod admin;
pub mod admin_bulk;
pub mod config;
pub mod download;
pub mod federation;
pub mod health;
pub mod preview;
pub mod thumbnail;
pub mod upload;

/// Spec default for `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// The typed request of a download or thumbnail route: the media named,
/// validated before any storage access, who asks, and how long it may wait
/// for pending media. `allow_remote` and `allow_redirect` are the legacy
/// routes' parameters (defaults: true and false).
fn media_request<'a>(
    (server_name, media_id): (&str, &str),
    access: Access,
    user: Option<&'a UserId>,
    timeout_ms: Option<i64>,
    (allow_remote, allow_redirect): (Option<bool>, Option<bool>),
) -> Result<MediaRequest<'a>, ApiError> {
    let key = MediaKey::parse(server_name, media_id)
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    let wait_ms = timeout_ms.map_or(DEFAULT_TIMEOUT_MS, |ms| u64::try_from(ms).unwrap_or(0));
    Ok(MediaRequest {
        key,
        access,
        user,
        allow_remote: allow_remote != Some(false),
        allow_redirect: allow_redirect == Some(true),
        wait: Duration::from_millis(wait_ms),
        bypass_quarantine: false,
        client: None,
    })
}
