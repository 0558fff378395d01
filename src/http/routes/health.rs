//! `/healthz` (the process answers) and `/readyz` (metadata and every
//! datastore answer). Neither needs auth; neither reveals internals.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::http::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.media.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "errcode": "M_UNKNOWN", "error": "not ready" })),
            )
        }
    }
}
