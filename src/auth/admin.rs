//! Who is a server admin: the users named in `admin.users`, and whoever
//! the homeserver's own admin API lets in. The homeserver is asked with the
//! requester's own token (`GET /_synapse/admin/v1/users/{user_id}/admin`,
//! which only an admin may call; an appservice's `user_id` is passed on as
//! for whoami), the way Synapse's admin API authorises;
//! answers are cached for `token_cache_ttl`, so a revoked admin loses
//! access within that time.

use std::{collections::HashSet, sync::Arc};

use moka::future::Cache;
use ruma::OwnedUserId;
use url::Url;

use super::{AuthError, Credentials, Requester, TokenKey, ask_homeserver, token_key};
use crate::config::{AdminConfig, HomeserverConfig};

/// Largest admin-check answer we read; a real one is `{"admin": true}`.
const MAX_ANSWER: usize = 4 * 1024;

pub(super) struct Admins {
    http: reqwest::Client,
    base: Url,
    configured: HashSet<OwnedUserId>,
    /// Verdicts by token (and acting user), for the token cache's TTL.
    cache: Cache<TokenKey, bool>,
}

impl Admins {
    pub(super) fn new(
        http: reqwest::Client,
        homeserver: &HomeserverConfig,
        admin: &AdminConfig,
    ) -> Self {
        Self {
            http,
            base: homeserver.url.clone(),
            configured: admin.users.iter().cloned().collect(),
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(homeserver.token_cache_ttl)
                .build(),
        }
    }

    /// Whether `requester`, who presented `credentials`, is a server admin.
    pub(super) async fn is_admin(
        self: &Arc<Self>,
        requester: &Requester,
        credentials: &Credentials,
    ) -> Result<bool, AuthError> {
        if self.configured.contains(&requester.user_id) {
            return Ok(true);
        }
        if requester.is_guest {
            return Ok(false);
        }
        let this = Arc::clone(self);
        let (user, credentials) = (requester.user_id.clone(), credentials.clone());
        self.cache
            .try_get_with(token_key(&credentials), async move {
                this.ask(&user, &credentials).await
            })
            .await
            .map_err(|e| (*e).clone())
    }

    async fn ask(&self, user: &OwnedUserId, credentials: &Credentials) -> Result<bool, AuthError> {
        let mut url = self
            .base
            .join("_synapse/admin/v1/users")
            .map_err(|e| AuthError::BadGateway(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| AuthError::BadGateway("homeserver URL cannot be a base".to_owned()))?
            .pop_if_empty()
            .push(user.as_str())
            .push("admin");
        let (status, body) =
            ask_homeserver(&self.http, url, credentials, MAX_ANSWER, "admin check").await?;
        match status.as_u16() {
            200 => Ok(serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("admin")?.as_bool())
                .unwrap_or(false)),
            // Not an admin; or a homeserver without Synapse's admin API.
            403 | 404 => Ok(false),
            401 => Err(AuthError::UnknownToken),
            other => Err(AuthError::BadGateway(format!(
                "admin check answered HTTP {other}"
            ))),
        }
    }
}
