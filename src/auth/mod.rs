//! Who is asking: bearer tokens are checked against the homeserver's
//! `/_matrix/client/v3/account/whoami`. Answers are cached under a hash of
//! the token, bounded in bytes, and valid ones are re-checked in the
//! background while they are served, so a logged-out token stops working
//! within seconds without a homeserver round trip per request.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use moka::{Expiry, future::Cache};
use ruma::OwnedUserId;
use serde::Deserialize;
use url::Url;

mod admin;

use crate::{
    config::{AdminConfig, HomeserverConfig},
    net::{CappedError, read_capped},
};

/// Largest whoami answer we read; a real one is under 200 bytes.
const MAX_WHOAMI_BODY: usize = 64 * 1024;
/// Bookkeeping bytes per cache entry on top of its ids (moka's node, the
/// timer wheel, the `Requester`).
const ENTRY_OVERHEAD: usize = 160;

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

/// One cached answer and when the homeserver gave it.
#[derive(Clone)]
struct Entry {
    verdict: Verdict,
    checked: Instant,
}

impl Entry {
    /// Bytes this entry costs in the cache, roughly: the key, the user and
    /// device ids, and bookkeeping.
    fn weight(&self) -> u32 {
        let ids = match &self.verdict {
            Verdict::User(r) => {
                r.user_id.as_str().len() + r.device_id.as_ref().map_or(0, String::len)
            }
            Verdict::Unknown => 0,
        };
        u32::try_from(32 + ids + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
    }
}

/// The cache key: a SHA-256 of the credentials, so no token sits in memory
/// longer than its check, and every key costs the same.
type TokenKey = [u8; 32];

fn token_key(credentials: &Credentials) -> TokenKey {
    let mut hasher = Sha256::new();
    for part in [
        Some(credentials.token.as_str()),
        credentials.user_id.as_deref(),
        credentials.device_id.as_deref(),
    ] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        let part = part.unwrap_or("");
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

struct EntryExpiry {
    valid: Duration,
    rejected: Duration,
}

impl Expiry<TokenKey, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value.verdict {
            Verdict::User(_) => self.valid,
            Verdict::Unknown => self.rejected,
        })
    }

    fn expire_after_update(
        &self,
        key: &TokenKey,
        value: &Entry,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    whoami: Url,
    cache: Cache<TokenKey, Entry>,
    /// A valid entry this old is served, and checked again in the background.
    refresh_after: Duration,
    /// Tokens being checked again in the background (one check each).
    refreshing: std::sync::Mutex<HashSet<TokenKey>>,
    admins: Arc<admin::Admins>,
    metrics: crate::metrics::Operations,
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
    /// The HTTP client that talks to the homeserver (no proxy, no
    /// redirects, the configured timeouts), for its other adapters.
    pub fn homeserver_client(&self) -> reqwest::Client {
        self.inner.http.clone()
    }

    pub fn new(
        config: &HomeserverConfig,
        admin: &AdminConfig,
        metrics: crate::metrics::Operations,
    ) -> Result<Self, AuthError> {
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
            .max_capacity(config.token_cache_size.as_u64())
            .weigher(|_key, entry: &Entry| entry.weight())
            .expire_after(EntryExpiry {
                valid: config.token_cache_ttl,
                rejected: config.token_negative_cache_ttl,
            })
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                admins: Arc::new(admin::Admins::new(http.clone(), config, admin)),
                http,
                whoami,
                cache,
                refresh_after: config.token_refresh_after.min(config.token_cache_ttl),
                refreshing: std::sync::Mutex::new(HashSet::new()),
                metrics,
            }),
        })
    }

    /// The user behind `credentials`. A cached valid answer is served at
    /// once; once it is `token_refresh_after` old the homeserver is asked
    /// again in the background (one check per token at a time), and an
    /// answer `token_cache_ttl` old is gone: the request waits for a fresh
    /// check. A logged-out token is therefore refused within
    /// `token_cache_ttl`, while an active token costs the homeserver one
    /// check per `token_refresh_after`. Concurrent first checks of one token
    /// share a single whoami call; only definite answers are cached.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Requester, AuthError> {
        let key = token_key(&credentials);
        let cached = self.inner.cache.get(&key).await;
        self.inner.metrics.token_cache(cached.is_some());
        if let Some(entry) = cached {
            return match entry.verdict {
                Verdict::Unknown => Err(AuthError::UnknownToken),
                Verdict::User(requester) => {
                    if entry.checked.elapsed() >= self.inner.refresh_after {
                        self.refresh(key, credentials);
                    }
                    Ok(requester)
                }
            };
        }
        let inner = Arc::clone(&self.inner);
        let entry = self
            .inner
            .cache
            .try_get_with(key, async move {
                let verdict = inner.whoami(&credentials).await?;
                Ok::<_, AuthError>(Entry {
                    verdict,
                    checked: Instant::now(),
                })
            })
            .await
            .map_err(|e| (*e).clone())?;
        match entry.verdict {
            Verdict::User(requester) => Ok(requester),
            Verdict::Unknown => Err(AuthError::UnknownToken),
        }
    }

    /// Whether `requester` (who presented `credentials`) is a server admin:
    /// named in `admin.users`, or let in by the homeserver's admin API.
    pub async fn is_admin(
        &self,
        requester: &Requester,
        credentials: &Credentials,
    ) -> Result<bool, AuthError> {
        self.inner.admins.is_admin(requester, credentials).await
    }

    /// Checks `credentials` again in the background, unless a check of them
    /// already runs. A failure to reach the homeserver keeps the old answer
    /// until it expires.
    fn refresh(&self, key: TokenKey, credentials: Credentials) {
        if !lock(&self.inner.refreshing).insert(key) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            match inner.whoami(&credentials).await {
                Ok(verdict) => {
                    let entry = Entry {
                        verdict,
                        checked: Instant::now(),
                    };
                    inner.cache.insert(key, entry).await;
                }
                Err(error) => tracing::debug!(%error, "background token check failed"),
            }
            lock(&inner.refreshing).remove(&key);
        });
    }
}

