//! Datastore configuration: where blobs live and which kinds of blob each
//! datastore takes. A datastore that takes no kind is read-only. S3
//! datastores take a `provider` preset that fills endpoint, region and
//! addressing defaults for each service.

use std::{collections::HashSet, path::PathBuf, time::Duration};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use url::Url;

use super::secret::Secret;

/// What a datastore may be given to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    LocalMedia,
    RemoteMedia,
    Thumbnails,
}

/// One datastore, chosen by `type`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DatastoreConfig {
    /// A directory on local disk.
    Local(LocalDatastoreConfig),
    /// An S3-compatible bucket.
    S3(Box<S3DatastoreConfig>),
}

impl DatastoreConfig {
    pub fn id(&self) -> &str {
        match self {
            Self::Local(local) => &local.id,
            Self::S3(s3) => &s3.id,
        }
    }

    /// Applies `fix` to every file or directory path of this datastore.
    pub(super) fn resolve_paths(&mut self, fix: &impl Fn(&mut Option<PathBuf>)) {
        match self {
            Self::Local(local) => fix(&mut local.path),
            Self::S3(s3) => {
                fix(&mut s3.access_key_id_file);
                fix(&mut s3.secret_access_key_file);
                if let Some(SseConfig::Customer { key_file, .. }) = &mut s3.sse {
                    fix(key_file);
                }
            }
        }
    }

    pub fn kinds(&self) -> &[DatastoreKind] {
        match self {
            Self::Local(local) => &local.kinds,
            Self::S3(s3) => &s3.kinds,
        }
    }
}

/// S3-compatible services with known defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Provider {
    Aws,
    B2,
    Wasabi,
    R2,
    Spaces,
    Minio,
    Garage,
    #[default]
    Generic,
}

/// Server-side encryption.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SseConfig {
    /// SSE-KMS with the given key (AWS).
    Kms {
        key_id: String,
        #[serde(default)]
        bucket_key: bool,
    },
    /// SSE-C: a base64 256-bit key we send with every request.
    Customer {
        key: Option<Secret>,
        key_file: Option<PathBuf>,
    },
}

/// Presigned redirects for downloads (spec MSC3860).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedirectConfig {
    /// Answer downloads with a 307 to a presigned URL. Default false.
    pub enabled: bool,
    /// How long a presigned URL is valid. Default 1h.
    #[serde(with = "humantime_serde")]
    pub url_ttl: Duration,
    /// How long one URL is handed out again before a fresh one is signed,
    /// so clients and caches can reuse it. At most half of `url_ttl`. Default 30m.
    #[serde(with = "humantime_serde")]
    pub reuse_for: Duration,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url_ttl: Duration::from_secs(3600),
            reuse_for: Duration::from_secs(1800),
        }
    }
}

/// Direct uploads (MSC3870): `/create` answers a presigned PUT URL on
/// this bucket for local media; the client uploads there, then completes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectUploadConfig {
    pub enabled: bool,
    /// How long an upload URL works. Default 10m; the object must be
    /// completed before `media.orphan_grace` after that.
    #[serde(with = "humantime_serde")]
    pub url_ttl: Duration,
}

