//! Synapse's admin API for many media at once: a user's media (listed or
//! deleted a page at a time), deletion of local media by date and size,
//! the purge of cached remote media, and media usage per user.

use std::collections::HashMap;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::admin::int_param;
use crate::{
    http::{
        AppState,
        error::ApiError,
        extract::{Admin, MatrixPath, MatrixQuery},
    },
    ids::UnixMillis,
    media::{
        LocalPurge, UsageQuery,
        ports::{MediaOrder, MediaPageQuery},
    },
};

type Query = MatrixQuery<HashMap<String, String>>;

/// Synapse refuses timestamps that look like seconds.
const SECONDS_LOOKALIKE: u64 = 30_000_000_000;

fn required_ts(query: &HashMap<String, String>) -> Result<UnixMillis, ApiError> {
    let before = int_param(query, "before_ts")?.ok_or_else(|| {
        ApiError::MissingParam("Missing integer query parameter 'before_ts'".to_owned())
    })?;
    if before < SECONDS_LOOKALIKE {
        return Err(ApiError::InvalidParam(
            "Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.".to_owned(),
        ));
    }
    Ok(UnixMillis(before))
}

fn bool_param(
    query: &HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::InvalidParam(format!(
            "Boolean query parameter {name} must be one of ['true', 'false']"
        ))),
    }
}

/// `dir`: `f` or `b`.
fn backwards(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("dir").map(String::as_str) {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(ApiError::InvalidParam(
            "Query parameter dir must be one of ['b', 'f']".to_owned(),
        )),
    }
}

/// A local user named in the path.
fn local_user(state: &AppState, user_id: &str) -> Result<ruma::OwnedUserId, ApiError> {
    let user = ruma::UserId::parse(user_id)
        .map_err(|e| ApiError::InvalidParam(format!("user id: {e}")))?;
    if user.server_name() != state.media.server_name() {
        return Err(ApiError::NotLocalUser);
    }
    Ok(user)
}

/// The page a user media request names: newest first unless `order_by`
/// or `dir` is given, as Synapse.
fn page_query(query: &HashMap<String, String>) -> Result<MediaPageQuery, ApiError> {
    let from = int_param(query, "from")?.unwrap_or(0);
    let limit = int_param(query, "limit")?.unwrap_or(100);
    let (order, backwards) = if query.contains_key("order_by") || query.contains_key("dir") {
        let order = match query.get("order_by") {
            None => MediaOrder::CreatedTs,
            Some(name) => MediaOrder::parse(name).ok_or_else(|| {
                ApiError::InvalidParam(format!("Unknown value for order_by: {name}"))
            })?,
        };
        (order, backwards(query)?)
    } else {
        (MediaOrder::CreatedTs, true)
    };
    Ok(MediaPageQuery {
        order,
        backwards,
        from,
        limit,
    })
}

/// `GET /_synapse/admin/v1/users/{user_id}/media`.
pub async fn user_media(
    State(state): State<AppState>,
    _admin: Admin,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixQuery(query): Query,
) -> Result<Json<Value>, ApiError> {
    let user = local_user(&state, &user_id)?;
    let page_query = page_query(&query)?;
    let page = state.media.uploads(&user, &page_query).await?;
    let media: Vec<Value> = page
        .media
        .iter()
        .map(|(key, record)| {
            json!({
                "media_id": key.id.as_str(),
                "media_type": record.content_type,
                "media_length": record.size,
                "upload_name": record.upload_name,
                "created_ts": record.created.0,
                "last_access_ts": record.last_access.map(|t| t.0),
                "quarantined_by": record.quarantined_by.as_ref().filter(|_| record.quarantined),
                "safe_from_quarantine": record.protected,
            })
        })
        .collect();
    let mut out = json!({ "media": media, "total": page.total });
    if page_query.from.saturating_add(page_query.limit) < page.total {
        out["next_token"] = json!(page_query.from + page.media.len() as u64);
    }
    Ok(Json(out))
}

