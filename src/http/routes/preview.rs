//! `GET /_matrix/client/v1/media/preview_url` and the legacy aliases: the
//! Open Graph of a URL, for clients to show under a link. Authenticated on
//! every route (Synapse asks for a token on the legacy ones too); 404
//! `M_UNRECOGNIZED` while previews are off, as Synapse answers then.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Client, FullUser},
    },
    media::PreviewRequest,
};

#[derive(Deserialize)]
pub struct PreviewQuery {
    url: Option<String>,
    /// The point in time the client would like a preview of; a preview
    /// from the cache (at most `url_previews.cache_ttl` old) is as good.
    #[allow(dead_code)]
    ts: Option<i64>,
}

pub async fn preview_url(
    State(state): State<AppState>,
    FullUser(user): FullUser,
    Client(client): Client,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    if !state.media.previews_enabled() {
        return Err(ApiError::Unrecognized);
    }
    let url = query
        .url
        .ok_or_else(|| ApiError::MissingParam("Missing url parameter".to_owned()))?;
    let request = PreviewRequest {
        url: &url,
        user: &user.user_id,
        client,
    };
    let preview = state.media.preview_url(&request).await?;
    Ok(Json((*preview).clone()))
}
