//! Configuration: one typed tree loaded from a YAML file, then overridden by
//! `MXMEDIA__*` env vars, then checked as a whole before anything starts.
//! Defaults live only in the `Default` impls; every problem is reported at once.

mod limits;
mod load;
mod previews;
pub mod secret;
pub mod storage;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bytesize::ByteSize;
use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::thumbnail::{Method, Spec};

pub use limits::{Limits, QuotaConfig, Rate, RateLimitConfig, RetentionConfig, UserClass, Window};
pub use load::ConfigError;
pub use previews::{OEmbedConfig, OEmbedProvider, UrlPreviewConfig};
pub use secret::Secret;
pub use storage::{
    DatastoreConfig, DatastoreKind, LocalDatastoreConfig, RedirectConfig, S3DatastoreConfig,
    S3Provider, SseConfig,
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver's name, used in every `mxc://` URI we hand out. Required.
    pub server_name: OwnedServerName,
    /// Address the HTTP API listens on. Default `127.0.0.1:8009`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Base directory for the sled database, the default local datastore and
    /// the cache, unless each is configured elsewhere. Default `./data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The homeserver that checks access tokens. Required.
    pub homeserver: HomeserverConfig,
    /// Where bytes live. Default: one local datastore under `data_dir/media`.
    #[serde(default = "default_datastores")]
    pub datastores: Vec<DatastoreConfig>,
    /// Run every writable datastore's self-test (put, head, ranged get,
    /// multipart, presign, delete) before serving; a failure stops start-up.
    /// Default true.
    #[serde(default = "default_true")]
    pub selfcheck_on_start: bool,
    /// Unix socket of the control API used by `mxmedia storage ...` while the
    /// server runs (mode 0600). Default `data_dir/control.sock`.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Addresses (CIDR) of the reverse proxies in front of mxmedia. Only a
    /// connection from one of them has its `X-Forwarded-For` believed; the
    /// client address is then the last address in it that is not a trusted
    /// proxy. Default: none (the peer address is the client).
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Limits on the connections of the public listener.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Prometheus metrics on their own listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Serving our media to other homeservers and fetching theirs.
    #[serde(default)]
    pub federation: FederationConfig,
    /// Where metadata lives. Default: sled under `data_dir/db`.
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub media: MediaConfig,
    /// Local hot cache in front of object-store datastores.
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub thumbnails: ThumbnailConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Who may use the admin API besides the homeserver's own admins.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Deleting media nobody has served for a while.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Per-user upload quotas.
    #[serde(default)]
    pub quotas: QuotaConfig,
    /// Request rates per user and per client address.
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    /// Link previews (`/preview_url`), off by default.
    #[serde(default)]
    pub url_previews: UrlPreviewConfig,
}

/// Thumbnail sizes and the budgets that keep generation safe.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThumbnailConfig {
    /// The sizes thumbnails are made at; every request snaps to one of them.
    /// Default: the spec's 32x32 crop, 96x96 crop, 320x240, 640x480 and
    /// 800x600 scale.
    pub sizes: Vec<Spec>,
    /// Make a missing thumbnail when it is first asked for. Default true.
    pub dynamic: bool,
    /// After each image upload, make every configured size in the
    /// background, from one decode. Default false.
    pub pregenerate: bool,
    /// Images whose header declares more pixels are never decoded
    /// (413 `M_TOO_LARGE`). Default 33554432 (32 Mi).
    pub max_pixels: u64,
    /// Animations with more frames are not thumbnailed (413 `M_TOO_LARGE`);
    /// frames are counted without decoding. Default 1000.
    pub max_frames: u64,
    /// Larger originals are not thumbnailed (413 `M_TOO_LARGE`). Default 64MiB.
    pub max_source_size: ByteSize,
    /// Memory one generation may use, estimated from the header before
    /// decoding: stills over it are refused (413 `M_TOO_LARGE`), animations
    /// are cut to the frames that fit or made still. With `concurrency`
    /// generations at once, thumbnails use at most `concurrency` x
    /// (`max_job_memory` + `max_source_size`). Default 256MiB.
    pub max_job_memory: ByteSize,
    /// Pixels one animated thumbnail may decode (frames x canvas); longer
    /// animations are cut short. Default 200000000.
    pub max_animation_pixels: u64,
    /// Thumbnails generated at once; 0 means one per CPU core. Default 0.
    pub concurrency: usize,
    /// The image formats thumbnails are made from. Default: jpeg, png,
    /// gif, webp; `heic` and `avif` need a build with the `heif` feature.
    pub formats: Vec<crate::thumbnail::Format>,
}