/// `DELETE /_synapse/admin/v1/users/{user_id}/media`: the page the same
/// parameters would list.
pub async fn delete_user_media(
    State(state): State<AppState>,
    admin: Admin,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixQuery(query): Query,
) -> Result<Json<Value>, ApiError> {
    let user = local_user(&state, &user_id)?;
    let deleted = state
        .media
        .delete_uploads(&user, &page_query(&query)?, admin.0.user_id.as_str())
        .await?;
    let ids: Vec<&str> = deleted.iter().map(|k| k.id.as_str()).collect();
    Ok(Json(json!({ "deleted_media": ids, "total": ids.len() })))
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=…&size_gt=…&keep_profiles=…`.
pub async fn delete_by_date(
    State(state): State<AppState>,
    admin: Admin,
    MatrixQuery(query): Query,
) -> Result<Json<Value>, ApiError> {
    let filter = LocalPurge {
        before: required_ts(&query)?,
        size_gt: int_param(&query, "size_gt")?.unwrap_or(0),
        keep_profiles: bool_param(&query, "keep_profiles", true)?,
        dry_run: false,
    };
    let report = state
        .media
        .purge_local(&filter, Some(&admin.1), admin.0.user_id.as_str(), |_| {})
        .await?;
    let ids: Vec<&str> = report.deleted.iter().map(|k| k.id.as_str()).collect();
    Ok(Json(json!({ "deleted_media": ids, "total": ids.len() })))
}

/// The deprecated `POST /_synapse/admin/v1/media/{server_name}/delete`.
pub async fn delete_by_date_on(
    state: State<AppState>,
    admin: Admin,
    MatrixPath(server_name): MatrixPath<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    if server_name != state.media.server_name().as_str() {
        return Err(crate::media::MediaError::NotLocal.into());
    }
    delete_by_date(state, admin, query).await
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=…`.
pub async fn purge_media_cache(
    State(state): State<AppState>,
    admin: Admin,
    MatrixQuery(query): Query,
) -> Result<Json<Value>, ApiError> {
    let before = required_ts(&query)?;
    let report = state
        .media
        .purge_remote(before, false, admin.0.user_id.as_str(), |_| {})
        .await?;
    Ok(Json(json!({ "deleted": report.deleted.len() })))
}

/// `GET /_synapse/admin/v1/statistics/users/media`.
pub async fn usage(
    State(state): State<AppState>,
    admin: Admin,
    MatrixQuery(query): Query,
) -> Result<Json<Value>, ApiError> {
    let order_by = query
        .get("order_by")
        .cloned()
        .unwrap_or_else(|| "user_id".to_owned());
    if !["user_id", "displayname", "media_length", "media_count"].contains(&order_by.as_str()) {
        return Err(ApiError::InvalidParam(format!(
            "Unknown value for order_by: {order_by}"
        )));
    }
    let request = UsageQuery {
        from_ts: int_param(&query, "from_ts")?.map(UnixMillis),
        until_ts: int_param(&query, "until_ts")?.map(UnixMillis),
        search_term: query.get("search_term").cloned(),
        order_by,
        backwards: backwards(&query)?,
        from: int_param(&query, "from")?.unwrap_or(0),
        limit: int_param(&query, "limit")?.unwrap_or(100),
    };
    if let (Some(from), Some(until)) = (request.from_ts, request.until_ts)
        && until < from
    {
        return Err(ApiError::InvalidParam(
            "Query parameter until_ts must be greater than from_ts.".to_owned(),
        ));
    }
    if request.search_term.as_deref() == Some("") {
        return Err(ApiError::InvalidParam(
            "Query parameter search_term cannot be an empty string.".to_owned(),
        ));
    }
    let report = state.media.usage(&request, &admin.1).await?;
    let mut out = json!({ "users": report.users, "total": report.total });
    if request.from.saturating_add(request.limit) < report.total {
        out["next_token"] = json!(request.from + report.users.len() as u64);
    }
    Ok(Json(out))
}