/// `GET url` on the homeserver as the client who presented `credentials`
/// (the token, and an appservice's `user_id` / `device_id`), its answer
/// read under `max` bytes. `what` names the call in errors.
pub(crate) async fn ask_homeserver(
    http: &reqwest::Client,
    mut url: Url,
    credentials: &Credentials,
    max: usize,
    what: &str,
) -> Result<(reqwest::StatusCode, bytes::Bytes), AuthError> {
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
    let response = http
        .get(url)
        .bearer_auth(&credentials.token)
        .send()
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
    let status = response.status();
    let body = read_capped(response, max)
        .await
        .map_err(|e| AuthError::from_capped(e, what))?;
    Ok((status, body))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// Asks the homeserver who `credentials` belong to, counted and timed.
    async fn whoami(&self, credentials: &Credentials) -> Result<Verdict, AuthError> {
        let started = Instant::now();
        let answer = self.ask_whoami(credentials).await;
        let outcome = match &answer {
            Ok(Verdict::User(_)) => "valid",
            Ok(Verdict::Unknown) => "unknown_token",
            Err(AuthError::Rejected { .. }) => "rejected",
            Err(_) => "failed",
        };
        self.metrics
            .token_checked(outcome, started.elapsed().as_secs_f64());
        answer
    }

    async fn ask_whoami(&self, credentials: &Credentials) -> Result<Verdict, AuthError> {
        let (status, body) = ask_homeserver(
            &self.http,
            self.whoami.clone(),
            credentials,
            MAX_WHOAMI_BODY,
            "whoami",
        )
        .await?;
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

impl AuthError {
    /// A homeserver answer that could not be read: too large is the
    /// homeserver's fault (502), a broken read its unavailability (503).
    fn from_capped(error: CappedError, what: &str) -> Self {
        match error {
            CappedError::TooLarge(_) => Self::BadGateway(format!("{what} answer too large")),
            CappedError::Read(e) => Self::Unavailable(e.to_string()),
        }
    }
}

fn valid_errcode(code: &str) -> bool {
    code.len() <= 64
        && code.starts_with("M_")
        && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}
