//! Upload quotas by class of user: total bytes and files, and bytes and
//! files per sliding window. The core checks a declared size before a byte
//! is read and caps a body of unknown size at the room left while it
//! streams; the metadata store enforces the quota atomically with the
//! commit (and with an async upload's reservation), so concurrent uploads
//! never overshoot it.

use regex::Regex;
use ruma::UserId;
use serde::Serialize;

use super::{
    MediaError, MediaService,
    ports::{Quota, QuotaWindow, UserUsage},
};
use crate::{
    config::{Limits, QuotaConfig},
    ids::UnixMillis,
};

/// The class a user belongs to: the first configured class whose pattern
/// matches, else `default`.
pub(super) struct QuotaPolicy {
    classes: Vec<(String, Regex, Limits, bool)>,
    default: Limits,
    /// `media.max_upload_size`: no class goes above it.
    max_upload: u64,
}

/// A user's class as quotas and rate limits see it.
#[derive(Clone, Copy, Debug)]
pub struct UserClass<'a> {
    pub name: &'a str,
    pub limits: &'a Limits,
    pub rate_limited: bool,
}

/// What `GET /media/usage` (MSC4034) reports, and the class's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageView {
    pub files: u64,
    pub bytes: u64,
    pub max_files: Option<u64>,
    pub max_bytes: Option<u64>,
}

impl QuotaPolicy {
    pub(super) fn new(config: &QuotaConfig, max_upload: u64) -> Self {
        let classes = config
            .classes
            .iter()
            .filter_map(|class| {
                let pattern = format!("^(?:{})$", class.users.join("|"));
                // Patterns are checked when the config loads.
                Regex::new(&pattern).ok().map(|regex| {
                    (
                        class.name.clone(),
                        regex,
                        class.quota.clone(),
                        class.rate_limited,
                    )
                })
            })
            .collect();
        Self {
            classes,
            default: config.default.clone(),
            max_upload,
        }
    }

    pub(super) fn class_of(&self, user: &str) -> UserClass<'_> {
        self.classes
            .iter()
            .find(|(_, regex, _, _)| regex.is_match(user))
            .map_or(
                UserClass {
                    name: "default",
                    limits: &self.default,
                    rate_limited: true,
                },
                |(name, _, limits, rate_limited)| UserClass {
                    name,
                    limits,
                    rate_limited: *rate_limited,
                },
            )
    }
}

impl MediaService {
    /// `user`'s class (for quotas, rate limits and metrics).
    pub fn user_class(&self, user: &UserId) -> UserClass<'_> {
        self.inner.quotas.class_of(user.as_str())
    }

    /// The largest single upload `user` may make (`m.upload.size`).
    pub fn upload_limit(&self, user: Option<&UserId>) -> u64 {
        let policy = &self.inner.quotas;
        user.and_then(|u| policy.class_of(u.as_str()).limits.max_upload_size)
            .map_or(policy.max_upload, |size| {
                size.as_u64().min(policy.max_upload)
            })
    }

    /// The quota the store enforces for `user` now; `None` when their
    /// class has none.
    pub(super) fn quota_for(&self, user: &UserId) -> Option<Quota> {
        let limits = self.user_class(user).limits;
        if limits.is_unlimited() {
            return None;
        }
        let now = UnixMillis::now();
        Some(Quota {
            user: user.to_string(),
            max_bytes: limits.max_bytes.map(|b| b.as_u64()),
            max_files: limits.max_files,
            windows: limits
                .windows
                .iter()
                .map(|w| QuotaWindow {
                    since: UnixMillis(
                        now.0.saturating_sub(
                            u64::try_from(w.period.as_millis()).unwrap_or(u64::MAX),
                        ),
                    ),
                    max_bytes: w.max_bytes.map(|b| b.as_u64()),
                    max_files: w.max_files,
                })
                .collect(),
        })
    }

    async fn usage_under(&self, quota: &Quota) -> Result<UserUsage, MediaError> {
        let since: Vec<UnixMillis> = quota.windows.iter().map(|w| w.since).collect();
        Ok(self
            .inner
            .meta
            .catalog
            .usage_of(&quota.user, &since)
            .await?)
    }

    /// Before a byte is read: refuses an upload the quota has no room for
    /// (by its declared size when there is one), and says how many bytes a
    /// body may bring at most. `reserved` uploads already hold their file.
    pub(super) async fn quota_room(
        &self,
        quota: &Quota,
        declared: Option<u64>,
        reserved: bool,
    ) -> Result<u64, MediaError> {
        let usage = self.usage_under(quota).await?;
        if !quota.admits(&usage, declared.unwrap_or(0), !reserved) {
            return Err(self.over_quota(&quota.user));
        }
        let mut room = quota
            .max_bytes
            .map_or(u64::MAX, |max| max.saturating_sub(usage.bytes));
        for (window, (_, bytes)) in quota.windows.iter().zip(&usage.windows) {
            if let Some(max) = window.max_bytes {
                room = room.min(max.saturating_sub(*bytes));
            }
        }
        Ok(room)
    }

    /// The refusal for `user`'s upload, counted by their class.
    pub(super) fn over_quota(&self, user: &str) -> MediaError {
        let class = self.inner.quotas.class_of(user).name;
        self.inner.metrics.quota_refused(class);
        tracing::info!(class, "upload refused by quota");
        MediaError::QuotaExceeded
    }

    /// What `user` has stored against their quota (MSC4034's usage).
    pub async fn usage_of(&self, user: &UserId) -> Result<UsageView, MediaError> {
        let usage = self.inner.meta.catalog.usage_of(user.as_str(), &[]).await?;
        let limits = self.user_class(user).limits;
        Ok(UsageView {
            files: usage.files,
            bytes: usage.bytes,
            max_files: limits.max_files,
            max_bytes: limits.max_bytes.map(|b| b.as_u64()),
        })
    }
}