impl ThumbnailConfig {
    /// HEIC and AVIF listed in a build that cannot decode them.
    fn format_problems(&self) -> Vec<String> {
        use crate::thumbnail::Format;
        self.formats
            .iter()
            .filter(|f| matches!(f, Format::Heic | Format::Avif) && !cfg!(feature = "heif"))
            .map(|f| {
                let name = if *f == Format::Heic { "heic" } else { "avif" };
                format!(
                    "thumbnails.formats: {name} needs a build with the heif feature (cargo build --release --features heif)"
                )
            })
            .collect()
    }
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        let size = |width, height, method| Spec {
            width,
            height,
            method,
        };
        Self {
            sizes: vec![
                size(32, 32, Method::Crop),
                size(96, 96, Method::Crop),
                size(320, 240, Method::Scale),
                size(640, 480, Method::Scale),
                size(800, 600, Method::Scale),
            ],
            dynamic: true,
            pregenerate: false,
            max_pixels: 32 * 1024 * 1024,
            max_frames: 1000,
            max_source_size: ByteSize::mib(64),
            max_job_memory: ByteSize::mib(256),
            max_animation_pixels: 200_000_000,
            concurrency: 0,
            formats: vec![
                crate::thumbnail::Format::Jpeg,
                crate::thumbnail::Format::Png,
                crate::thumbnail::Format::Gif,
                crate::thumbnail::Format::Webp,
            ],
        }
    }
}

/// Local disk cache of hot blobs from object-store datastores (never used
/// for local datastores, which are already on disk).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Default true.
    pub enabled: bool,
    /// Directory of the cache. Default `data_dir/cache`.
    pub path: Option<PathBuf>,
    /// Most bytes the cache keeps on disk. Default 1GiB.
    pub max_size: ByteSize,
    /// Larger blobs are never cached. Default 64MiB.
    pub max_file_size: ByteSize,
    /// The hottest small blobs of every datastore, kept in memory.
    pub memory: MemoryCacheConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            max_size: ByteSize::gib(1),
            max_file_size: ByteSize::mib(64),
            memory: MemoryCacheConfig::default(),
        }
    }
}

/// The memory tier: small, popular blobs (avatars, thumbnails) served
/// without touching a file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryCacheConfig {
    /// Most bytes kept in memory; 0 turns the tier off. Default 64MiB.
    pub max_size: ByteSize,
    /// Larger blobs are never kept. Default 256KiB.
    pub max_file_size: ByteSize,
}

impl Default for MemoryCacheConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize::mib(64),
            max_file_size: ByteSize::kib(256),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8009))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_datastores() -> Vec<DatastoreConfig> {
    vec![DatastoreConfig::Local(LocalDatastoreConfig::default())]
}

