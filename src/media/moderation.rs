//! Quarantine and protection: one decision per content, enforced by the
//! download and thumbnail paths through the record's flag. Quarantining
//! media quarantines every copy of its bytes, now and later uploads;
//! protected media is exempt. Also the admin's listings: a user's uploads,
//! usage per user, and the quarantine change log.

use std::collections::HashMap;

use futures::StreamExt;
use ruma::{RoomId, UserId};

use super::{
    MediaError, MediaService,
    ports::{MediaPage, MediaPageQuery, QuarantineChange, QuarantineEvent},
};
use crate::{auth::Credentials, ids::MediaKey, ids::UnixMillis};

/// Keys quarantined per metadata call when a user's or room's media is.
const CHUNK: usize = 1000;
/// Display names asked of the homeserver at once.
const NAME_LOOKUPS: usize = 8;

/// What `usage` lists (Synapse's user media statistics parameters).
#[derive(Clone, Debug, Default)]
pub struct UsageQuery {
    pub from_ts: Option<UnixMillis>,
    pub until_ts: Option<UnixMillis>,
    /// Keeps users whose id or display name contains it.
    pub search_term: Option<String>,
    /// `user_id`, `displayname`, `media_length` or `media_count`.
    pub order_by: String,
    pub backwards: bool,
    pub from: u64,
    pub limit: u64,
}

/// One user's line in the usage listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserUsage {
    pub user_id: String,
    pub displayname: Option<String>,
    pub media_count: u64,
    pub media_length: u64,
}

/// A page of usage and how many users there are in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    pub users: Vec<UserUsage>,
    pub total: u64,
}

impl MediaService {
    fn audit(&self, actor: &str, action: &'static str, what: &str, items: u64) {
        self.inner.metrics.moderation(action, items > 0);
        tracing::info!(target: "mxmedia::audit", admin = actor, action, what, items, "moderation");
    }

    async fn apply(&self, keys: &[MediaKey], change: &QuarantineChange) -> Result<u64, MediaError> {
        let mut changed = 0;
        for chunk in keys.chunks(CHUNK) {
            changed += self.inner.meta.catalog.quarantine(chunk, change).await?;
        }
        Ok(changed)
    }

    /// Quarantines `key` and every copy of its bytes (unless protected),
    /// and later uploads of them, on behalf of `actor`; how many items
    /// were newly quarantined.
    pub async fn quarantine(&self, key: &MediaKey, actor: &str) -> Result<u64, MediaError> {
        let what = key.to_string();
        self.quarantine_all(std::slice::from_ref(key), actor, "quarantine", &what)
            .await
    }

    /// Releases `key` and every copy of its bytes from quarantine.
    pub async fn unquarantine(&self, key: &MediaKey, actor: &str) -> Result<u64, MediaError> {
        let changed = self
            .apply(std::slice::from_ref(key), &QuarantineChange::Release)
            .await?;
        self.audit(actor, "unquarantine", key.to_string().as_str(), changed);
        Ok(changed)
    }

    /// Quarantines everything `user` uploaded here (protected media
    /// excepted), with every copy of those bytes.
    pub async fn quarantine_user(&self, user: &UserId, actor: &str) -> Result<u64, MediaError> {
        let keys = self.all_uploads(user).await?;
        self.quarantine_all(&keys, actor, "quarantine_user", user.as_str())
            .await
    }

    /// Quarantines `keys` on behalf of `actor`, audited as `action` on `what`.
    async fn quarantine_all(
        &self,
        keys: &[MediaKey],
        actor: &str,
        action: &'static str,
        what: &str,
    ) -> Result<u64, MediaError> {
        let by = QuarantineChange::Quarantine {
            by: actor.to_owned(),
        };
        let changed = self.apply(keys, &by).await?;
        self.audit(actor, action, what, changed);
        Ok(changed)
    }

    /// Quarantines the media `room`'s events reference, local and remote,
    /// as the homeserver lists them to the acting admin.
    pub async fn quarantine_room(
        &self,
        room: &RoomId,
        acting: &Credentials,
        actor: &str,
    ) -> Result<u64, MediaError> {
        let keys = self.inner.homeserver.room_media(room, acting).await?;
        self.quarantine_all(&keys, actor, "quarantine_room", room.as_str())
            .await
    }

    /// Protects (or unprotects) media from quarantine and retention; false
    /// when there is no such media.
    pub async fn set_protected(
        &self,
        key: &MediaKey,
        protected: bool,
        actor: &str,
    ) -> Result<bool, MediaError> {
        let found = self
            .inner
            .meta
            .catalog
            .set_protected(key, protected)
            .await?;
        let action = if protected { "protect" } else { "unprotect" };
        self.audit(actor, action, key.to_string().as_str(), u64::from(found));
        Ok(found)
    }

