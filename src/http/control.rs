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
        .with_state(state)
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Streams `{"progress": …}` lines, then `{"done": …}` or `{"error": …}`.
/// The run stops (resumably) when the client goes away.
async fn storage_sync(State(state): State<AppState>, Json(request): Json<SyncRequest>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let result = state
            .media
            .sync(&request, move |p| {
                // Progress lines may be dropped when the client reads slowly;
                // the final report never is.
                let _ = progress_tx.try_send(line(&json!({ "progress": p })));
                !progress_tx.is_closed()
            })
            .await;
        let last = match result {
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

async fn storage_fsck(State(state): State<AppState>, Json(request): Json<FsckRequest>) -> Response {
    let value = match state.media.fsck(&request).await {
        Ok(report) => json!({ "done": report }),
        Err(error) => json!({ "error": error.to_string() }),
    };
    Body::from(line(&value)).into_response()
}
