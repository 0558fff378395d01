//! Synapse's admin media API, same paths, parameters and JSON, for server
//! admins only: media info, quarantine and unquarantine by id, protect and
//! unprotect, and deletion of local media.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Admin, MatrixPath},
    },
    ids::MediaKey,
    media::{MediaError, MediaInfo, records::Moderation, records::Origin},
};

fn media_key(server_name: &str, media_id: &str) -> Result<MediaKey, ApiError> {
    MediaKey::parse(server_name, media_id).map_err(|e| ApiError::InvalidParam(e.to_string()))
}

/// `media_info` as Synapse shapes it: local media with the uploader, remote
/// media with its origin. mxmedia keeps no separate last-access time yet,
/// so `last_access_ts` is the creation time.
fn info_json(info: &MediaInfo) -> Value {
    let mut out = json!({
        "media_id": info.key.id.as_str(),
        "media_type": info.content_type,
        "media_length": info.size,
        "upload_name": info.upload_name,
        "created_ts": info.created.0,
        "last_access_ts": info.created.0,
        "quarantined_by": if info.quarantined {
            Value::from(info.quarantined_by.clone().unwrap_or_default())
        } else {
            Value::Null
        },
        "authenticated": info.requires_auth,
        "sha256": info.sha256.to_hex(),
    });
    match info.origin {
        Origin::Local => {
            out["user_id"] = json!(info.uploader);
            out["url_cache"] = Value::Null;
            out["safe_from_quarantine"] = json!(info.protected);
        }
        Origin::Remote => {
            out["media_origin"] = json!(info.key.server.as_str());
            out["filesystem_id"] = json!(info.key.id.as_str());
        }
    }
    json!({ "media_info": out })
}

/// `GET /_synapse/admin/v1/media/{server_name}/{media_id}`.
pub async fn media_info(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    let info = state.media.media_info(&key).await?;
    Ok(Json(info_json(&info)))
}

/// `DELETE /_synapse/admin/v1/media/{server_name}/{media_id}`.
pub async fn delete_media(
    State(state): State<AppState>,
    Admin(admin): Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    if !state.media.delete_media(&key, &admin.user_id).await? {
        return Err(MediaError::NotFound.into());
    }
    Ok(Json(json!({ "deleted_media": [media_id], "total": 1 })))
}

async fn moderate(
    state: &AppState,
    admin: &Admin,
    key: &MediaKey,
    change: Moderation,
) -> Result<Json<Value>, ApiError> {
    // Synapse answers `{}` whether or not the media exists; so do we (the
    // audit log and the metric say which).
    state.media.moderate(key, change, &admin.0.user_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/quarantine/{server_name}/{media_id}`.
pub async fn quarantine(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    let by = admin.0.user_id.to_string();
    moderate(&state, &admin, &key, Moderation::Quarantine { by }).await
}

/// `POST /_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}`.
pub async fn unquarantine(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    moderate(&state, &admin, &key, Moderation::Unquarantine).await
}

/// `POST /_synapse/admin/v1/media/protect/{media_id}` (local media).
pub async fn protect(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(media_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(state.media.server_name().as_str(), &media_id)?;
    moderate(&state, &admin, &key, Moderation::Protect).await
}

/// `POST /_synapse/admin/v1/media/unprotect/{media_id}` (local media).
pub async fn unprotect(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(media_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(state.media.server_name().as_str(), &media_id)?;
    moderate(&state, &admin, &key, Moderation::Unprotect).await
}