    /// Quarantines (or releases) one item and its copies as the server
    /// itself (for tests and tools); whether anything changed.
    pub async fn set_quarantined(
        &self,
        key: &MediaKey,
        quarantined: bool,
    ) -> Result<bool, MediaError> {
        let actor = format!("@mxmedia:{}", self.inner.server_name);
        let changed = if quarantined {
            self.quarantine(key, &actor).await?
        } else {
            self.unquarantine(key, &actor).await?
        };
        Ok(changed > 0)
    }

    /// Every key `user` uploaded, oldest first.
    async fn all_uploads(&self, user: &UserId) -> Result<Vec<MediaKey>, MediaError> {
        let mut keys = Vec::new();
        loop {
            let query = MediaPageQuery {
                order: super::ports::MediaOrder::CreatedTs,
                backwards: false,
                from: keys.len() as u64,
                limit: CHUNK as u64,
            };
            let page = self
                .inner
                .meta
                .catalog
                .uploads(user.as_str(), &query)
                .await?;
            let full = page.media.len() == CHUNK;
            keys.extend(page.media.into_iter().map(|(key, _)| key));
            if !full {
                return Ok(keys);
            }
        }
    }

    /// One page of what `user` uploaded here.
    pub async fn uploads(
        &self,
        user: &UserId,
        query: &MediaPageQuery,
    ) -> Result<MediaPage, MediaError> {
        Ok(self
            .inner
            .meta
            .catalog
            .uploads(user.as_str(), query)
            .await?)
    }

    /// Quarantine log entries after position `after` (at most `limit`),
    /// and the log's last position.
    pub async fn quarantine_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<QuarantineEvent>, u64), MediaError> {
        let head = self.inner.meta.catalog.quarantine_log_head().await?;
        if after > head {
            return Err(MediaError::Invalid(
                "the `from` token is past the end of the quarantine log".to_owned(),
            ));
        }
        let changes = self.inner.meta.catalog.quarantine_log(after, limit).await?;
        Ok((changes, head))
    }

    /// Local media per uploader, with display names from the homeserver,
    /// filtered, ordered and paged as Synapse's statistics API does.
    pub async fn usage(
        &self,
        query: &UsageQuery,
        acting: &Credentials,
    ) -> Result<UsageReport, MediaError> {
        let usage = self
            .inner
            .meta
            .catalog
            .usage(query.from_ts, query.until_ts)
            .await?;
        let mut users: Vec<UserUsage> = usage
            .into_iter()
            .map(|u| UserUsage {
                user_id: u.user,
                displayname: None,
                media_count: u.count,
                media_length: u.bytes,
            })
            .collect();
        // Names are needed for every user only to order or search by them;
        // otherwise for the page alone.
        let by_name = query.order_by == "displayname" || query.search_term.is_some();
        if by_name {
            self.name_users(&mut users, acting).await?;
            if let Some(term) = &query.search_term {
                users.retain(|u| {
                    u.user_id.contains(term.as_str())
                        || u.displayname
                            .as_deref()
                            .is_some_and(|n| n.contains(term.as_str()))
                });
            }
        }
        users.sort_by(|a, b| {
            let primary = match query.order_by.as_str() {
                "displayname" => a.displayname.cmp(&b.displayname),
                "media_length" => a.media_length.cmp(&b.media_length),
                "media_count" => a.media_count.cmp(&b.media_count),
                _ => std::cmp::Ordering::Equal,
            };
            let primary = if query.backwards {
                primary.reverse()
            } else {
                primary
            };
            let by_id = a.user_id.cmp(&b.user_id);
            primary.then(if query.backwards && query.order_by == "user_id" {
                by_id.reverse()
            } else {
                by_id
            })
        });
        let total = users.len() as u64;
        let skip = usize::try_from(query.from).unwrap_or(usize::MAX);
        let take = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let mut page: Vec<UserUsage> = users.into_iter().skip(skip).take(take).collect();
        if !by_name {
            self.name_users(&mut page, acting).await?;
        }
        Ok(UsageReport { users: page, total })
    }

    /// Fills in display names, a few homeserver requests at a time.
    async fn name_users(
        &self,
        users: &mut [UserUsage],
        acting: &Credentials,
    ) -> Result<(), MediaError> {
        let homeserver = &self.inner.homeserver;
        let ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
        let names: HashMap<String, Option<String>> = futures::stream::iter(ids)
            .map(|id: String| async move {
                let name = match UserId::parse(id.as_str()) {
                    Ok(user) => homeserver.display_name(&user, acting).await?,
                    Err(_) => None,
                };
                Ok::<_, MediaError>((id, name))
            })
            .buffer_unordered(NAME_LOOKUPS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        for user in users {
            user.displayname = names.get(&user.user_id).cloned().flatten();
        }
        Ok(())
    }
}
