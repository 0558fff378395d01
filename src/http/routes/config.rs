//! `GET /_matrix/client/v1/media/config` (and the legacy alias).

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::http::{AppState, error::ApiError, extract::FullUser};

/// Advertises the upload limit the server enforces.
pub async fn get_media_config(
    State(state): State<AppState>,
    _user: FullUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "m.upload.size": state.config.media.max_upload_size.as_u64() }),
    ))
}
