//! The only layer that knows HTTP: one route table, extractors, headers and
//! `ApiError`. Handlers translate requests into service calls and back.

pub mod client_addr;
pub mod control;
mod error;
mod extract;
pub mod headers;
pub mod listener;
pub mod observe;
pub mod range;
mod routes;

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};

pub use error::ApiError;

use crate::{auth::Authenticator, config::Config, media::MediaService, metrics::Metrics};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub media: MediaService,
    pub auth: Authenticator,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub federation: crate::federation::Federation,
}

/// The one route table. Paths are spelled out so `grep` finds them; the
/// legacy `/_matrix/media/` prefix takes `r0`, `v1` and `v3` as Synapse does.
pub fn router(state: AppState) -> Router {
    use routes::{download, health, thumbnail};
    Router::new()
        .merge(upload_routes(&state))
        // Authenticated download (spec v1.11); HEAD is routed with GET.
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download::download_media),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/",
            get(download::download_media),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download::download_media),
        )
        // Legacy unauthenticated download (deprecated v1.11; frozen media is 404 here).
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/v1/download/{server_name}/{media_id}",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/v1/download/{server_name}/{media_id}/",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/v1/download/{server_name}/{media_id}/{file_name}",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}/",
            get(download::download_legacy),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}/{file_name}",
            get(download::download_legacy),
        )
        // Thumbnails: authenticated (spec v1.11) and legacy (frozen media is 404 there).
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail::get_thumbnail),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(thumbnail::get_thumbnail_legacy),
        )
        .route(
            "/_matrix/media/v1/thumbnail/{server_name}/{media_id}",
            get(thumbnail::get_thumbnail_legacy),
        )
        .route(
            "/_matrix/media/r0/thumbnail/{server_name}/{media_id}",
            get(thumbnail::get_thumbnail_legacy),
        )
        .merge(config_routes())
        // Operations.
        .merge(admin_routes())
        .merge(federation_routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Uploads: plain, async (reserve then fill) and direct (MSC3870). Every
/// body a client is still sending when the answer is ready (a refusal
/// before the handler ran, such as an expired token, or after) is read
/// out, so the answer reaches it through a proxy.
fn upload_routes(state: &AppState) -> Router<AppState> {
    use routes::upload;
    Router::new()
        // Upload (spec: POST /_matrix/media/v3/upload).
        .route("/_matrix/media/v3/upload", post(upload::upload_media))
        .route("/_matrix/media/v1/upload", post(upload::upload_media))
        .route("/_matrix/media/r0/upload", post(upload::upload_media))
        // Async upload (spec: POST /_matrix/media/v1/create, PUT /_matrix/media/v3/upload/{s}/{m}).
        .route("/_matrix/media/v1/create", post(upload::create_media_id))
        .route("/_matrix/media/v3/create", post(upload::create_media_id))
        .route("/_matrix/media/r0/create", post(upload::create_media_id))
        // MSC2246's unstable prefix, which bridges built before v1.7 still use.
        .route(
            "/_matrix/media/unstable/fi.mau.msc2246/create",
            post(upload::create_media_id),
        )
        .route(
            "/_matrix/media/unstable/fi.mau.msc2246/upload/{server_name}/{media_id}",
            put(upload::upload_to_reserved),
        )
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload::upload_to_reserved),
        )
        .route(
            "/_matrix/media/v1/upload/{server_name}/{media_id}",
            put(upload::upload_to_reserved),
        )
        .route(
            "/_matrix/media/r0/upload/{server_name}/{media_id}",
            put(upload::upload_to_reserved),
        )
        // Direct uploads (MSC3870): the bytes went to the upload URL.
        .route(
            "/_matrix/media/unstable/com.beeper.msc3870/upload/{server_name}/{media_id}/complete",
            post(upload::complete_direct_upload),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            upload::linger,
        ))
}

