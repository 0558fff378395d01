//! `GET`/`HEAD` download: the authenticated `/_matrix/client/v1/media/download`
//! and the legacy unauthenticated `/_matrix/media/{r0,v1,v3}/download`, each
//! with and without a trailing `{fileName}`; Range, conditional requests.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Authenticated, Client, MatrixPath, MatrixQuery},
        headers,
        range::{self, RangeRequest},
    },
    media::{Access, Body as Source, MediaRequest, MediaView, Reader},
    multipart,
    storage::Presigned,
};

#[derive(Debug, Deserialize)]
pub struct DownloadPath {
    server_name: String,
    media_id: String,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<i64>,
    /// Legacy only (default true): `false` means "never fetch from another
    /// server", which breaks fetch loops between servers.
    allow_remote: Option<bool>,
    /// Legacy only (default false): without `true` the legacy endpoints
    /// must send the bytes themselves, never a redirect.
    allow_redirect: Option<bool>,
    /// Authenticated only: a server admin sees quarantined media anyway
    /// (Synapse's parameter; ignored for everyone else).
    admin_unsafely_bypass_quarantine: Option<bool>,
}

impl DownloadQuery {
    fn request<'a>(
        &self,
        path: &DownloadPath,
        access: Access,
        user: Option<&'a ruma::UserId>,
    ) -> Result<MediaRequest<'a>, ApiError> {
        super::media_request(
            (&path.server_name, &path.media_id),
            access,
            user,
            self.timeout_ms,
            (self.allow_remote, self.allow_redirect),
        )
    }
}

/// Authenticated download; guests allowed (spec v1.12).
pub async fn download_media(
    State(state): State<AppState>,
    Authenticated {
        requester,
        credentials,
    }: Authenticated,
    MatrixPath(path): MatrixPath<DownloadPath>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    Client(client): Client,
    (method, request_headers): (Method, HeaderMap),
) -> Result<Response, ApiError> {
    let mut request = query.request(&path, Access::Authenticated, Some(&requester.user_id))?;
    request.client = client;
    // Asked for, and only for admins: everyone else gets the usual 404.
    request.bypass_quarantine = query.admin_unsafely_bypass_quarantine == Some(true)
        && state.auth.is_admin(&requester, &credentials).await?;
    if request.bypass_quarantine {
        tracing::warn!(target: "mxmedia::audit", admin = %requester.user_id, mxc = %request.key, "quarantine bypassed on download");
    }
    serve(
        &state,
        &request,
        path.file_name.as_deref(),
        &method,
        &request_headers,
    )
    .await
}

/// Legacy unauthenticated download; media created during the freeze is 404.
pub async fn download_legacy(
    State(state): State<AppState>,
    MatrixPath(path): MatrixPath<DownloadPath>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
    Client(client): Client,
    method: Method,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut request = query.request(&path, Access::Legacy, None)?;
    request.client = client;
    serve(
        &state,
        &request,
        path.file_name.as_deref(),
        &method,
        &request_headers,
    )
    .await
}

async fn serve(
    state: &AppState,
    request: &MediaRequest<'_>,
    file_name: Option<&str>,
    method: &Method,
    request_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let opened = state.media.download(request, file_name).await?;
    let view = &opened.view;
    let reader = match opened.body {
        // Redirects come only after every auth, quarantine and freeze check.
        Source::Redirect(presigned) => return Ok(redirect_response(&presigned)),
        Source::Stream(reader) => reader,
    };
    let size = view.size;
    let etag = format!("\"{}\"", view.sha256.to_hex());
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        headers::content_type(&view.content_type),
    );
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&view.disposition)
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    headers::insert_media_security(&mut out);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }

    if headers::etag_matches(request_headers.get(header::IF_NONE_MATCH), &etag) {
        out.remove(header::CONTENT_TYPE);
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    // If-Range with anything but our current ETag means "send it all".
    let range_header = match request_headers.get(header::IF_RANGE) {
        Some(value) if value.as_bytes() != etag.as_bytes() => None,
        _ => request_headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
    };
    let head = method == Method::HEAD;

    match range::resolve(range_header, size, state.config.media.max_ranges) {
        RangeRequest::Unsatisfiable => Err(ApiError::RangeNotSatisfiable { size }),
        RangeRequest::Full => {
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(reader.read(None).await?)
            };
            Ok((StatusCode::OK, out, body).into_response())
        }
        RangeRequest::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0].clone();
            let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            out.insert(header::CONTENT_RANGE, header_value(&content_range));
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(reader.read(Some(r)).await?)
            };
            Ok((StatusCode::PARTIAL_CONTENT, out, body).into_response())
        }
        RangeRequest::Partial(ranges) => Ok(multipart_response(view, reader, ranges, out, head)),
    }
}

/// 206 with a `multipart/byteranges` body: one part per range, each with its
/// own Content-Type and Content-Range, and an exact Content-Length.
fn multipart_response(
    view: &MediaView,
    reader: Reader,
    ranges: Vec<std::ops::Range<u64>>,
    mut out: HeaderMap,
    head: bool,
) -> Response {
    let size = view.size;
    let boundary = multipart::boundary();
    let parts: Vec<(Bytes, std::ops::Range<u64>)> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            let headers = [
                ("Content-Type", view.content_type.as_str()),
                ("Content-Range", content_range.as_str()),
            ];
            (multipart::part_head(&boundary, i == 0, &headers), r)
        })
        .collect();
    let trailer = multipart::closing(&boundary);
    let length: u64 = parts
        .iter()
        .map(|(h, r)| h.len() as u64 + (r.end - r.start))
        .sum::<u64>()
        + trailer.len() as u64;
    out.insert(
        header::CONTENT_TYPE,
        header_value(&format!("multipart/byteranges; boundary={boundary}")),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(multipart(reader, parts, trailer))
    };
    (StatusCode::PARTIAL_CONTENT, out, body).into_response()
}

/// The multipart/byteranges body: each part's header, then its bytes opened
/// only when the part is reached, so at most one object read is open at a time.
fn multipart(
    reader: Reader,
    parts: Vec<(Bytes, std::ops::Range<u64>)>,
    trailer: Bytes,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    stream::iter(parts)
        .then(move |(head, r)| {
            let reader = reader.clone();
            async move {
                let bytes = reader.read(Some(r)).await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(stream::once(async move { Ok(head) }).chain(bytes))
            }
        })
        .try_flatten()
        .chain(stream::once(async move { Ok(trailer) }))
}

/// 307 to a presigned URL. `private`, and never cached longer than the
/// signature lives, so no shared cache hands it to someone else or too late.
fn redirect_response(presigned: &Presigned) -> Response {
    let mut out = HeaderMap::new();
    out.insert(header::LOCATION, header_value(presigned.url.as_str()));
    let max_age = presigned.remaining().as_secs().saturating_sub(60);
    out.insert(
        header::CACHE_CONTROL,
        header_value(&format!("private, max-age={max_age}")),
    );
    (StatusCode::TEMPORARY_REDIRECT, out).into_response()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
