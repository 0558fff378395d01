//! `POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create`,
//! `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`. Bodies stream
//! straight to storage; nothing here buffers a file.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, header},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Client, FullUser, MatrixPath, MatrixQuery},
    },
    ids::MediaKey,
    media::{UploadMeta, UploadTarget},
};

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// Largest JSON body `/create` reads (the spec sends `{}`).
const MAX_CREATE_BODY: usize = 64 * 1024;

/// Longest a refused upload's remaining body is read and thrown away.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// An upload body that, when dropped before its end (the upload was
/// refused or cut off), is read to its end and discarded in the background,
/// for at most [`LINGER_TIME`] and `max_bytes`, and only while the client
/// keeps sending (a pause of `idle` ends it). Closing a socket with
/// unread data makes the kernel send a reset, and a reverse proxy still
/// sending the body then answers 502 instead of passing on our 413; reading
/// the rest lets the error reach the client. Nothing read here is kept.
struct Lingering {
    rest: Option<BoxStream<'static, Result<Bytes, axum::Error>>>,
    max_bytes: u64,
    idle: std::time::Duration,
}

impl Lingering {
    fn new(body: Body, max_bytes: u64, idle: std::time::Duration) -> Self {
        Self {
            rest: Some(body.into_data_stream().boxed()),
            max_bytes,
            idle,
        }
    }
}

impl futures::Stream for Lingering {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(rest) = self.rest.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = rest.poll_next_unpin(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.rest = None;
        }
        polled
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut rest), Ok(runtime)) =
            (self.rest.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (max_bytes, idle) = (self.max_bytes, self.idle);
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, rest.next()).await {
                    read += chunk.len() as u64;
                    if read > max_bytes {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

/// Wraps an upload route's request body so that however the request ends
/// (refused before its handler ran, cut off, or answered early), what the
/// client is still sending is read out, up to the upload limit once more:
/// see [`Lingering`].
pub async fn linger(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let media = &state.config.media;
    let (max_bytes, idle) = (media.max_upload_size.as_u64(), media.upload_idle_timeout);
    next.run(request.map(|body| Body::from_stream(Lingering::new(body, max_bytes, idle))))
        .await
}

/// The upload's metadata as the client sent it (the core cleans it).
fn upload_meta(query: &UploadQuery, headers: &HeaderMap) -> UploadMeta {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    UploadMeta::new(
        header(header::CONTENT_TYPE),
        query.filename.as_deref(),
        header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()),
    )
}

async fn store(
    state: &AppState,
    (FullUser(requester), Client(client)): (FullUser, Client),
    query: UploadQuery,
    headers: &HeaderMap,
    body: Body,
    target: UploadTarget,
) -> Result<MediaKey, ApiError> {
    let meta = upload_meta(&query, headers).from_client(client);
    let body = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    Ok(state
        .media
        .upload(&requester.user_id, meta, body, target)
        .await?)
}

/// `POST /upload`: store new media, answer its `mxc://` URI.
pub async fn upload_media(
    State(state): State<AppState>,
    user: FullUser,
    client: Client,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = store(
        &state,
        (user, client),
        query,
        &headers,
        body,
        UploadTarget::New,
    )
    .await?;
    Ok(Json(json!({ "content_uri": key.to_string() })))
}

/// `POST /create`: reserve an id for a later `PUT`.
pub async fn create_media_id(
    State(state): State<AppState>,
    FullUser(requester): FullUser,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_CREATE_BODY)
        .await
        .map_err(|_| ApiError::BadJson("request body too large".to_owned()))?;
    // The spec body is `{}`; accept an empty body too, as clients send both.
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::NotJson(e.to_string()))?;
        if !value.is_object() {
            return Err(ApiError::BadJson("expected a JSON object".to_owned()));
        }
    }
    let reservation = state.media.reserve(&requester.user_id).await?;
    let mut answer = json!({
        "content_uri": reservation.key.to_string(),
        "unused_expires_at": reservation.expires.0,
    });
    // MSC3870: where the client may put the bytes itself.
    if let Some(url) = reservation.upload_url {
        answer["com.beeper.msc3870.upload_url"] = Value::String(url.into());
    }
    Ok(Json(answer))
}

/// `POST /_matrix/media/unstable/com.beeper.msc3870/upload/{serverName}/{mediaId}/complete`:
/// the bytes are at the reservation's upload URL (MSC3870).
pub async fn complete_direct_upload(
    State(state): State<AppState>,
    FullUser(requester): FullUser,
    client: Client,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = MediaKey::parse(&server_name, &media_id)
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    state
        .media
        .complete_direct_upload(
            &requester.user_id,
            &key,
            query.filename.as_deref(),
            client.0,
        )
        .await?;
    Ok(Json(json!({ "content_uri": key.to_string() })))
}

/// `PUT /upload/{serverName}/{mediaId}`: fill an id reserved by `/create`.
pub async fn upload_to_reserved(
    State(state): State<AppState>,
    user: FullUser,
    client: Client,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = MediaKey::parse(&server_name, &media_id)
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    store(
        &state,
        (user, client),
        query,
        &headers,
        body,
        UploadTarget::Reserved(key),
    )
    .await?;
    Ok(Json(json!({})))
}
