//! The control API, served only on a Unix socket in the data directory
//! (mode 0600): the operator's CLI asks the running server to move or check
//! storage, because the embedded database admits one process at a time.
//! Progress streams back as one JSON object per line.

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::AppState;
use crate::media::{FsckRequest, SyncRequest};

pub fn control_router(state: AppState) -> Router {
    Router::new()
        .route("/control/storage/sync", post(storage_sync))
        .route("/control/storage/fsck", post(storage_fsck))
        .route("/control/media", post(media_command))
        .route("/control/db/backup", post(db_backup))
        .route("/control/stats", post(stats))
        .with_state(state)
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Runs `job` in its own task and streams its `{"progress": …}` lines, then
/// `{"done": …}` or `{"error": …}`. Progress lines may be dropped when the
/// client reads slowly; the final line never is. The job is told (by its
/// progress callback's answer) when the client has gone away.
fn streamed<F, Fut, T, E>(job: F) -> Response
where
    F: FnOnce(Box<dyn FnMut(serde_json::Value) -> bool + Send>) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: serde::Serialize,
    E: std::fmt::Display,
{
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let progress_tx = tx.clone();
    let running = job(Box::new(move |p| {
        let _ = progress_tx.try_send(line(&json!({ "progress": p })));
        !progress_tx.is_closed()
    }));
    tokio::spawn(async move {
        let last = match running.await {
            Ok(report) => json!({ "done": report }),
            Err(error) => json!({ "error": error.to_string() }),
        };
        let _ = tx.send(line(&last)).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Body::from_stream(stream).into_response()
}

/// Moves blobs between datastores; stops (resumably) when the client goes away.
async fn storage_sync(State(state): State<AppState>, Json(request): Json<SyncRequest>) -> Response {
    streamed(|mut progress| async move {
        state
            .media
            .sync(&request, move |p| progress(json!(p)))
            .await
    })
}

/// A moderation command (`mxmedia media …`), with progress for bulk ones.
async fn media_command(
    State(state): State<AppState>,
    Json(request): Json<MediaRequest>,
) -> Response {
    streamed(|mut progress| async move {
        crate::ops::media::execute(&state.media, &request.command, &request.actor, move |p| {
            progress(p);
        })
        .await
    })
}

/// What the CLI sends to `/control/media`.
#[derive(serde::Deserialize)]
struct MediaRequest {
    command: crate::ops::media::MediaCommand,
    actor: String,
}

/// Compares metadata with the datastores, with progress after every batch;
/// stops when the client goes away.
async fn storage_fsck(State(state): State<AppState>, Json(request): Json<FsckRequest>) -> Response {
    streamed(|mut progress| async move {
        state
            .media
            .fsck_with_progress(&request, move |p| progress(json!(p.progress())))
            .await
    })
}

/// What the CLI sends to `/control/db/backup`.
#[derive(serde::Deserialize)]
struct BackupRequest {
    out: std::path::PathBuf,
}

/// Writes a point-in-time copy of the metadata to the file the CLI named.
async fn db_backup(State(state): State<AppState>, Json(request): Json<BackupRequest>) -> Response {
    streamed(|_| async move { state.media.backup(&request.out).await })
}

/// Counts of what is stored, and this server's cache hit rate.
async fn stats(State(state): State<AppState>) -> Response {
    streamed(|_| async move { state.media.stats().await })
}
