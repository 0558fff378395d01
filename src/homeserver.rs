//! The homeserver's answers to what only it knows about media, asked
//! through its admin API with the acting admin's own credentials: which
//! media a room's events reference, which media are avatars, and users'
//! display names. The adapter of the core's `Homeserver` port; it shares
//! the authenticator's HTTP client.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use url::Url;

use crate::{
    auth::{AuthError, Credentials, ask_homeserver},
    ids::MediaKey,
    media::ports::{Homeserver, HomeserverError},
};

/// Largest answer read for a room's media list or a page of users/rooms.
const MAX_LIST: usize = 16 * 1024 * 1024;
/// Largest answer read for one profile field or one room's details.
const MAX_ITEM: usize = 256 * 1024;
/// Users or rooms asked for per page.
const PAGE: usize = 500;
/// Rooms' details asked for at once.
const ROOM_LOOKUPS: usize = 8;
/// Pages read at most while listing (a homeserver that never stops
/// paginating is cut off).
const MAX_PAGES: usize = 100_000;

#[derive(Clone)]
pub struct Directory {
    http: reqwest::Client,
    base: Url,
}

impl From<AuthError> for HomeserverError {
    fn from(error: AuthError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// An `mxc://server/id` URI as a media key; `None` for anything else.
fn parse_mxc(uri: &str) -> Option<MediaKey> {
    let (server, id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    MediaKey::parse(server, id).ok()
}

impl Directory {
    pub fn new(http: reqwest::Client, base: Url) -> Self {
        Self { http, base }
    }

    /// `GET` of `segments` under the homeserver's URL (each segment
    /// percent-encoded) with `query`, as `acting`; the JSON of a 200.
    async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        acting: &Credentials,
        max: usize,
        what: &str,
    ) -> Result<Option<Value>, HomeserverError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| HomeserverError::Unavailable("homeserver URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        let (status, body) = ask_homeserver(&self.http, url, acting, max, what).await?;
        let json = serde_json::from_slice::<Value>(&body).ok();
        match status.as_u16() {
            200 => json.map(Some).ok_or_else(|| {
                HomeserverError::Unavailable(format!("{what}: the answer is not JSON"))
            }),
            404 if json.as_ref().and_then(|j| j.get("errcode")).is_some() => Ok(None),
            code => Err(HomeserverError::Refused {
                status: code,
                errcode: json
                    .as_ref()
                    .and_then(|j| j.get("errcode")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "M_UNKNOWN".to_owned()),
                error: json
                    .as_ref()
                    .and_then(|j| j.get("error")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{what} answered HTTP {code}")),
            }),
        }
    }

    /// Every user's avatar, a page of users at a time.
    async fn user_avatars(
        &self,
        acting: &Credentials,
        out: &mut HashSet<MediaKey>,
    ) -> Result<(), HomeserverError> {
        let mut from = "0".to_owned();
        for _ in 0..MAX_PAGES {
            let query = [
                ("from", from.clone()),
                ("limit", PAGE.to_string()),
                ("guests", "true".to_owned()),
                ("deactivated", "true".to_owned()),
            ];
            let page = self
                .get(
                    &["_synapse", "admin", "v2", "users"],
                    &query,
                    acting,
                    MAX_LIST,
                    "user list",
                )
                .await?
                .unwrap_or_default();
            for user in page
                .get("users")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(key) = user
                    .get("avatar_url")
                    .and_then(Value::as_str)
                    .and_then(parse_mxc)
                {
                    out.insert(key);
                }
            }
            match page.get("next_token") {
                Some(Value::String(next)) => from.clone_from(next),
                Some(Value::Number(next)) => from = next.to_string(),
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Every room's avatar: the room list, then each room's details.
    async fn room_avatars(
        &self,
        acting: &Credentials,
        out: &mut HashSet<MediaKey>,
    ) -> Result<(), HomeserverError> {
        let mut rooms = Vec::new();
        let mut from = 0u64;
        for _ in 0..MAX_PAGES {
            let query = [("from", from.to_string()), ("limit", PAGE.to_string())];
            let page = self
                .get(
                    &["_synapse", "admin", "v1", "rooms"],
                    &query,
                    acting,
                    MAX_LIST,
                    "room list",
                )
                .await?
                .unwrap_or_default();
            rooms.extend(
                page.get("rooms")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("room_id")?.as_str().map(str::to_owned)),
            );
            match page.get("next_batch").and_then(Value::as_u64) {
                Some(next) if next > from => from = next,
                _ => break,
            }
        }
        let avatars: Vec<Result<Option<MediaKey>, HomeserverError>> = futures::stream::iter(rooms)
            .map(|room| async move {
                let details = self
                    .get(
                        &["_synapse", "admin", "v1", "rooms", &room],
                        &[],
                        acting,
                        MAX_ITEM,
                        "room details",
                    )
                    .await?;
                Ok(details.and_then(|d| d.get("avatar")?.as_str().and_then(parse_mxc)))
            })
            .buffer_unordered(ROOM_LOOKUPS)
            .collect()
            .await;
        for avatar in avatars {
            out.extend(avatar?);
        }
        Ok(())
    }
}

#[async_trait]
impl Homeserver for Directory {
    async fn room_media(
        &self,
        room: &ruma::RoomId,
        acting: &Credentials,
    ) -> Result<Vec<MediaKey>, HomeserverError> {
        let segments = ["_synapse", "admin", "v1", "room", room.as_str(), "media"];
        let Some(list) = self
            .get(&segments, &[], acting, MAX_LIST, "room media list")
            .await?
        else {
            return Err(HomeserverError::Refused {
                status: 404,
                errcode: "M_NOT_FOUND".to_owned(),
                error: "the homeserver does not know this room".to_owned(),
            });
        };
        Ok(["local", "remote"]
            .iter()
            .filter_map(|part| list.get(part)?.as_array())
            .flatten()
            .filter_map(|uri| uri.as_str().and_then(parse_mxc))
            .collect())
    }

    async fn avatars(&self, acting: &Credentials) -> Result<HashSet<MediaKey>, HomeserverError> {
        let mut out = HashSet::new();
        self.user_avatars(acting, &mut out).await?;
        self.room_avatars(acting, &mut out).await?;
        Ok(out)
    }

    async fn display_name(
        &self,
        user: &ruma::UserId,
        acting: &Credentials,
    ) -> Result<Option<String>, HomeserverError> {
        let segments = [
            "_matrix",
            "client",
            "v3",
            "profile",
            user.as_str(),
            "displayname",
        ];
        match self
            .get(&segments, &[], acting, MAX_ITEM, "display name")
            .await
        {
            Ok(found) => Ok(found.and_then(|v| v.get("displayname")?.as_str().map(str::to_owned))),
            // Profiles hidden from this admin simply have no name here.
            Err(HomeserverError::Refused { status: 403, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxc_uris_parse_into_media_keys() {
        assert_eq!(
            parse_mxc("mxc://example.org/abcDEF123").map(|k| k.to_string()),
            Some("mxc://example.org/abcDEF123".to_owned())
        );
        for bad in [
            "https://example.org/x",
            "mxc://example.org",
            "mxc://example.org/a/b",
            "mxc:///x",
        ] {
            assert_eq!(parse_mxc(bad), None, "{bad}");
        }
    }
}
