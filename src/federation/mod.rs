//! Federation: who another server is (its published signing keys, found
//! through server discovery), checking the `X-Matrix` signature of inbound
//! media requests, and signing our own. Every outbound request goes through
//! one HTTPS client whose connections pass the [`guard`].

pub mod fetch;
pub mod guard;
pub mod multipart;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, Method, Uri};
use bytes::Bytes;
use futures::StreamExt as _;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap},
};
use url::Url;

use crate::config::FederationConfig;

pub use guard::{AddressGuard, GuardedResolver};

/// Largest key or `.well-known` document we read from another server.
const MAX_DOCUMENT: usize = 64 * 1024;
/// How long our own key document says it is valid.
const OWN_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Timeout of one key or discovery request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Shortest time between two fetches of one server's keys.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a discovery result is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("signing key {path}: {reason}")]
    SigningKey { path: String, reason: String },
    #[error("federation CA file {path}: {reason}")]
    ExtraCa { path: String, reason: String },
    #[error("federation client: {0}")]
    Client(String),
}

/// Why an inbound request is not accepted.
#[derive(Debug, thiserror::Error, Clone)]
pub enum AuthFailure {
    #[error("missing or malformed X-Matrix Authorization header")]
    Missing,
    #[error("the request is addressed to another server")]
    WrongDestination,
    #[error("the origin server is blocked here")]
    Blocked,
    #[error("the origin's signing key could not be fetched: {0}")]
    KeyUnavailable(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// A remote server's keys as we last fetched them.
#[derive(Debug, Clone)]
struct ServerKeys {
    /// key id -> (public key, valid until, ms since the epoch).
    keys: BTreeMap<String, (Base64, u64)>,
}

struct Inner {
    server_name: OwnedServerName,
    config: FederationConfig,
    signing: Option<Ed25519KeyPair>,
    client: reqwest::Client,
    guard: AddressGuard,
    resolver: GuardedResolver,
    dns: hickory_resolver::TokioResolver,
    keys: moka::future::Cache<OwnedServerName, Arc<ServerKeys>>,
    /// The last fetch of each origin's keys, failed or not, for a minute:
    /// requests naming unknown key ids cannot make us fetch again and again,
    /// and concurrent requests share one fetch.
    key_fetches: moka::future::Cache<OwnedServerName, Arc<Result<Arc<ServerKeys>, AuthFailure>>>,
    discovery: moka::future::Cache<OwnedServerName, Url>,
}

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

impl Federation {
    pub fn new(
        server_name: OwnedServerName,
        config: &FederationConfig,
    ) -> Result<Self, FederationError> {
        let signing = config
            .signing_key_path
            .as_deref()
            .map(load_signing_key)
            .transpose()?;
        let guard = AddressGuard::new(&config.allowed_private_ranges);
        let resolver = GuardedResolver::new(guard.clone());
        let client = outbound_client(config, &resolver)?;
        let dns = srv_resolver(&config.dns_servers)?;
        Ok(Self {
            inner: Arc::new(Inner {
                server_name,
                config: config.clone(),
                signing,
                client,
                guard,
                resolver,
                dns,
                keys: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(config.max_key_cache)
                    .build(),
                key_fetches: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(KEY_REFETCH_INTERVAL)
                    .build(),
                discovery: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(DISCOVERY_TTL)
                    .build(),
            }),
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    pub fn config(&self) -> &FederationConfig {
        &self.inner.config
    }

    /// The one HTTPS client for other servers.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    pub fn guard(&self) -> &AddressGuard {
        &self.inner.guard
    }

    /// Whether `server` is on the block list (exact, or `*.suffix`).
    pub fn is_blocked(&self, server: &ServerName) -> bool {
        let name = server.host().to_ascii_lowercase();
        self.inner.config.blocked_servers.iter().any(|rule| {
            let rule = rule.to_ascii_lowercase();
            match rule.strip_prefix("*.") {
                Some(suffix) => name == suffix || name.ends_with(&format!(".{suffix}")),
                None => name == rule || server.as_str().eq_ignore_ascii_case(&rule),
            }
        })
    }

    /// Our key document (`GET /_matrix/key/v2/server`), signed; `None`
    /// without a signing key.
    pub fn own_keys(&self) -> Option<serde_json::Value> {
        let pair = self.inner.signing.as_ref()?;
        let valid_until = now_ms() + u64::try_from(OWN_KEY_VALIDITY.as_millis()).unwrap_or(0);
        let public = Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec());
        let mut doc = CanonicalJsonObject::new();
        doc.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String(self.inner.server_name.to_string()),
        );
        doc.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(valid_until).unwrap_or(ruma::Int::MAX)),
        );
        let mut key = CanonicalJsonObject::new();
        key.insert(
            "key".to_owned(),
            CanonicalJsonValue::String(public.encode()),
        );
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(
            format!("ed25519:{}", pair.version()),
            CanonicalJsonValue::Object(key),
        );
        doc.insert(
            "verify_keys".to_owned(),
            CanonicalJsonValue::Object(verify_keys),
        );
        doc.insert(
            "old_verify_keys".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::new()),
        );
        ruma::signatures::sign_json(self.inner.server_name.as_str(), pair, &mut doc).ok()?;
        serde_json::to_value(&doc).ok()
    }

    /// Checks the `X-Matrix` signature of an inbound request (no body) and
    /// answers the origin server.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<OwnedServerName, AuthFailure> {
        let x_matrix =
            XMatrix::extract_from_http_headers(headers).map_err(|_| AuthFailure::Missing)?;
        if x_matrix
            .destination
            .as_deref()
            .is_some_and(|d| d != self.inner.server_name)
        {
            return Err(AuthFailure::WrongDestination);
        }
        if self.is_blocked(&x_matrix.origin) {
            return Err(AuthFailure::Blocked);
        }
        let key_id = x_matrix.key.to_string();
        let key = self.public_key(&x_matrix.origin, &key_id).await?;
        let mut request = axum::http::Request::new(Vec::<u8>::new());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let map: PublicKeyMap =
            BTreeMap::from([(x_matrix.origin.to_string(), BTreeMap::from([(key_id, key)]))]);
        x_matrix
            .verify_http_request(&request, &self.inner.server_name, &map)
            .map_err(|_| AuthFailure::BadSignature)?;
        Ok(x_matrix.origin)
    }

    /// The `Authorization` value for a request from us to `destination`.
    pub fn sign(
        &self,
        destination: &ServerName,
        method: &Method,
        path_and_query: &str,
    ) -> Option<String> {
        let pair = self.inner.signing.as_ref()?;
        let mut request = axum::http::Request::new(Vec::<u8>::new());
        *request.method_mut() = method.clone();
        *request.uri_mut() = path_and_query.parse().ok()?;
        let input =
            XMatrixSigningInput::new(self.inner.server_name.clone(), destination.to_owned(), pair);
        XMatrix::sign_http_request(&request, input)
            .ok()
            .map(|x| x.to_string())
    }

    /// Whether we can sign outbound requests.
    pub fn can_sign(&self) -> bool {
        self.inner.signing.is_some()
    }

    /// `origin`'s public key `key_id`, valid now: from the cache, else
    /// fetched again (a key we have not seen, or one that expired, may have
    /// been published since), at most once a minute per origin.
    async fn public_key(&self, origin: &ServerName, key_id: &str) -> Result<Base64, AuthFailure> {
        let now = now_ms();
        let usable = |keys: &ServerKeys| {
            keys.keys
                .get(key_id)
                .filter(|(_, until)| *until > now)
                .map(|(key, _)| key.clone())
        };
        if let Some(cached) = self.inner.keys.get(origin).await
            && let Some(key) = usable(&cached)
        {
            return Ok(key);
        }
        let fetched = self
            .inner
            .key_fetches
            .get_with(origin.to_owned(), async {
                Arc::new(self.fetch_keys(origin).await)
            })
            .await;
        let fetched = fetched.as_ref().clone()?;
        let key = usable(&fetched);
        self.inner.keys.insert(origin.to_owned(), fetched).await;
        key.ok_or_else(|| {
            AuthFailure::KeyUnavailable(format!("{origin} publishes no valid key {key_id}"))
        })
    }

    /// `GET /_matrix/key/v2/server` from `origin`, self-signature checked.
    async fn fetch_keys(&self, origin: &ServerName) -> Result<Arc<ServerKeys>, AuthFailure> {
        let fail = |what: String| AuthFailure::KeyUnavailable(what);
        let base = self.discover(origin).await.map_err(fail)?;
        let url = base
            .join("/_matrix/key/v2/server")
            .map_err(|e| fail(e.to_string()))?;
        let body = self.get_document(url).await.map_err(fail)?;
        let doc: CanonicalJsonObject = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("key document of {origin}: {e}")))?;
        if doc.get("server_name").and_then(|v| v.as_str()) != Some(origin.as_str()) {
            return Err(fail(format!("key document is not for {origin}")));
        }
        let valid_until = doc
            .get("valid_until_ts")
            .and_then(CanonicalJsonValue::as_integer)
            .and_then(|v| u64::try_from(i64::from(v)).ok())
            .unwrap_or(0);
        let mut keys = BTreeMap::new();
        if let Some(CanonicalJsonValue::Object(verify_keys)) = doc.get("verify_keys") {
            for (id, entry) in verify_keys {
                if let Some(key) = entry
                    .as_object()
                    .and_then(|o| o.get("key"))
                    .and_then(|k| k.as_str())
                    .and_then(|k| Base64::parse(k).ok())
                {
                    keys.insert(id.clone(), (key, valid_until));
                }
            }
        }
        // The document must be signed by the keys it publishes.
        let own: PublicKeyMap = BTreeMap::from([(
            origin.to_string(),
            keys.iter()
                .map(|(id, (k, _))| (id.clone(), k.clone()))
                .collect(),
        )]);
        ruma::signatures::verify_json(&own, &doc)
            .map_err(|e| fail(format!("key document of {origin} is not self-signed: {e}")))?;
        Ok(Arc::new(ServerKeys { keys }))
    }

    /// Server discovery: the base URL to reach `server` at. IP literals and
    /// names with a port are used as they are; otherwise
    /// `.well-known/matrix/server` may delegate; else port 8448.
    pub async fn discover(&self, server: &ServerName) -> Result<Url, String> {
        if let Some(url) = self.inner.discovery.get(server).await {
            return Ok(url);
        }
        let url = self.discover_uncached(server).await?;
        self.inner
            .discovery
            .insert(server.to_owned(), url.clone())
            .await;
        Ok(url)
    }

    async fn discover_uncached(&self, server: &ServerName) -> Result<Url, String> {
        let base = |host: &str, port: u16| {
            Url::parse(&format!("https://{host}:{port}/")).map_err(|e| e.to_string())
        };
        if server.is_ip_literal() || server.port().is_some() {
            return base(server.host(), server.port().unwrap_or(8448));
        }
        let well_known = base(server.host(), 443)?
            .join("/.well-known/matrix/server")
            .map_err(|e| e.to_string())?;
        let delegated = match self.get_document(well_known).await {
            Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("m.server")?.as_str().map(str::to_owned))
                .and_then(|s| ServerName::parse(&s).ok()),
            Err(_) => None,
        };
        match delegated {
            Some(target) if target.is_ip_literal() || target.port().is_some() => {
                base(target.host(), target.port().unwrap_or(8448))
            }
            Some(target) => self.srv_or_default(target.host()).await,
            None => self.srv_or_default(server.host()).await,
        }
    }

    /// `_matrix-fed._tcp.<host>` (then the older `_matrix._tcp`) names the
    /// host's federation port and the machine behind it; else port 8448.
    async fn srv_or_default(&self, host: &str) -> Result<Url, String> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = self
                .inner
                .dns
                .srv_lookup(format!("{service}.{host}."))
                .await
            else {
                continue;
            };
            let best = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
            if let Some(srv) = best {
                let target = srv.target.to_ascii();
                let target = target.trim_end_matches('.');
                if target.is_empty() {
                    // "." means the service is deliberately not offered.
                    return Err(format!("{host} offers no federation service"));
                }
                self.inner.resolver.set_srv_target(host, target);
                return Url::parse(&format!("https://{host}:{}/", srv.port))
                    .map_err(|e| e.to_string());
            }
        }
        Url::parse(&format!("https://{host}:8448/")).map_err(|e| e.to_string())
    }

    /// A small JSON document from another server, size-capped.
    async fn get_document(&self, url: Url) -> Result<Bytes, String> {
        self.inner
            .guard
            .check_url(&url)
            .map_err(|e| e.to_string())?;
        let response = self
            .inner
            .client
            .get(url.clone())
            .timeout(LOOKUP_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        read_capped(response, MAX_DOCUMENT)
            .await
            .map_err(|e| format!("{url}: {e}"))
    }
}

