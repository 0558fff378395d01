//! Server discovery: where another server's federation API answers
//! (`.well-known` delegation, SRV records, port 8448), cached for an hour,
//! and the small JSON documents fetched along the way.

use std::time::Duration;

use bytes::Bytes;
use ruma::ServerName;
use url::Url;

use super::{Federation, FederationError, guard::Refused};
use crate::net::{CappedError, read_capped};

/// Largest key or `.well-known` document we read from another server.
const MAX_DOCUMENT: usize = 64 * 1024;
/// Timeout of one key or discovery request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a discovery result is reused.
pub(super) const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// Why another server (or a document of it) could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("not a usable URL: {0}")]
    Url(#[from] url::ParseError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{url}: {source}")]
    Request {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: answered {status}")]
    Status { url: Url, status: u16 },
    #[error("{url}: {source}")]
    Body {
        url: Url,
        #[source]
        source: CappedError,
    },
    #[error("{0} offers no federation service")]
    NoService(String),
}

impl Federation {
    /// Server discovery: the base URL to reach `server` at. IP literals and
    /// names with a port are used as they are; otherwise
    /// `.well-known/matrix/server` may delegate; else port 8448.
    pub async fn discover(&self, server: &ServerName) -> Result<Url, LookupError> {
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

    async fn discover_uncached(&self, server: &ServerName) -> Result<Url, LookupError> {
        if server.is_ip_literal() || server.port().is_some() {
            return base_url(server.host(), server.port().unwrap_or(8448));
        }
        let well_known = base_url(server.host(), 443)?.join("/.well-known/matrix/server")?;
        let delegated = match self.get_document(well_known).await {
            Ok(body) => delegated_server(&body),
            Err(_) => None,
        };
        match delegated {
            Some(target) if target.is_ip_literal() || target.port().is_some() => {
                base_url(target.host(), target.port().unwrap_or(8448))
            }
            Some(target) => self.srv_or_default(target.host()).await,
            None => self.srv_or_default(server.host()).await,
        }
    }

    /// `_matrix-fed._tcp.<host>` (then the older `_matrix._tcp`) names the
    /// host's federation port and the machine behind it; else port 8448.
    async fn srv_or_default(&self, host: &str) -> Result<Url, LookupError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = self
                .inner
                .dns
                .srv_lookup(format!("{service}.{host}."))
                .await
            else {
                continue;
            };
            match best_srv(lookup.answers()) {
                Some(SrvChoice::NotOffered) => {
                    return Err(LookupError::NoService(host.to_owned()));
                }
                Some(SrvChoice::Target { target, port }) => {
                    self.inner.resolver.set_srv_target(host, &target);
                    return base_url(host, port);
                }
                None => {}
            }
        }
        base_url(host, 8448)
    }

    /// A small JSON document from another server, size-capped.
    pub(super) async fn get_document(&self, url: Url) -> Result<Bytes, LookupError> {
        self.inner.guard.check_url(&url)?;
        let response = match self
            .inner
            .client
            .get(url.clone())
            .timeout(LOOKUP_TIMEOUT)
            .send()
            .await
        {
            Ok(response) => response,
            Err(source) => return Err(LookupError::Request { url, source }),
        };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(LookupError::Status { url, status });
        }
        read_capped(response, MAX_DOCUMENT)
            .await
            .map_err(|source| LookupError::Body { url, source })
    }
}

/// The base URL of a federation API at `host:port`. A host that would not
/// stay the URL's host (anything but a server name's host part) is refused.
pub fn base_url(host: &str, port: u16) -> Result<Url, LookupError> {
    let url = Url::parse(&format!("https://{host}:{port}/"))?;
    let kept = match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case(host),
        Some(url::Host::Ipv4(ip)) => host.parse() == Ok(ip),
        Some(url::Host::Ipv6(ip)) => host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse() == Ok(ip)),
        None => false,
    };
    if !kept || url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(LookupError::Url(url::ParseError::InvalidDomainCharacter));
    }
    Ok(url)
}

/// The server a `.well-known/matrix/server` document delegates to.
pub fn delegated_server(body: &[u8]) -> Option<ruma::OwnedServerName> {
    #[derive(serde::Deserialize)]
    struct WellKnown {
        #[serde(rename = "m.server")]
        server: String,
    }
    let document: WellKnown = serde_json::from_slice(body).ok()?;
    ServerName::parse(&document.server).ok()
}

/// What a host's SRV records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvChoice {
    /// The machine and port to connect to (the name stays the host's).
    Target { target: String, port: u16 },
    /// A target of "." says the service is deliberately not offered.
    NotOffered,
}

/// The record to use among a lookup's answers: the lowest priority, then
/// the highest weight. Answers that are not SRV records are ignored.
pub fn best_srv(answers: &[hickory_resolver::proto::rr::Record]) -> Option<SrvChoice> {
    let srv = answers
        .iter()
        .filter_map(|record| match &record.data {
            hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)))?;
    let target = srv.target.to_ascii();
    let target = target.trim_end_matches('.');
    if target.is_empty() {
        return Some(SrvChoice::NotOffered);
    }
    Some(SrvChoice::Target {
        target: target.to_owned(),
        port: srv.port,
    })
}

/// The resolver for SRV records: `dns_servers` when set, else the system's.
pub(super) fn srv_resolver(
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
