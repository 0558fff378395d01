//! `Catalog` on PostgreSQL: quarantine over identical content, protection,
//! listings, usage, access times and thumbnail housekeeping.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::Row;

use super::{
    MEDIA_COLUMNS, PgRepo, int, media_record,
    records::{THUMB_COLUMNS, thumb_record},
    release_blob, row_key, uint,
};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::{
        catalog::TopK,
        ports::{
            Accesses, Catalog, MediaPage, MediaPageQuery, MediaRecord, QuarantineChange,
            QuarantineEvent, QuarantinedContent, RepoError, ThumbRecord, ThumbSize, Unlinked,
            Usage, UserUsage,
        },
    },
};

fn size_of(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[async_trait]
impl Catalog for PgRepo {
    async fn quarantine(
        &self,
        targets: &[MediaKey],
        change: &QuarantineChange,
    ) -> Result<u64, RepoError> {
        let quarantining = matches!(change, QuarantineChange::Quarantine { .. });
        let mut digests = BTreeSet::new();
        for key in targets {
            let row = sqlx::query(
                "SELECT sha256, protected FROM media WHERE server = $1 AND media_id = $2 AND state = 1",
            )
            .bind(key.server.as_str())
            .bind(key.id.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row
                && !(quarantining && row.try_get::<bool, _>("protected")?)
            {
                digests.insert(row.try_get::<Vec<u8>, _>("sha256")?);
            }
        }
        let mut changed = 0;
        for sha in &digests {
            let mut tx = self.pool.begin().await?;
            let updated = match change {
                QuarantineChange::Quarantine { by } => {
                    sqlx::query(
                        "INSERT INTO quarantined_content (sha256, by_user, at) VALUES ($1, $2, $3)
                         ON CONFLICT (sha256) DO UPDATE SET by_user = $2, at = $3",
                    )
                    .bind(sha)
                    .bind(by)
                    .bind(int(UnixMillis::now().0))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "WITH changed AS (
                            UPDATE media SET quarantined = TRUE, quarantined_by = $2
                            WHERE sha256 = $1 AND state = 1 AND NOT protected AND NOT quarantined
                            RETURNING server, media_id)
                         INSERT INTO quarantine_log (server, media_id, quarantined)
                         SELECT server, media_id, TRUE FROM changed ORDER BY server, media_id",
                    )
                    .bind(sha)
                    .bind(by)
                    .execute(&mut *tx)
                    .await?
                }
                QuarantineChange::Release => {
                    sqlx::query("DELETE FROM quarantined_content WHERE sha256 = $1")
                        .bind(sha)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "WITH changed AS (
                            UPDATE media SET quarantined = FALSE, quarantined_by = NULL
                            WHERE sha256 = $1 AND state = 1 AND quarantined
                            RETURNING server, media_id)
                         INSERT INTO quarantine_log (server, media_id, quarantined)
                         SELECT server, media_id, FALSE FROM changed ORDER BY server, media_id",
                    )
                    .bind(sha)
                    .execute(&mut *tx)
                    .await?
                }
            };
            changed += updated.rows_affected();
            tx.commit().await?;
        }
        Ok(changed)
    }

    async fn quarantined_content(
        &self,
        sha256: &Sha256Digest,
    ) -> Result<Option<QuarantinedContent>, RepoError> {
        let row = sqlx::query("SELECT by_user, at FROM quarantined_content WHERE sha256 = $1")
            .bind(&sha256.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(QuarantinedContent {
                by: row.try_get("by_user")?,
                at: UnixMillis(uint(row.try_get("at")?)),
            })
        })
        .transpose()
    }

    async fn set_protected(&self, key: &MediaKey, protected: bool) -> Result<bool, RepoError> {
        let updated = sqlx::query(
            "UPDATE media SET protected = $3 WHERE server = $1 AND media_id = $2 AND state = 1",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(protected)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    async fn uploads(&self, user: &str, query: &MediaPageQuery) -> Result<MediaPage, RepoError> {
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM media WHERE uploader = $1 AND state = 1 AND origin = 0",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        let keep = usize::try_from(query.from.saturating_add(query.limit)).unwrap_or(usize::MAX);
        let (order, backwards) = (query.order, query.backwards);
        let mut top = TopK::new(keep, move |a: &(MediaKey, MediaRecord), b: &_| {
            order.compare(backwards, a, b)
        });
        let sql = format!(
            "SELECT m.server, m.media_id, {MEDIA_COLUMNS} FROM media m
             WHERE m.uploader = $1 AND m.state = 1 AND m.origin = 0"
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let key = row_key(&row)?;
            top.push((key, media_record(&row)?));
        }
        let skip = usize::try_from(query.from).unwrap_or(usize::MAX);
        Ok(MediaPage {
            media: top.finish().into_iter().skip(skip).collect(),
            total: uint(total),
        })
    }

    async fn media_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, MediaRecord)>, RepoError> {
        let (server, id) = after.map_or(("", ""), |k| (k.server.as_str(), k.id.as_str()));
        let sql = format!(
            "SELECT m.server, m.media_id, {MEDIA_COLUMNS} FROM media m
             WHERE m.state = 1 AND (m.server, m.media_id) > ($1, $2)
             ORDER BY m.server, m.media_id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(server)
            .bind(id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let key = row_key(row)?;
                Ok((key, media_record(row)?))
            })
            .collect()
    }

    async fn usage(
        &self,
        from: Option<UnixMillis>,
        until: Option<UnixMillis>,
    ) -> Result<Vec<Usage>, RepoError> {
        let rows = sqlx::query(
            "SELECT uploader, COUNT(*) AS count, COALESCE(SUM(size), 0)::BIGINT AS bytes FROM media
             WHERE state = 1 AND origin = 0 AND uploader IS NOT NULL
               AND ($1::BIGINT IS NULL OR created >= $1) AND ($2::BIGINT IS NULL OR created < $2)
             GROUP BY uploader ORDER BY uploader",
        )
        .bind(from.map(|t| int(t.0)))
        .bind(until.map(|t| int(t.0)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Usage {
                    user: row.try_get("uploader")?,
                    count: uint(row.try_get("count")?),
                    bytes: uint(row.try_get("bytes")?),
                })
            })
            .collect()
    }

    async fn quarantine_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<QuarantineEvent>, RepoError> {
        let rows = sqlx::query(
            "SELECT seq, server, media_id, quarantined FROM quarantine_log
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(int(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QuarantineEvent {
                    seq: uint(row.try_get("seq")?),
                    key: row_key(row)?,
                    quarantined: row.try_get("quarantined")?,
                })
            })
            .collect()
    }

    async fn quarantine_log_head(&self) -> Result<u64, RepoError> {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM quarantine_log")
                .fetch_one(&self.pool)
                .await?;
        Ok(uint(head))
    }

    async fn usage_of(&self, user: &str, since: &[UnixMillis]) -> Result<UserUsage, RepoError> {
        let mut tx = self.pool.begin().await?;
        let usage = Self::usage_in(&mut tx, user, since).await?;
        tx.commit().await?;
        Ok(usage)
    }

    async fn touch(&self, accesses: &Accesses) -> Result<(), RepoError> {
        let mut media: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (key, at) in &accesses.media {
            let slot = media
                .entry((key.server.to_string(), key.id.to_string()))
                .or_default();
            *slot = (*slot).max(int(at.0));
        }
        if !media.is_empty() {
            let (keys, times): (Vec<_>, Vec<_>) = media.into_iter().unzip();
            let (servers, ids): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
            sqlx::query(
                "UPDATE media m SET last_access = v.at
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS v(server, media_id, at)
                 WHERE m.server = v.server AND m.media_id = v.media_id AND m.state = 1
                   AND (m.last_access IS NULL OR m.last_access < v.at)",
            )
            .bind(&servers)
            .bind(&ids)
            .bind(&times)
            .execute(&self.pool)
            .await?;
        }
        let mut thumbs: BTreeMap<(String, String, i32, i32, bool, bool), i64> = BTreeMap::new();
        for (key, size, at) in &accesses.thumbnails {
            let slot = thumbs
                .entry((
                    key.server.to_string(),
                    key.id.to_string(),
                    i32::try_from(size.width).unwrap_or(i32::MAX),
                    i32::try_from(size.height).unwrap_or(i32::MAX),
                    size.crop,
                    size.animated,
                ))
                .or_default();
            *slot = (*slot).max(int(at.0));
        }
        if !thumbs.is_empty() {
            let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            for ((server, id, w, h, crop, animated), at) in thumbs {
                columns.0.push(server);
                columns.1.push(id);
                columns.2.push(w);
                columns.3.push(h);
                columns.4.push(crop);
                columns.5.push(animated);
                columns.6.push(at);
            }
            sqlx::query(
                "UPDATE thumbnails t SET last_access = v.at
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::INT[], $4::INT[], $5::BOOL[], $6::BOOL[], $7::BIGINT[])
                    AS v(server, media_id, width, height, crop, animated, at)
                 WHERE t.server = v.server AND t.media_id = v.media_id AND t.width = v.width
                   AND t.height = v.height AND t.crop = v.crop AND t.animated = v.animated
                   AND (t.last_access IS NULL OR t.last_access < v.at)",
            )
            .bind(&columns.0)
            .bind(&columns.1)
            .bind(&columns.2)
            .bind(&columns.3)
            .bind(&columns.4)
            .bind(&columns.5)
            .bind(&columns.6)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn thumbnails_after(
        &self,
        after: Option<&(MediaKey, ThumbSize)>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, ThumbSize, ThumbRecord)>, RepoError> {
        let sql = format!(
            "SELECT t.server, t.media_id, t.width, t.height, t.crop, t.animated, {THUMB_COLUMNS}
             FROM thumbnails t
             WHERE $1::TEXT IS NULL
                OR (t.server, t.media_id, t.width, t.height, t.crop, t.animated) > ($1, $2, $3, $4, $5, $6)
             ORDER BY t.server, t.media_id, t.width, t.height, t.crop, t.animated LIMIT $7"
        );
        let (key, size) = after.map_or((None, None), |(k, s)| (Some(k), Some(s)));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.map(|k| k.server.as_str()))
            .bind(key.map_or("", |k| k.id.as_str()))
            .bind(size.map_or(0, |s| i32::try_from(s.width).unwrap_or(i32::MAX)))
            .bind(size.map_or(0, |s| i32::try_from(s.height).unwrap_or(i32::MAX)))
            .bind(size.is_some_and(|s| s.crop))
            .bind(size.is_some_and(|s| s.animated))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let key = row_key(row)?;
                let size = ThumbSize {
                    width: size_of(row.try_get("width")?),
                    height: size_of(row.try_get("height")?),
                    crop: row.try_get("crop")?,
                    animated: row.try_get("animated")?,
                };
                Ok((key, size, thumb_record(row)?))
            })
            .collect()
    }

    async fn delete_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<Vec<Unlinked>>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let sha: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM thumbnails WHERE server = $1 AND media_id = $2 AND width = $3
               AND height = $4 AND crop = $5 AND animated = $6 RETURNING sha256",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(i32::try_from(size.width).unwrap_or(i32::MAX))
        .bind(i32::try_from(size.height).unwrap_or(i32::MAX))
        .bind(size.crop)
        .bind(size.animated)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sha) = sha else {
            return Ok(None);
        };
        let mut released = Vec::new();
        release_blob(&mut tx, &sha, &mut released).await?;
        tx.commit().await?;
        Ok(Some(released))
    }
}