/// The media config (per user class), URL previews and MSC4034's usage.
fn config_routes() -> Router<AppState> {
    use routes::config;
    Router::new()
        .route(
            "/_matrix/client/v1/media/config",
            get(config::get_media_config),
        )
        .route("/_matrix/media/v3/config", get(config::get_media_config))
        .route("/_matrix/media/v1/config", get(config::get_media_config))
        .route("/_matrix/media/r0/config", get(config::get_media_config))
        // URL previews (404 M_UNRECOGNIZED while off).
        .route(
            "/_matrix/client/v1/media/preview_url",
            get(routes::preview::preview_url),
        )
        .route(
            "/_matrix/media/v3/preview_url",
            get(routes::preview::preview_url),
        )
        .route(
            "/_matrix/media/v1/preview_url",
            get(routes::preview::preview_url),
        )
        .route(
            "/_matrix/media/r0/preview_url",
            get(routes::preview::preview_url),
        )
        // Usage against the quota (MSC4034, unstable).
        .route(
            "/_matrix/media/unstable/org.matrix.msc4034/config",
            get(config::get_quota_config),
        )
        .route(
            "/_matrix/media/unstable/org.matrix.msc4034/usage",
            get(config::get_usage),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc4034/media/usage",
            get(config::get_usage),
        )
}

/// Synapse's admin media API, same paths (server admins only).
fn admin_routes() -> Router<AppState> {
    use routes::{admin, admin_bulk as bulk};
    const A: &str = "/_synapse/admin/v1";
    Router::new()
        .route(
            &format!("{A}/media/{{server_name}}/{{media_id}}"),
            get(admin::media_info).delete(admin::delete_media),
        )
        .route(
            &format!("{A}/media/quarantine/{{server_name}}/{{media_id}}"),
            post(admin::quarantine),
        )
        .route(
            &format!("{A}/media/unquarantine/{{server_name}}/{{media_id}}"),
            post(admin::unquarantine),
        )
        .route(
            &format!("{A}/media/protect/{{media_id}}"),
            post(admin::protect),
        )
        .route(
            &format!("{A}/media/unprotect/{{media_id}}"),
            post(admin::unprotect),
        )
        .route(
            &format!("{A}/room/{{room_id}}/media/quarantine"),
            post(admin::quarantine_room),
        )
        .route(
            &format!("{A}/quarantine_media/{{room_id}}"),
            post(admin::quarantine_room),
        )
        .route(
            &format!("{A}/user/{{user_id}}/media/quarantine"),
            post(admin::quarantine_user),
        )
        .route(
            &format!("{A}/media/quarantine_changes"),
            get(admin::quarantine_changes),
        )
        .route(&format!("{A}/media/delete"), post(bulk::delete_by_date))
        .route(
            &format!("{A}/media/{{server_name}}/delete"),
            post(bulk::delete_by_date_on),
        )
        .route(
            &format!("{A}/purge_media_cache"),
            post(bulk::purge_media_cache),
        )
        .route(
            &format!("{A}/users/{{user_id}}/media"),
            get(bulk::user_media).delete(bulk::delete_user_media),
        )
        .route(&format!("{A}/statistics/users/media"), get(bulk::usage))
}

/// Federation (spec v1.11): other servers fetch our media, signed; and our
/// key document.
fn federation_routes() -> Router<AppState> {
    use routes::federation;
    Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(federation::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(federation::thumbnail),
        )
        .route("/_matrix/key/v2/server", get(federation::server_keys))
}

async fn unrecognized() -> ApiError {
    ApiError::Unrecognized
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Spec "Web Browser Clients": CORS headers on every response, and `OPTIONS`
/// answered without running any endpoint logic (no auth, no lookup). A small
/// middleware rather than a general CORS layer, because a general one only
/// short-circuits real preflights, not every `OPTIONS`.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Range"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Disposition, Content-Range, Accept-Ranges, Content-Length, ETag",
        ),
    );
    response
}
