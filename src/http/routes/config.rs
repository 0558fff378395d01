//! `GET /_matrix/client/v1/media/config` (and the legacy alias), and the
//! media usage of MSC4034 with its config fields.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::http::{AppState, error::ApiError, extract::FullUser};

/// Advertises the upload limit the server enforces for this user's class.
pub async fn get_media_config(
    State(state): State<AppState>,
    FullUser(user): FullUser,
) -> Result<Json<Value>, ApiError> {
    let limit = state.media.upload_limit(Some(&user.user_id));
    Ok(Json(json!({ "m.upload.size": limit })))
}

/// MSC4034's config: the upload limit plus the user's storage quota
/// (absent when there is none).
pub async fn get_quota_config(
    State(state): State<AppState>,
    FullUser(user): FullUser,
) -> Result<Json<Value>, ApiError> {
    let usage = state.media.usage_of(&user.user_id).await?;
    let mut out = json!({ "m.upload.size": state.media.upload_limit(Some(&user.user_id)) });
    if let Some(max) = usage.max_bytes {
        out["m.storage.size"] = json!(max);
        out["org.matrix.msc4034.storage.size"] = json!(max);
    }
    if let Some(max) = usage.max_files {
        out["m.storage.max_files"] = json!(max);
        out["org.matrix.msc4034.storage.max_files"] = json!(max);
    }
    Ok(Json(out))
}

/// MSC4034's usage: what the user has stored against their quota, under
/// the proposal's field names and their unstable twins.
pub async fn get_usage(
    State(state): State<AppState>,
    FullUser(user): FullUser,
) -> Result<Json<Value>, ApiError> {
    let usage = state.media.usage_of(&user.user_id).await?;
    Ok(Json(json!({
        "m.storage.used": usage.bytes,
        "m.storage.files": usage.files,
        "org.matrix.msc4034.storage.used": usage.bytes,
        "org.matrix.msc4034.storage.files": usage.files,
    })))
}
