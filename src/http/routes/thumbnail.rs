//! `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}` and the
//! legacy `/_matrix/media/{r0,v1,v3}/thumbnail/...` (frozen media is 404
//! there, as for downloads).

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    auth::Requester,
    http::{
        AppState,
        error::ApiError,
        extract::{Client, MatrixPath, MatrixQuery},
        headers,
    },
    media::{Access, Body as Source, MediaError, ThumbRequest},
    thumbnail::Method,
};

/// Raw, so a missing parameter and a malformed one get different errcodes.
#[derive(Debug, Deserialize)]
pub struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    pub(super) timeout_ms: Option<i64>,
    allow_remote: Option<bool>,
    /// Legacy only; thumbnails are always served directly.
    #[allow(dead_code)]
    allow_redirect: Option<bool>,
}

fn dimension(name: &str, value: Option<&str>) -> Result<u32, ApiError> {
    let value = value.ok_or_else(|| ApiError::MissingParam(format!("{name} is required")))?;
    match value.parse::<u32>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ApiError::InvalidParam(format!(
            "{name} must be a positive integer"
        ))),
    }
}

impl ThumbnailQuery {
    pub(super) fn request(&self) -> Result<ThumbRequest, ApiError> {
        let width = dimension("width", self.width.as_deref())?;
        let height = dimension("height", self.height.as_deref())?;
        let method = match self.method.as_deref() {
            None | Some("scale") => Method::Scale,
            Some("crop") => Method::Crop,
            Some(_) => {
                return Err(ApiError::InvalidParam(
                    "method must be crop or scale".to_owned(),
                ));
            }
        };
        let animated = match self.animated.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::InvalidParam(
                    "animated must be true or false".to_owned(),
                ));
            }
        };
        Ok(ThumbRequest {
            width,
            height,
            method,
            animated,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ThumbnailPath {
    server_name: String,
    media_id: String,
}

/// Authenticated thumbnail; guests allowed (spec v1.12).
pub async fn get_thumbnail(
    State(state): State<AppState>,
    requester: Requester,
    MatrixPath(path): MatrixPath<ThumbnailPath>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
    client: Client,
    method: HttpMethod,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(
        &state,
        &path,
        &query,
        (Access::Authenticated, Some(&requester.user_id), client),
        &method,
        &request_headers,
    )
    .await
}

/// Legacy unauthenticated thumbnail; media created during the freeze is 404.
pub async fn get_thumbnail_legacy(
    State(state): State<AppState>,
    MatrixPath(path): MatrixPath<ThumbnailPath>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
    client: Client,
    method: HttpMethod,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(
        &state,
        &path,
        &query,
        (Access::Legacy, None, client),
        &method,
        &request_headers,
    )
    .await
}

async fn serve(
    state: &AppState,
    path: &ThumbnailPath,
    query: &ThumbnailQuery,
    (access, user, Client(client)): (Access, Option<&ruma::UserId>, Client),
    method: &HttpMethod,
    request_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut request = super::media_request(
        (&path.server_name, &path.media_id),
        access,
        user,
        query.timeout_ms,
        (query.allow_remote, None),
    )?;
    request.client = client;
    let spec = query.request()?;
    let opened = state.media.thumbnail(&request, spec).await?;
    let Source::Stream(reader) = opened.body else {
        return Err(ApiError::Media(MediaError::Internal(
            "a thumbnail was offered as a redirect",
        )));
    };
    let view = &opened.view;
    let etag = format!("\"{}\"", view.sha256.to_hex());
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        headers::content_type(&view.content_type),
    );
    // Spec: thumbnails are always inline, with a file name.
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&view.disposition)
            .unwrap_or_else(|_| HeaderValue::from_static("inline")),
    );
    headers::insert_media_security(&mut out);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    if headers::etag_matches(request_headers.get(header::IF_NONE_MATCH), &etag) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(view.size));
    let body = if method == HttpMethod::HEAD {
        Body::empty()
    } else {
        Body::from_stream(reader.read(None).await?)
    };
    Ok((StatusCode::OK, out, body).into_response())
}