/// Token checks against the homeserver.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver's client API, e.g. `http://127.0.0.1:8008`.
    pub url: Url,
    /// Timeout of one `/account/whoami` call. Default 10s.
    #[serde(default = "default_hs_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest a valid token's user is remembered: a token logged out on the
    /// homeserver is refused here within this time. Default 5s.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// A remembered token this old is still accepted, and checked again in
    /// the background, so an active token costs the homeserver one check per
    /// this interval. Capped at `token_cache_ttl`. Default 2s.
    #[serde(default = "default_token_refresh", with = "humantime_serde")]
    pub token_refresh_after: Duration,
    /// Memory the token cache may use (valid and rejected tokens, keyed by
    /// a hash of the token). Default 16MiB.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: ByteSize,
    /// How long a rejected token is remembered. Default 30s.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub token_negative_cache_ttl: Duration,
    /// Accept `?access_token=` (deprecated, still required by spec v1.19). Default true.
    #[serde(default = "default_true")]
    pub accept_query_token: bool,
    /// A homeserver admin's access token, for what mxmedia asks on its own
    /// (which media are avatars, for retention). Optional.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// The same, read from a file.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
}

fn default_hs_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_token_refresh() -> Duration {
    Duration::from_secs(2)
}
fn default_token_cache_size() -> ByteSize {
    ByteSize::mib(16)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_true() -> bool {
    true
}

/// Metadata database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatabaseConfig {
    /// Embedded sled database.
    Sled {
        /// Directory of the database. Default `data_dir/db`.
        #[serde(default)]
        path: Option<PathBuf>,
        /// Memory sled may use as page cache. Default 64MiB.
        #[serde(default = "default_sled_cache")]
        cache_capacity: ByteSize,
    },
    /// PostgreSQL, which any number of mxmedia instances may share.
    Postgres {
        /// `postgres://user:password@host:port/database`.
        #[serde(default)]
        url: Option<Secret>,
        /// A file holding the URL instead.
        #[serde(default)]
        url_file: Option<PathBuf>,
        /// Connections this instance keeps at most. Default 16.
        #[serde(default = "default_pg_connections")]
        max_connections: u32,
    },
}

fn default_pg_connections() -> u32 {
    16
}

fn default_sled_cache() -> ByteSize {
    ByteSize::mib(64)
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self::Sled {
            path: None,
            cache_capacity: default_sled_cache(),
        }
    }
}

/// Upload, download and async-upload rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest accepted upload; advertised as `m.upload.size`. Default 100MiB.
    pub max_upload_size: ByteSize,
    /// Media created while this is on is served only on the authenticated
    /// endpoints (404 on the legacy ones). Default true.
    pub freeze_unauthenticated: bool,
    /// How long an id from `/create` stays usable. Default 24h.
    #[serde(with = "humantime_serde")]
    pub pending_expiry: Duration,
    /// Unexpired `/create` ids one user may hold. Default 10.
    pub max_pending_per_user: usize,
    /// Cap on a download's `timeout_ms` wait for pending media. Default 60s.
    #[serde(with = "humantime_serde")]
    pub max_download_wait: Duration,
    /// An upload that sends nothing for this long is dropped. Default 60s.
    #[serde(with = "humantime_serde")]
    pub upload_idle_timeout: Duration,
    /// An upload must bring at least this many bytes per second, judged
    /// over 30-second windows (408 otherwise); 0 turns the check off.
    /// Default 1KiB.
    pub upload_min_rate: ByteSize,
    /// Longest one upload may take, first byte to last. Default 1h.
    #[serde(with = "humantime_serde")]
    pub upload_deadline: Duration,
    /// How often expired ids and orphaned blobs are swept. Default 10m.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Objects without a record are deleted only once older than this. Default 1h.
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// Most byte ranges served in one multipart response. Default 16.
    pub max_ranges: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_size: ByteSize::mib(100),
            freeze_unauthenticated: true,
            pending_expiry: Duration::from_secs(24 * 3600),
            max_pending_per_user: 10,
            max_download_wait: Duration::from_secs(60),
            upload_idle_timeout: Duration::from_secs(60),
            upload_min_rate: ByteSize::kib(1),
            upload_deadline: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(3600),
            max_ranges: 16,
        }
    }
}

