//! A stand-in for the homeserver: `/account/whoami` for a few users by
//! token (revocable, with a call counter), the admin check, and the admin
//! API answers mxmedia asks for (room media, users' and rooms' avatars,
//! display names).

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

/// What the homeserver knows about media that mxmedia asks it for.
#[derive(Default)]
struct Directory {
    /// Room id -> mxc URIs its events reference.
    room_media: HashMap<String, Vec<String>>,
    /// User id -> avatar mxc, in listing order.
    avatars: Vec<(String, String)>,
    /// Room id -> room avatar mxc (every room listed, avatar or not).
    rooms: Vec<(String, Option<String>)>,
    names: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct HsState {
    users: Arc<Mutex<HashMap<String, (String, bool)>>>,
    directory: Arc<Mutex<Directory>>,
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

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

type Answer = (StatusCode, Json<Value>);

/// Synapse's admin API answers only admins.
fn refuse_non_admin(headers: &HeaderMap) -> Option<Answer> {
    (bearer(headers) != ADMIN).then(|| {
        (
            StatusCode::FORBIDDEN,
            Json(json!({"errcode": "M_FORBIDDEN", "error": "You are not a server admin"})),
        )
    })
}

fn not_found(what: &str) -> Answer {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"errcode": "M_NOT_FOUND", "error": what})),
    )
}

fn page_of(query: &HashMap<String, String>, len: usize) -> (usize, usize) {
    let from = query
        .get("from")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0usize);
    let limit = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize);
    (from.min(len), (from + limit).min(len))
}

/// `GET /_synapse/admin/v1/room/{room_id}/media`.
async fn room_media(
    State(state): State<HsState>,
    axum::extract::Path(room): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Answer {
    if let Some(refused) = refuse_non_admin(&headers) {
        return refused;
    }
    let directory = state.directory.lock().unwrap();
    let Some(media) = directory.room_media.get(&room) else {
        return not_found("Room not found");
    };
    let (local, remote): (Vec<_>, Vec<_>) = media
        .iter()
        .partition(|m| m.starts_with("mxc://test.local/"));
    (
        StatusCode::OK,
        Json(json!({"local": local, "remote": remote})),
    )
}

/// `GET /_synapse/admin/v2/users`, paged (`next_token` is a string).
async fn user_list(
    State(state): State<HsState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    if let Some(refused) = refuse_non_admin(&headers) {
        return refused;
    }
    let directory = state.directory.lock().unwrap();
    let (from, to) = page_of(&query, directory.avatars.len());
    let users: Vec<Value> = directory.avatars[from..to]
        .iter()
        .map(|(name, avatar)| json!({"name": name, "avatar_url": avatar}))
        .collect();
    let mut out = json!({"users": users, "total": directory.avatars.len()});
    if to < directory.avatars.len() {
        out["next_token"] = json!(to.to_string());
    }
    (StatusCode::OK, Json(out))
}

/// `GET /_synapse/admin/v1/rooms`, paged (`next_batch` is a number).
async fn room_list(
    State(state): State<HsState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    if let Some(refused) = refuse_non_admin(&headers) {
        return refused;
    }
    let directory = state.directory.lock().unwrap();
    let (from, to) = page_of(&query, directory.rooms.len());
    let rooms: Vec<Value> = directory.rooms[from..to]
        .iter()
        .map(|(id, _)| json!({"room_id": id, "name": null}))
        .collect();
    let mut out = json!({"rooms": rooms, "total_rooms": directory.rooms.len()});
    if to < directory.rooms.len() {
        out["next_batch"] = json!(to);
    }
    (StatusCode::OK, Json(out))
}

/// `GET /_synapse/admin/v1/rooms/{room_id}`.
async fn room_details(
    State(state): State<HsState>,
    axum::extract::Path(room): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Answer {
    if let Some(refused) = refuse_non_admin(&headers) {
        return refused;
    }
    let directory = state.directory.lock().unwrap();
    match directory.rooms.iter().find(|(id, _)| *id == room) {
        Some((id, avatar)) => (
            StatusCode::OK,
            Json(json!({"room_id": id, "avatar": avatar})),
        ),
        None => not_found("Room not found"),
    }
}

/// `GET /_matrix/client/v3/profile/{user_id}/displayname`.
async fn display_name(
    State(state): State<HsState>,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Answer {
    match state.directory.lock().unwrap().names.get(&user) {
        Some(name) => (StatusCode::OK, Json(json!({"displayname": name}))),
        None => not_found("Profile was not found"),
    }
}

impl FakeHomeserver {
    /// Says which media `room`'s events reference (mxc URIs).
    pub fn set_room_media(&self, room: &str, mxcs: &[&str]) {
        let mut directory = self.state.directory.lock().unwrap();
        directory
            .room_media
            .insert(room.into(), mxcs.iter().map(|m| (*m).to_owned()).collect());
    }

    /// Gives `user` the avatar `mxc`.
    pub fn set_avatar(&self, user: &str, mxc: &str) {
        let mut directory = self.state.directory.lock().unwrap();
        directory.avatars.push((user.into(), mxc.into()));
    }

    /// Adds a room with `avatar`.
    pub fn add_room(&self, room: &str, avatar: Option<&str>) {
        let mut directory = self.state.directory.lock().unwrap();
        directory.rooms.push((room.into(), avatar.map(Into::into)));
    }

    pub fn set_display_name(&self, user: &str, name: &str) {
        let mut directory = self.state.directory.lock().unwrap();
        directory.names.insert(user.into(), name.into());
    }

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
            .route("/_synapse/admin/v1/room/{room_id}/media", get(room_media))
            .route("/_synapse/admin/v2/users", get(user_list))
            .route("/_synapse/admin/v1/rooms", get(room_list))
            .route("/_synapse/admin/v1/rooms/{room_id}", get(room_details))
            .route(
                "/_matrix/client/v3/profile/{user_id}/displayname",
                get(display_name),
            )
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
