//! Who is asking: bearer tokens are checked against the homeserver's
//! `/_matrix/client/v3/account/whoami`, and answers (valid and rejected) are
//! cached for a configurable time so a busy client costs one check per TTL.

use std::{sync::Arc, time::Duration};

use moka::{Expiry, future::Cache};
use ruma::OwnedUserId;
use serde::Deserialize;
use url::Url;

use crate::config::HomeserverConfig;

/// Largest whoami answer we read; a real one is under 200 bytes.
const MAX_WHOAMI_BODY: usize = 64 * 1024;
/// Tokens remembered at once (valid and rejected together).
const CACHE_ENTRIES: u64 = 100_000;

/// An authenticated user, as the homeserver named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: Option<String>,
    pub is_guest: bool,
}

/// What the client presented. Appservices add `user_id` (and `device_id`)
/// to act as one of their users; both are passed to whoami unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub token: String,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("missing access token")]
    MissingToken,
    #[error("unrecognised access token")]
    UnknownToken,
    /// The homeserver refused for another reason (locked account, an
    /// appservice user outside its namespace, ...); relayed as given.
    #[error("{error}")]
    Rejected {
        status: u16,
        errcode: String,
        error: String,
        soft_logout: Option<bool>,
    },
    #[error("homeserver unreachable: {0}")]
    Unavailable(String),
    #[error("homeserver answered badly: {0}")]
    BadGateway(String),
}

#[derive(Clone)]
enum Verdict {
    User(Requester),
    Unknown,
}

struct VerdictExpiry {
    valid: Duration,
    rejected: Duration,
}

impl Expiry<Credentials, Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _key: &Credentials,
        value: &Verdict,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Verdict::User(_) => self.valid,
            Verdict::Unknown => self.rejected,
        })
    }
}

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    whoami: Url,
    cache: Cache<Credentials, Verdict>,
}

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    is_guest: bool,
}

#[derive(Deserialize)]
struct MatrixError {
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    soft_logout: Option<bool>,
}

impl Authenticator {
    pub fn new(config: &HomeserverConfig) -> Result<Self, AuthError> {
        let whoami = config
            .url
            .join("_matrix/client/v3/account/whoami")
            .map_err(|e| AuthError::BadGateway(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The homeserver sits next to us; a proxy from the environment would
            // only add a hop (and break loopback setups).
            .no_proxy()
            .user_agent(concat!("mxmedia/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::BadGateway(e.to_string()))?;
        let cache = Cache::builder()
            .max_capacity(CACHE_ENTRIES)
            .expire_after(VerdictExpiry {
                valid: config.token_cache_ttl,
                rejected: config.token_negative_cache_ttl,
            })
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                whoami,
                cache,
            }),
        })
    }

    /// The user behind `credentials`. Concurrent checks of one token share a
    /// single whoami call; only definite answers are cached.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Requester, AuthError> {
        let inner = Arc::clone(&self.inner);
        let key = credentials.clone();
        let verdict = self
            .inner
            .cache
            .try_get_with(key, async move { inner.whoami(&credentials).await })
            .await
            .map_err(|e| (*e).clone())?;
        match verdict {
            Verdict::User(requester) => Ok(requester),
            Verdict::Unknown => Err(AuthError::UnknownToken),
        }
    }
}

impl Inner {
    async fn whoami(&self, credentials: &Credentials) -> Result<Verdict, AuthError> {
        let mut url = self.whoami.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(user_id) = &credentials.user_id {
                query.append_pair("user_id", user_id);
            }
            if let Some(device_id) = &credentials.device_id {
                query.append_pair("device_id", device_id);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let response = self
            .http
            .get(url)
            .bearer_auth(&credentials.token)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = read_capped(response).await?;
        if status.is_success() {
            let who: WhoAmI = serde_json::from_slice(&body)
                .map_err(|e| AuthError::BadGateway(format!("whoami body: {e}")))?;
            let user_id = OwnedUserId::try_from(who.user_id)
                .map_err(|e| AuthError::BadGateway(format!("whoami user_id: {e}")))?;
            return Ok(Verdict::User(Requester {
                user_id,
                device_id: who.device_id,
                is_guest: who.is_guest,
            }));
        }
        let matrix: Option<MatrixError> = serde_json::from_slice(&body).ok();
        match (status.as_u16(), matrix) {
            (401, Some(e))
                if matches!(e.errcode.as_str(), "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") =>
            {
                Ok(Verdict::Unknown)
            }
            (code @ (400 | 401 | 403 | 429), Some(e)) if valid_errcode(&e.errcode) => {
                Err(AuthError::Rejected {
                    status: code,
                    errcode: e.errcode,
                    error: e.error.chars().take(200).collect(),
                    soft_logout: e.soft_logout,
                })
            }
            (code, _) => Err(AuthError::BadGateway(format!(
                "whoami answered HTTP {code}"
            ))),
        }
    }
}

fn valid_errcode(code: &str) -> bool {
    code.len() <= 64
        && code.starts_with("M_")
        && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, AuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_WHOAMI_BODY {
            return Err(AuthError::BadGateway("whoami body too large".to_owned()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
