//! A stand-in for the homeserver's `/account/whoami`: a few users by
//! token, revocable, with a call counter.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const ALICE: &str = "alice_token";
pub const BOB: &str = "bob_token";
pub const GUEST: &str = "guest_token";
/// An appservice token: acts as `@bridgebot`, or as `?user_id=@bridge_*`.
pub const APPSERVICE: &str = "as_token";
/// The homeserver answers 401 M_USER_LOCKED for this one.
pub const LOCKED: &str = "locked_token";
/// The homeserver answers 500 for this one.
pub const BROKEN: &str = "broken_token";
/// A server admin on the homeserver (`@admin:test.local`).
pub const ADMIN: &str = "admin_token";

#[derive(Clone, Default)]
struct HsState {
    users: Arc<Mutex<HashMap<String, (String, bool)>>>,
    calls: Arc<AtomicUsize>,
    admin_calls: Arc<AtomicUsize>,
}

/// Stand-in for the homeserver's whoami endpoint.
pub struct FakeHomeserver {
    pub url: String,
    state: HsState,
    task: tokio::task::JoinHandle<()>,
}

async fn whoami(
    State(state): State<HsState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let unknown = (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false}),
        ),
    );
    match token.as_str() {
        APPSERVICE => match query.get("user_id") {
            None => (
                StatusCode::OK,
                Json(json!({"user_id": "@bridgebot:test.local"})),
            ),
            Some(u) if u.starts_with("@bridge_") => (StatusCode::OK, Json(json!({"user_id": u}))),
            Some(_) => (
                StatusCode::FORBIDDEN,
                Json(
                    json!({"errcode": "M_FORBIDDEN", "error": "Application service cannot masquerade as this user"}),
                ),
            ),
        },
        LOCKED => (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"errcode": "M_USER_LOCKED", "error": "This account has been locked", "soft_logout": true}),
            ),
        ),
        BROKEN => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errcode": "M_UNKNOWN", "error": "oops"})),
        ),
        _ => match state.users.lock().unwrap().get(&token) {
            Some((user, guest)) => (
                StatusCode::OK,
                Json(json!({"user_id": user, "is_guest": guest, "device_id": "DEV"})),
            ),
            None => unknown,
        },
    }
}

/// Synapse's `GET /_synapse/admin/v1/users/{user_id}/admin`: only admins
/// may call it (403 for other users, 401 for unknown tokens).
async fn user_admin(
    State(state): State<HsState>,
    axum::extract::Path(user): axum::extract::Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    state.admin_calls.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match state.users.lock().unwrap().get(token) {
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token"})),
        ),
        Some(_) if token == ADMIN => (
            StatusCode::OK,
            Json(json!({"admin": user == "@admin:test.local"})),
        ),
        Some(_) => (
            StatusCode::FORBIDDEN,
            Json(json!({"errcode": "M_FORBIDDEN", "error": "You are not a server admin"})),
        ),
    }
}

impl FakeHomeserver {
    pub async fn start() -> Self {
        let state = HsState::default();
        {
            let mut users = state.users.lock().unwrap();
            users.insert(ALICE.into(), ("@alice:test.local".into(), false));
            users.insert(BOB.into(), ("@bob:test.local".into(), false));
            users.insert(GUEST.into(), ("@guest1:test.local".into(), true));
            users.insert(ADMIN.into(), ("@admin:test.local".into(), false));
        }
        let router = Router::new()
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route("/_synapse/admin/v1/users/{user_id}/admin", get(user_admin))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, state, task }
    }

    /// How many admin checks the homeserver has answered.
    pub fn admin_calls(&self) -> usize {
        self.state.admin_calls.load(Ordering::SeqCst)
    }

    /// How many whoami calls the homeserver has answered.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Simulates a logout: the token stops being valid on the homeserver.
    pub fn revoke(&self, token: &str) {
        self.state.users.lock().unwrap().remove(token);
    }

    pub fn add_user(&self, token: &str, user_id: &str) {
        self.state
            .users
            .lock()
            .unwrap()
            .insert(token.into(), (user_id.into(), false));
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port nothing listens on: a homeserver that is down.
pub async fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}
