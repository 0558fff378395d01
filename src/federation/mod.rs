//! Federation: who another server is (its published signing keys, found
//! through server discovery), checking the `X-Matrix` signature of inbound
//! media requests, signing our own, and fetching other servers' media as
//! the core's [`RemoteSource`](crate::media::ports::RemoteSource). Every
//! outbound request goes through one HTTPS client whose connections pass
//! the [`guard`].

mod client;
mod discovery;
pub mod guard;
mod keys;
mod source;
mod verify;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};
use url::Url;

pub use self::{
    discovery::{LookupError, SrvChoice, base_url, best_srv, delegated_server},
    guard::{AddressGuard, GuardedResolver},
    keys::{KeyFileError, ServerKeys, load_signing_key, parse_signing_key, read_key_document},
    source::file_name,
    verify::{AuthFailure, claim, verify_claim},
};
use crate::config::FederationConfig;

/// Shortest time between two fetches of one server's keys.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("signing key {path}: {reason}")]
    SigningKey { path: String, reason: String },
    #[error("federation CA file {path}: {reason}")]
    ExtraCa { path: String, reason: String },
    #[error("federation client: {0}")]
    Client(String),
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
        let client = client::outbound_client(config, &resolver)?;
        let dns = discovery::srv_resolver(&config.dns_servers)?;
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
                    .time_to_live(discovery::DISCOVERY_TTL)
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
