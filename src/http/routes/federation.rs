//! Other servers fetching our media: `GET /_matrix/federation/v1/media/download/{mediaId}`
//! and `/thumbnail/{mediaId}`, answered as `multipart/mixed` after the
//! request's `X-Matrix` signature checks out; and our key document at
//! `GET /_matrix/key/v2/server` when mxmedia holds the signing key. Only our
//! own media is served, and nothing here ever fetches from another server.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{MatrixPath, MatrixQuery},
    },
    media::{Access, Body as Source, MediaError, MediaRequest, Opened},
    multipart,
};

use super::thumbnail::ThumbnailQuery;

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<i64>,
}

fn multipart_response(boundary: &str, body: Body) -> Response {
    let content_type = HeaderValue::from_str(&multipart::content_type(boundary))
        .unwrap_or_else(|_| HeaderValue::from_static("multipart/mixed"));
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, content_type);
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    (StatusCode::OK, out, body).into_response()
}

/// Checks the request's `X-Matrix` signature, then names our media
/// `media_id` and how long the request may wait for it.
async fn signed_request(
    state: &AppState,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    media_id: &str,
    timeout_ms: Option<i64>,
) -> Result<MediaRequest<'static>, ApiError> {
    state.federation.authenticate(method, uri, headers).await?;
    super::media_request(
        (state.media.server_name().as_str(), media_id),
        Access::Federation,
        None,
        timeout_ms,
        (Some(false), None),
    )
}

/// The multipart answer for opened media: a `Location` part for a
/// redirect, else the bytes with their own headers.
async fn answer(opened: Opened) -> Result<Response, ApiError> {
    let boundary = multipart::boundary();
    let reader = match opened.body {
        Source::Redirect(presigned) => {
            let body = multipart::with_location(&boundary, presigned.url.as_str());
            return Ok(multipart_response(&boundary, Body::from(body)));
        }
        Source::Stream(reader) => reader,
    };
    let bytes = reader.read(None).await?;
    let view = &opened.view;
    let body = multipart::with_bytes(&boundary, &view.content_type, &view.disposition, bytes);
    Ok(multipart_response(&boundary, Body::from_stream(body)))
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub async fn download(
    State(state): State<AppState>,
    MatrixPath(media_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let parts = (&method, &uri, &request_headers);
    let request = signed_request(&state, parts, &media_id, query.timeout_ms).await?;
    answer(state.media.download(&request, None).await?).await
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`.
pub async fn thumbnail(
    State(state): State<AppState>,
    MatrixPath(media_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let parts = (&method, &uri, &request_headers);
    let request = signed_request(&state, parts, &media_id, query.timeout_ms).await?;
    let spec = query.request()?;
    answer(state.media.thumbnail(&request, spec).await?).await
}

/// `GET /_matrix/key/v2/server`: our homeserver's published key.
pub async fn server_keys(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.federation.own_keys().ok_or(MediaError::NotFound)?;
    Ok(Json(keys).into_response())
}