impl Default for DirectUploadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3DatastoreConfig {
    /// Name recorded with every blob stored here. Required.
    pub id: String,
    /// Fills endpoint, region and addressing defaults. Default `generic`.
    #[serde(default)]
    pub provider: S3Provider,
    /// Bucket name. Required.
    pub bucket: String,
    /// Region. Provider default when unset (`auto` for r2, `us-east-1` for most).
    #[serde(default)]
    pub region: Option<String>,
    /// Service URL. Derived from the provider and region when unset (not for
    /// minio, garage or generic, which need it).
    #[serde(default)]
    pub endpoint: Option<Url>,
    /// Cloudflare account id, used to build the r2 endpoint.
    #[serde(default)]
    pub account_id: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`). Default: false for aws, true otherwise.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Credentials; without them the standard `AWS_*` environment variables are used.
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Key prefix inside the bucket, e.g. `media/`. Default none.
    #[serde(default)]
    pub prefix: String,
    /// Storage class for new objects, e.g. `STANDARD_IA`. Default: the bucket's.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Use multipart uploads for large bodies. Off: every upload is buffered
    /// in memory and sent as one PUT. Default true.
    #[serde(default = "yes")]
    pub multipart: bool,
    /// Bodies up to this size go as one PUT. Default 8MiB, minimum 5MiB.
    #[serde(default = "default_part_size")]
    pub multipart_threshold: ByteSize,
    /// Size of every multipart part (equal parts, as B2 and R2 require). Default 8MiB, 5MiB-5GiB.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Server-side encryption. Default none.
    #[serde(default)]
    pub sse: Option<SseConfig>,
    /// Timeout of one request to the service. Default 60s.
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Connection timeout. Default 5s.
    #[serde(default = "default_s3_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a failed request (with backoff) before giving up. Default 2.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    #[serde(default)]
    pub redirect: RedirectConfig,
    /// Clients upload straight into the bucket (MSC3870). Default off.
    #[serde(default)]
    pub direct_uploads: DirectUploadConfig,
    /// Kinds of blob written here. Default all three; empty means read-only.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<DatastoreKind>,
}

fn yes() -> bool {
    true
}
fn default_part_size() -> ByteSize {
    ByteSize::mib(8)
}
fn default_s3_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_s3_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> usize {
    2
}
fn all_kinds() -> Vec<DatastoreKind> {
    vec![
        DatastoreKind::LocalMedia,
        DatastoreKind::RemoteMedia,
        DatastoreKind::Thumbnails,
    ]
}

impl S3DatastoreConfig {
    /// Region after the provider's default.
    pub fn effective_region(&self) -> String {
        if let Some(region) = &self.region {
            return region.clone();
        }
        match self.provider {
            S3Provider::R2 => "auto".to_owned(),
            S3Provider::Garage => "garage".to_owned(),
            _ => "us-east-1".to_owned(),
        }
    }

    /// Endpoint after the provider's pattern; `None` means the AWS default.
    pub fn effective_endpoint(&self) -> Result<Option<Url>, EndpointError> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(Some(endpoint.clone()));
        }
        let region = self.region.as_deref();
        let url = match (self.provider, region) {
            (S3Provider::Aws, _) => return Ok(None),
            (S3Provider::B2, Some(r)) => format!("https://s3.{r}.backblazeb2.com"),
            (S3Provider::Wasabi, Some(r)) => format!("https://s3.{r}.wasabisys.com"),
            (S3Provider::Spaces, Some(r)) => format!("https://{r}.digitaloceanspaces.com"),
            (S3Provider::R2, _) => match &self.account_id {
                Some(account) => format!("https://{account}.r2.cloudflarestorage.com"),
                None => return Err(EndpointError::NeedsAccountId),
            },
            (S3Provider::B2 | S3Provider::Wasabi | S3Provider::Spaces, None) => {
                return Err(EndpointError::NeedsRegion(
                    format!("{:?}", self.provider).to_lowercase(),
                ));
            }
            (S3Provider::Minio | S3Provider::Garage | S3Provider::Generic, _) => {
                return Err(EndpointError::NeedsEndpoint);
            }
        };
        Url::parse(&url)
            .map(Some)
            .map_err(|source| EndpointError::Invalid { url, source })
    }

    /// Path-style addressing after the provider's default.
    pub fn effective_path_style(&self) -> bool {
        self.path_style.unwrap_or(self.provider != S3Provider::Aws)
    }

    /// The URL the S3 client is given. With virtual-host addressing and an
    /// explicit endpoint, that is the bucket's own URL (bucket in the host).
    pub fn client_endpoint(&self) -> Result<Option<Url>, EndpointError> {
        let Some(mut endpoint) = self.effective_endpoint()? else {
            return Ok(None);
        };
        if !self.effective_path_style()
            && let Some(host) = endpoint.host_str().map(str::to_owned)
        {
            endpoint
                .set_host(Some(&format!("{}.{host}", self.bucket)))
                .map_err(EndpointError::BucketHost)?;
        }
        Ok(Some(endpoint))
    }
}

/// Why an S3 datastore's endpoint cannot be worked out.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("r2 needs account_id (or an explicit endpoint)")]
    NeedsAccountId,
    #[error("{0} needs a region (or an explicit endpoint)")]
    NeedsRegion(String),
    #[error("this provider needs an explicit endpoint")]
    NeedsEndpoint,
    #[error("endpoint {url}: {source}")]
    Invalid {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("bucket host: {0}")]
    BucketHost(#[source] url::ParseError),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalDatastoreConfig {
    /// Name recorded with every blob stored here; never change it once used. Default `local`.
    pub id: String,
    /// Directory holding the blobs; created if missing. Default `data_dir/media`.
    pub path: Option<PathBuf>,
    /// Kinds of blob written here. Default all three; empty means read-only.
    pub kinds: Vec<DatastoreKind>,
    /// fsync every blob and its directory before acknowledging an upload. Default true.
    pub fsync: bool,
    /// Bytes buffered per write while streaming an upload to disk. Default 1MiB.
    pub write_chunk_size: ByteSize,
}

impl Default for LocalDatastoreConfig {
    fn default() -> Self {
        Self {
            id: "local".to_owned(),
            path: None,
            kinds: vec![
                DatastoreKind::LocalMedia,
                DatastoreKind::RemoteMedia,
                DatastoreKind::Thumbnails,
            ],
            fsync: true,
            write_chunk_size: ByteSize::mib(1),
        }
    }
}

pub(super) fn check_datastores(stores: &[DatastoreConfig], problems: &mut Vec<String>) {
    if stores.is_empty() {
        problems.push("datastores: at least one datastore is required".to_owned());
        return;
    }
    let mut ids = HashSet::new();
    for (i, store) in stores.iter().enumerate() {
        let id = store.id();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "datastores[{i}].id: {id:?} must be non-empty and use only A-Z, a-z, 0-9, '_' and '-'"
            ));
        }
        if !ids.insert(id) {
            problems.push(format!("datastores[{i}].id: {id:?} is used twice"));
        }
        match store {
            DatastoreConfig::S3(s3) => check_s3(i, s3, problems),
            DatastoreConfig::Local(local) => {
                if let Some(path) = &local.path
                    && path.exists()
                    && !path.is_dir()
                {
                    problems.push(format!(
                        "datastores[{i}].path: {} exists and is not a directory",
                        path.display()
                    ));
                }
                if local.write_chunk_size.as_u64() < 4096 {
                    problems.push(format!(
                        "datastores[{i}].write_chunk_size: must be at least 4KiB"
                    ));
                }
            }
        }
    }
    if !stores
        .iter()
        .any(|s| s.kinds().contains(&DatastoreKind::LocalMedia))
    {
        problems.push(
            "datastores: no datastore takes local_media, so uploads could not be stored".to_owned(),
        );
    }
}

fn check_s3(i: usize, s3: &S3DatastoreConfig, problems: &mut Vec<String>) {
    let at = |key: &str| format!("datastores[{i}].{key}");
    if s3.bucket.is_empty() {
        problems.push(format!("{}: must not be empty", at("bucket")));
    }
    if let Err(why) = s3.effective_endpoint() {
        problems.push(format!("{}: {why}", at("endpoint")));
    }
    let min = ByteSize::mib(5);
    if s3.part_size < min || s3.part_size > ByteSize::gib(5) {
        problems.push(format!(
            "{}: S3 parts must be between 5MiB and 5GiB",
            at("part_size")
        ));
    }
    if s3.multipart_threshold < min {
        problems.push(format!(
            "{}: must be at least 5MiB",
            at("multipart_threshold")
        ));
    }
    for (key, inline, file) in [
        (
            "access_key_id",
            s3.access_key_id.as_ref(),
            s3.access_key_id_file.as_deref(),
        ),
        (
            "secret_access_key",
            s3.secret_access_key.as_ref(),
            s3.secret_access_key_file.as_deref(),
        ),
    ] {
        if let Err(why) = Secret::resolve(inline, file) {
            problems.push(format!("{}: {why}", at(key)));
        }
    }
    if let Some(SseConfig::Customer { key, key_file }) = &s3.sse {
        match Secret::resolve(key.as_ref(), key_file.as_deref()) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("{}: sse customer needs key or key_file", at("sse"))),
            Err(why) => problems.push(format!("{}: {why}", at("sse"))),
        }
    }
    let r = &s3.redirect;
    if r.enabled && (r.url_ttl.is_zero() || r.reuse_for * 2 > r.url_ttl) {
        problems.push(format!(
            "{}: url_ttl must be non-zero and reuse_for at most half of it",
            at("redirect")
        ));
    }
    let d = &s3.direct_uploads;
    if d.enabled {
        if d.url_ttl.is_zero() || d.url_ttl > Duration::from_secs(7 * 24 * 3600) {
            problems.push(format!(
                "{}: url_ttl must be between 1s and 7 days (the longest a signed URL lives)",
                at("direct_uploads")
            ));
        }
        if matches!(s3.sse, Some(SseConfig::Customer { .. })) {
            problems.push(format!(
                "{}: clients cannot upload with a customer-provided encryption key; turn one of them off",
                at("direct_uploads")
            ));
        }
    }
    if s3.timeout.is_zero() || s3.connect_timeout.is_zero() {
        problems.push(format!("{}: timeouts must be non-zero", at("timeout")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(yaml: &str) -> S3DatastoreConfig {
        serde_norway::from_str(&format!("id: s\nbucket: media\n{yaml}")).unwrap()
    }

    fn endpoint(c: &S3DatastoreConfig) -> Option<String> {
        c.client_endpoint()
            .unwrap()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    }

    /// Provider presets fill endpoint, region and addressing as each service wants.
    #[test]
    fn provider_presets_fill_the_defaults() {
        let aws = s3("provider: aws\nregion: eu-west-1");
        assert_eq!(
            (
                endpoint(&aws),
                aws.effective_region(),
                aws.effective_path_style()
            ),
            (None, "eu-west-1".into(), false)
        );
        let r2 = s3("provider: r2\naccount_id: abc123");
        assert_eq!(
            endpoint(&r2).as_deref(),
            Some("https://abc123.r2.cloudflarestorage.com")
        );
        assert_eq!(r2.effective_region(), "auto");
        assert!(r2.effective_path_style());
        let b2 = s3("provider: b2\nregion: us-west-004");
        assert_eq!(
            endpoint(&b2).as_deref(),
            Some("https://s3.us-west-004.backblazeb2.com")
        );
        let wasabi = s3("provider: wasabi\nregion: eu-central-1");
        assert_eq!(
            endpoint(&wasabi).as_deref(),
            Some("https://s3.eu-central-1.wasabisys.com")
        );
        let spaces = s3("provider: spaces\nregion: ams3");
        assert_eq!(
            endpoint(&spaces).as_deref(),
            Some("https://ams3.digitaloceanspaces.com")
        );
        let garage = s3("provider: garage\nendpoint: http://127.0.0.1:3900");
        assert_eq!(
            (garage.effective_region(), garage.effective_path_style()),
            ("garage".into(), true)
        );
        let minio = s3("provider: minio\nendpoint: http://minio:9000");
        assert_eq!(endpoint(&minio).as_deref(), Some("http://minio:9000"));
    }

    /// Virtual-host addressing on a custom endpoint puts the bucket in the host.
    #[test]
    fn virtual_host_addressing_puts_the_bucket_in_the_host() {
        let spaces = s3("provider: spaces\nregion: ams3\npath_style: false");
        assert_eq!(
            endpoint(&spaces).as_deref(),
            Some("https://media.ams3.digitaloceanspaces.com")
        );
    }

    /// Presets that cannot work without more information say what is missing.
    #[test]
    fn incomplete_presets_are_problems() {
        let mut problems = Vec::new();
        for yaml in [
            "provider: r2",
            "provider: b2",
            "provider: minio",
            "provider: generic",
        ] {
            check_s3(0, &s3(yaml), &mut problems);
        }
        assert_eq!(problems.len(), 4, "{problems:?}");
        let mut problems = Vec::new();
        check_s3(
            0,
            &s3("provider: minio\nendpoint: http://x\npart_size: 1MiB\nmultipart_threshold: 1MiB"),
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
