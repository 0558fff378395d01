//! Synapse's admin media API, same paths, parameters and JSON, for server
//! admins only: media info, deletion of one item, quarantine (by id, user
//! or room; every copy of the bytes with it), protection, and the
//! quarantine change log. Listings and bulk deletions are in `admin_bulk`.

use std::collections::HashMap;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Admin, MatrixPath, MatrixQuery},
    },
    ids::MediaKey,
    media::{MediaError, MediaInfo, records::Origin},
};

pub(super) fn media_key(server_name: &str, media_id: &str) -> Result<MediaKey, ApiError> {
    MediaKey::parse(server_name, media_id).map_err(|e| ApiError::InvalidParam(e.to_string()))
}

/// `media_info` as Synapse shapes it: local media with the uploader, remote
/// media with its origin; `last_access_ts` is null until an access is
/// recorded (coarsely: see `retention.access_granularity`).
fn info_json(info: &MediaInfo) -> Value {
    let mut out = json!({
        "media_id": info.key.id.as_str(),
        "media_type": info.content_type,
        "media_length": info.size,
        "upload_name": info.upload_name,
        "created_ts": info.created.0,
        "last_access_ts": info.last_access.map(|t| t.0),
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
    _admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    let info = state.media.media_info(&key).await?;
    Ok(Json(info_json(&info)))
}

/// `DELETE /_synapse/admin/v1/media/{server_name}/{media_id}`.
pub async fn delete_media(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    if !state.media.delete_media(&key, actor(&admin)).await? {
        return Err(MediaError::NotFound.into());
    }
    Ok(Json(json!({ "deleted_media": [media_id], "total": 1 })))
}

/// The acting admin as the audit log names them.
fn actor(admin: &Admin) -> &str {
    admin.0.user_id.as_str()
}

/// `POST /_synapse/admin/v1/media/quarantine/{server_name}/{media_id}`:
/// this media and every copy of its bytes, now and later. Synapse answers
/// `{}` whether or not the media exists; so do we (the audit log and the
/// metric say which).
pub async fn quarantine(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    state.media.quarantine(&key, actor(&admin)).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}`.
pub async fn unquarantine(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(&server_name, &media_id)?;
    state.media.unquarantine(&key, actor(&admin)).await?;
    Ok(Json(json!({})))
}

async fn protection(
    state: &AppState,
    admin: &Admin,
    media_id: &str,
    protected: bool,
) -> Result<Json<Value>, ApiError> {
    let key = media_key(state.media.server_name().as_str(), media_id)?;
    state
        .media
        .set_protected(&key, protected, actor(admin))
        .await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/protect/{media_id}` (local media).
pub async fn protect(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(media_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    protection(&state, &admin, &media_id, true).await
}

/// `POST /_synapse/admin/v1/media/unprotect/{media_id}` (local media).
pub async fn unprotect(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(media_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    protection(&state, &admin, &media_id, false).await
}

/// `POST /_synapse/admin/v1/room/{room_id}/media/quarantine` (and the
/// legacy `/quarantine_media/{room_id}`): the media the homeserver says
/// the room's events reference.
pub async fn quarantine_room(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let room = ruma::RoomId::parse(room_id.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("room id: {e}")))?;
    let count = state
        .media
        .quarantine_room(&room, &admin.1, actor(&admin))
        .await?;
    Ok(Json(json!({ "num_quarantined": count })))
}

/// `POST /_synapse/admin/v1/user/{user_id}/media/quarantine`: everything
/// the user uploaded here, protected media excepted.
pub async fn quarantine_user(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>, ApiError> {
    let user = ruma::UserId::parse(user_id.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("user id: {e}")))?;
    let count = state.media.quarantine_user(&user, actor(&admin)).await?;
    Ok(Json(json!({ "num_quarantined": count })))
}

/// Quarantine log entries per page, as Synapse.
const CHANGES_PAGE: usize = 100;

/// `GET /_synapse/admin/v1/media/quarantine_changes?from=N`: every
/// (un)quarantine in the order it happened, for trust-and-safety review.
pub async fn quarantine_changes(
    State(state): State<AppState>,
    _admin: Admin,
    MatrixQuery(query): MatrixQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let from = int_param(&query, "from")?.unwrap_or(0);
    let (changes, head) = state
        .media
        .quarantine_changes(from, CHANGES_PAGE)
        .await
        .map_err(|e| match e {
            MediaError::Invalid(message) => ApiError::InvalidParam(message),
            other => other.into(),
        })?;
    let next_batch = changes.last().map_or(head, |c| c.seq);
    let changes: Vec<Value> = changes
        .iter()
        .map(|c| {
            json!({
                "origin": c.key.server.as_str(),
                "media_id": c.key.id.as_str(),
                "quarantined": c.quarantined,
            })
        })
        .collect();
    Ok(Json(
        json!({ "next_batch": next_batch, "changes": changes }),
    ))
}

/// A non-negative integer query parameter, as Synapse parses them.
pub(super) fn int_param(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::InvalidParam(format!(
                    "Query parameter {name} must be a string representing a positive integer."
                ))
            })
        })
        .transpose()
}