/// Reads a response body, refusing one over `limit` bytes as it arrives.
pub async fn read_capped(response: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(format!("body over {limit} bytes"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if body.len() + chunk.len() > limit {
            return Err(format!("body over {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Reads a signing key in Synapse's format: `ed25519 <version> <base64
/// seed>`; the first key line is the one that signs.
pub fn load_signing_key(path: &std::path::Path) -> Result<Ed25519KeyPair, FederationError> {
    let err = |reason: String| FederationError::SigningKey {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_signing_key(&text).map_err(err)
}

pub fn parse_signing_key(text: &str) -> Result<Ed25519KeyPair, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("no key in the file")?;
    let mut parts = line.split_whitespace();
    let (Some(algorithm), Some(version), Some(seed), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `ed25519 <version> <base64 seed>`".to_owned());
    };
    if algorithm != "ed25519" {
        return Err(format!("unsupported algorithm {algorithm}"));
    }
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err("the key version must be [A-Za-z0-9_]".to_owned());
    }
    let seed = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(seed)
        .map_err(|e| format!("seed: {e}"))?;
    if seed.as_bytes().len() != 32 {
        return Err("the seed must be 32 bytes".to_owned());
    }
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed.as_bytes());
    Ed25519KeyPair::from_der(&der, version.to_owned()).map_err(|e| e.to_string())
}

/// The resolver for SRV records: `dns_servers` when set, else the system's.
fn srv_resolver(
    servers: &[std::net::SocketAddr],
) -> Result<hickory_resolver::TokioResolver, FederationError> {
    use hickory_resolver::{
        Resolver,
        config::{ConnectionConfig, NameServerConfig, ResolverConfig},
        net::runtime::TokioRuntimeProvider,
    };
    let err = |e: &dyn std::fmt::Display| FederationError::Client(format!("DNS resolver: {e}"));
    if servers.is_empty() {
        return Resolver::builder_tokio()
            .map_err(|e| err(&e))?
            .build()
            .map_err(|e| err(&e));
    }
    let name_servers = servers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map_err(|e| err(&e))
}

fn outbound_client(
    config: &FederationConfig,
    resolver: &GuardedResolver,
) -> Result<reqwest::Client, FederationError> {
    let guard = resolver.guard().clone();
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .no_proxy()
        .dns_resolver(Arc::new(resolver.clone()))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(config.idle_timeout)
        .redirect(redirect_policy(guard))
        .user_agent(concat!("mxmedia/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.extra_ca_path {
        let err = |reason: String| FederationError::ExtraCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificate in the file".to_owned()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| FederationError::Client(e.to_string()))
}

/// At most 5 redirects, each target checked by the guard.
pub fn redirect_policy(guard: AddressGuard) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds every URL asked so far, the first one included.
        if attempt.previous().len() > 5 {
            return attempt.error("more than 5 redirects");
        }
        match guard.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

#[cfg(test)]
mod tests;
