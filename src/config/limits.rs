//! Retention, quotas and rate limits: what an admin bounds so media cannot
//! grow without end and no user or address can flood the server. All off by
//! default.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Media not served for a lifetime is deleted, bytes and all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Local media not served for this long is deleted. Off when unset.
    #[serde(with = "humantime_serde")]
    pub local: Option<Duration>,
    /// Cached copies of other servers' media not served for this long.
    #[serde(with = "humantime_serde")]
    pub remote: Option<Duration>,
    /// Thumbnails not served for this long (they are made again on request).
    #[serde(with = "humantime_serde")]
    pub thumbnails: Option<Duration>,
    /// How often retention runs in the background. Default 1h.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Records read per metadata round trip while it runs. Default 500.
    pub batch: usize,
    /// Keep users' and rooms' avatars (asks the homeserver with
    /// `homeserver.admin_token`). Default true.
    pub keep_avatars: bool,
    /// An access is recorded only when the stored one is older than this,
    /// so a download costs no write. Default 1h.
    #[serde(with = "humantime_serde")]
    pub access_granularity: Duration,
    /// How often recorded accesses are written, as one batch. Default 1m.
    #[serde(with = "humantime_serde")]
    pub access_flush_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            local: None,
            remote: None,
            thumbnails: None,
            interval: Duration::from_secs(3600),
            batch: 500,
            keep_avatars: true,
            access_granularity: Duration::from_secs(3600),
            access_flush_interval: Duration::from_secs(60),
        }
    }
}

impl RetentionConfig {
    pub fn enabled(&self) -> bool {
        self.local.is_some() || self.remote.is_some() || self.thumbnails.is_some()
    }
}

/// Upload limits of one class of users; an absent limit is no limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Total bytes of a user's local media.
    pub max_bytes: Option<ByteSize>,
    /// Total count of a user's local media (reserved async uploads count).
    pub max_files: Option<u64>,
    /// Limits over sliding windows (e.g. 1 GiB per hour).
    pub windows: Vec<Window>,
    /// Largest single upload for this class (at most `media.max_upload_size`),
    /// advertised as `m.upload.size`.
    pub max_upload_size: Option<ByteSize>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_files.is_none() && self.windows.is_empty()
    }
}

/// What a user may upload within `period` before now.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub max_files: Option<u64>,
}

/// Users matched by id pattern, with their own limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserClass {
    /// Shown in metrics and logs.
    pub name: String,
    /// Regular expressions over the whole user id (anchored), e.g.
    /// `@telegram_.*:example\.org`.
    pub users: Vec<String>,
    /// This class's quota (default: none).
    #[serde(default)]
    pub quota: Limits,
    /// Whether rate limits apply to this class. Default true.
    #[serde(default = "super::default_true")]
    pub rate_limited: bool,
}

/// Per-user upload quotas, by class; the first class whose pattern matches
/// applies, else `default`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub default: Limits,
    pub classes: Vec<UserClass>,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Request rates per user and per client address (through
/// `trusted_proxies`); a family without a rate is not limited.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub uploads: Option<Rate>,
    pub downloads: Option<Rate>,
    /// Thumbnails generated (stored ones are downloads).
    pub thumbnails: Option<Rate>,
    /// Fetches of other servers' media.
    pub remote_fetches: Option<Rate>,
    /// URL previews asked for (cached answers count too). Default: 1 per
    /// second with bursts of 10, per user and per address.
    pub previews: Option<Rate>,
    /// Buckets kept at most (least recently used go first), whatever the
    /// number of users and addresses. Default 100000.
    pub max_tracked: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            uploads: None,
            downloads: None,
            thumbnails: None,
            remote_fetches: None,
            previews: Some(Rate {
                per_second: 1.0,
                burst: 10,
            }),
            max_tracked: 100_000,
        }
    }
}

/// Problems in these sections, for `Config::problems`.
pub(super) fn check(
    retention: &RetentionConfig,
    quotas: &QuotaConfig,
    rates: &RateLimitConfig,
    has_admin_token: bool,
    problems: &mut Vec<String>,
) {
    if retention.interval.is_zero() || retention.access_flush_interval.is_zero() {
        problems.push(
            "retention.interval, retention.access_flush_interval: must be greater than zero"
                .to_owned(),
        );
    }
    if retention.batch == 0 {
        problems.push("retention.batch: must be at least 1".to_owned());
    }
    if retention.local.is_some() && retention.keep_avatars && !has_admin_token {
        problems.push(
            "retention.local: keeping avatars needs homeserver.admin_token (or admin_token_file) to ask the homeserver which media are avatars; or set retention.keep_avatars: false".to_owned(),
        );
    }
    for class in &quotas.classes {
        for pattern in &class.users {
            if let Err(error) = regex::Regex::new(&format!("^(?:{pattern})$")) {
                problems.push(format!("quotas.classes[{}].users: {error}", class.name));
            }
        }
    }
    let limits = std::iter::once(&quotas.default).chain(quotas.classes.iter().map(|c| &c.quota));
    for limit in limits {
        if limit.windows.iter().any(|w| w.period.is_zero()) {
            problems.push("quotas: a window's period must be greater than zero".to_owned());
        }
    }
    for (name, rate) in [
        ("uploads", rates.uploads),
        ("downloads", rates.downloads),
        ("thumbnails", rates.thumbnails),
        ("remote_fetches", rates.remote_fetches),
        ("previews", rates.previews),
    ] {
        if let Some(rate) = rate
            && (rate.burst == 0 || !(rate.per_second > 0.0 && rate.per_second.is_finite()))
        {
            problems.push(format!(
                "rate_limits.{name}: burst must be at least 1 and per_second a positive number"
            ));
        }
    }
    if rates.max_tracked == 0 {
        problems.push("rate_limits.max_tracked: must be at least 1".to_owned());
    }
}