/// Federation: inbound media requests are checked against the origin's
/// published keys; outbound fetches are signed with our homeserver's key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// The homeserver's signing key, in Synapse's format (`ed25519 <id>
    /// <base64 seed>` per line; the first line signs). Needed to fetch
    /// remote media. Default: unset (remote media is not fetched).
    pub signing_key_path: Option<PathBuf>,
    /// A PEM file of extra CA certificates trusted for federation TLS, on
    /// top of the system's roots (private federations, tests). Default: unset.
    pub extra_ca_path: Option<PathBuf>,
    /// Address ranges (CIDR) outbound requests may reach although they are
    /// not public: loopback, private, link-local and the like are refused
    /// otherwise. Default: none.
    pub allowed_private_ranges: Vec<ipnet::IpNet>,
    /// DNS servers asked for SRV records during server discovery. Default:
    /// none (the system's resolvers, from /etc/resolv.conf).
    pub dns_servers: Vec<SocketAddr>,
    /// Server names we neither fetch from nor serve; `*.example.org` matches
    /// every subdomain. Default: none.
    pub blocked_servers: Vec<String>,
    /// Largest remote file fetched (502 `M_TOO_LARGE` past it). Default: the
    /// upload limit.
    pub max_remote_size: Option<ByteSize>,
    /// A remote that sends nothing for this long is dropped. Default 20s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Cap on one remote fetch, headers to last byte. Default 5m.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// How long a failed fetch is remembered before it is tried again.
    /// Default 1m.
    #[serde(with = "humantime_serde")]
    pub failure_cache_ttl: Duration,
    /// Longest a remote server's keys are trusted from our cache, even if it
    /// publishes a later `valid_until_ts`. Default 24h.
    #[serde(with = "humantime_serde")]
    pub max_key_cache: Duration,
    /// Remote fetches running at once, across all servers; a request that
    /// finds every slot taken for `fetch_queue_timeout` gets 429
    /// `M_LIMIT_EXCEEDED`. Default 32.
    pub max_concurrent_fetches: usize,
    /// How long a request waits for a free fetch slot before it gets 429.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub fetch_queue_timeout: Duration,
    /// Bytes of remote media one user may make us fetch per
    /// `user_budget_window` (429 `M_LIMIT_EXCEEDED` past it; media already
    /// cached is always served). Default 2GiB.
    pub user_budget: ByteSize,
    /// The window `user_budget` counts over. Default 1h.
    #[serde(with = "humantime_serde")]
    pub user_budget_window: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            signing_key_path: None,
            extra_ca_path: None,
            allowed_private_ranges: Vec::new(),
            dns_servers: Vec::new(),
            blocked_servers: Vec::new(),
            max_remote_size: None,
            idle_timeout: Duration::from_secs(20),
            total_timeout: Duration::from_secs(300),
            failure_cache_ttl: Duration::from_secs(60),
            max_key_cache: Duration::from_secs(24 * 3600),
            max_concurrent_fetches: 32,
            fetch_queue_timeout: Duration::from_secs(10),
            user_budget: ByteSize::gib(2),
            user_budget_window: Duration::from_secs(3600),
        }
    }
}

/// What one client can hold of the public listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Connections open at once; past it new ones wait in the kernel's
    /// backlog until one closes. Default 4096.
    pub max: usize,
    /// A request's head (request line and headers) must arrive within this
    /// time of its first byte; a client that trickles it is disconnected.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this long.
    /// Keep it above the reverse proxy's upstream keep-alive timeout (nginx:
    /// 60s), so the proxy never reuses a connection we are closing.
    /// Default 75s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// The Prometheus endpoint (`GET /metrics`), kept off the public listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics listener; metrics are off when unset.
    /// Default: unset.
    pub listen: Option<SocketAddr>,
}

/// Server admins for the admin media API. The homeserver's admins are
/// admins here too (asked through its admin API with the requester's own
/// token); this list adds users it does not name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Matrix user ids, e.g. `@moderator:example.org`. Default none.
    pub users: Vec<ruma::OwnedUserId>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info` or `mxmedia=debug,info`. Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Path of the control socket.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("control.sock"))
    }

    /// Directory of the hot cache.
    pub fn cache_path(&self) -> PathBuf {
        self.cache
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// Directory of the sled database.
    pub fn sled_path(&self) -> PathBuf {
        match &self.database {
            DatabaseConfig::Sled {
                path: Some(path), ..
            } => path.clone(),
            _ => self.data_dir.join("db"),
        }
    }

    /// Every problem that makes this config unusable, in one list.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.media.max_upload_size.as_u64() == 0 {
            problems.push("media.max_upload_size: must be greater than zero".to_owned());
        }
        if self.media.max_pending_per_user == 0 {
            problems.push("media.max_pending_per_user: must be at least 1".to_owned());
        }
        if self.media.pending_expiry.is_zero() {
            problems.push("media.pending_expiry: must be greater than zero".to_owned());
        }
        if self.media.upload_idle_timeout.is_zero() {
            problems.push("media.upload_idle_timeout: must be greater than zero".to_owned());
        }
        if self.media.upload_deadline.is_zero() {
            problems.push("media.upload_deadline: must be greater than zero".to_owned());
        }
        if self.media.sweep_interval.is_zero() {
            problems.push("media.sweep_interval: must be greater than zero".to_owned());
        }
        problems.extend(self.thumbnails.format_problems());
        if self.connections.max == 0 {
            problems.push("connections.max: must be at least 1".to_owned());
        }
        if self.connections.header_timeout.is_zero() || self.connections.idle_timeout.is_zero() {
            problems.push(
                "connections.header_timeout, connections.idle_timeout: must be greater than zero"
                    .to_owned(),
            );
        }
        if self.federation.max_concurrent_fetches == 0 {
            problems.push("federation.max_concurrent_fetches: must be at least 1".to_owned());
        }
        if self.federation.user_budget_window.is_zero() {
            problems.push("federation.user_budget_window: must be greater than zero".to_owned());
        }
        if self.media.max_ranges == 0 {
            problems.push("media.max_ranges: must be at least 1".to_owned());
        }
        if !matches!(self.homeserver.url.scheme(), "http" | "https") {
            problems.push("homeserver.url: must be an http:// or https:// URL".to_owned());
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            problems.push(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        if self.cache.enabled && self.cache.max_file_size > self.cache.max_size {
            problems.push("cache.max_file_size: must not exceed cache.max_size".to_owned());
        }
        if self.thumbnails.sizes.is_empty() {
            problems.push("thumbnails.sizes: at least one size is required".to_owned());
        }
        for (i, size) in self.thumbnails.sizes.iter().enumerate() {
            if !(1..=4096).contains(&size.width) || !(1..=4096).contains(&size.height) {
                problems.push(format!(
                    "thumbnails.sizes[{i}]: width and height must be 1-4096"
                ));
            }
        }
        if self.metrics.listen.is_some_and(|addr| addr == self.listen) {
            problems.push("metrics.listen: must differ from listen".to_owned());
        }
        if self.thumbnails.max_pixels == 0 {
            problems.push("thumbnails.max_pixels: must be greater than zero".to_owned());
        }
        storage::check_datastores(&self.datastores, &mut problems);
        if let DatabaseConfig::Postgres { url, url_file, .. } = &self.database {
            let problem = match (url, url_file) {
                (None, None) => Some("type postgres needs one"),
                (Some(_), Some(_)) => Some("give one, not both"),
                _ => None,
            };
            if let Some(problem) = problem {
                problems.push(format!("database.url, database.url_file: {problem}"));
            }
        }
        let has_token =
            self.homeserver.admin_token.is_some() || self.homeserver.admin_token_file.is_some();
        if self.homeserver.admin_token.is_some() && self.homeserver.admin_token_file.is_some() {
            problems.push(
                "homeserver.admin_token, homeserver.admin_token_file: give one, not both"
                    .to_owned(),
            );
        }
        limits::check(
            &self.retention,
            &self.quotas,
            &self.rate_limits,
            has_token,
            &mut problems,
        );
        previews::check(&self.url_previews, &mut problems);
        problems
    }
}
