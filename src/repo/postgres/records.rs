//! `MediaRecords` on PostgreSQL: reservations, commits, lookups, deletion
//! and thumbnails, each one transaction.

use async_trait::async_trait;
use sqlx::Row;

use super::{
    BLOB_COLUMNS, COMPLETE, MEDIA_COLUMNS, PENDING, PgRepo, attach_blob, blob_record, int,
    lock_user, media_record, origin_code, release_blob, uint,
};
use crate::{
    ids::{MediaKey, UnixMillis},
    media::ports::{
        Commit, CommitMode, CommitThumb, Deletion, Lookup, MediaRecord, MediaRecords, NewBlob,
        PendingRecord, Quota, RepoError, Reserve, StoredThumb, ThumbRecord, ThumbSize,
    },
};

/// The thumbnail columns a `ThumbRecord` is read from.
pub(super) const THUMB_COLUMNS: &str =
    "t.sha256, t.size, t.content_type, t.thumb_width, t.thumb_height, t.created, t.last_access";

pub(super) fn thumb_record(row: &sqlx::postgres::PgRow) -> Result<ThumbRecord, RepoError> {
    let sha: Vec<u8> = row.try_get("sha256")?;
    Ok(ThumbRecord {
        sha256: super::digest(&sha)?,
        size: uint(row.try_get("size")?),
        content_type: row.try_get("content_type")?,
        width: u32::try_from(row.try_get::<i32, _>("thumb_width")?).unwrap_or(0),
        height: u32::try_from(row.try_get::<i32, _>("thumb_height")?).unwrap_or(0),
        created: UnixMillis(uint(row.try_get("created")?)),
        last_access: row
            .try_get::<Option<i64>, _>("last_access")?
            .map(|t| UnixMillis(uint(t))),
    })
}

fn dimension(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[async_trait]
impl MediaRecords for PgRepo {
    async fn reserve(
        &self,
        key: &MediaKey,
        pending: &PendingRecord,
        max_pending: usize,
        quota: Option<&Quota>,
    ) -> Result<Reserve, RepoError> {
        let mut tx = self.pool.begin().await?;
        if let Some(quota) = quota
            && !Self::admits(&mut tx, quota, 0, true).await?
        {
            return Ok(Reserve::OverQuota);
        }
        lock_user(&mut tx, &pending.owner).await?;
        let live: Vec<i64> = sqlx::query_scalar(
            "SELECT expires FROM media WHERE owner = $1 AND state = 0 AND expires > $2",
        )
        .bind(&pending.owner)
        .bind(int(pending.created.0))
        .fetch_all(&mut *tx)
        .await?;
        if live.len() >= max_pending {
            let next_expiry = live
                .into_iter()
                .min()
                .map_or(pending.expires, |e| UnixMillis(uint(e)));
            return Ok(Reserve::TooManyPending { next_expiry });
        }
        let inserted = sqlx::query(
            "INSERT INTO media (server, media_id, state, owner, pending_created, expires)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(PENDING)
        .bind(&pending.owner)
        .bind(int(pending.created.0))
        .bind(int(pending.expires.0))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Reserve::Taken);
        }
        tx.commit().await?;
        Ok(Reserve::Done)
    }

    async fn commit(
        &self,
        key: &MediaKey,
        record: &MediaRecord,
        blob: &NewBlob,
        mode: &CommitMode,
        quota: Option<&Quota>,
    ) -> Result<Commit, RepoError> {
        // One round trip: the whole transaction runs in the database.
        let (reserved, owner, now) = match mode {
            CommitMode::Fresh => (false, None, UnixMillis::now()),
            CommitMode::Reserved { owner, now } => (true, Some(owner.as_str()), *now),
        };
        let limit = |value: Option<u64>| value.map(int);
        let windows = quota.map_or(&[][..], |q| &q.windows[..]);
        let row = sqlx::query(
            "SELECT o_outcome, o_deduplicated FROM mxmedia_commit($1, $2, $3, $4, $5, $6, $7, $8,
                $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
                $25, $26)",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(reserved)
        .bind(owner)
        .bind(int(now.0))
        .bind(&record.sha256.0[..])
        .bind(int(record.size))
        .bind(&record.content_type)
        .bind(&record.upload_name)
        .bind(&record.uploader)
        .bind(int(record.created.0))
        .bind(origin_code(record.origin))
        .bind(record.requires_auth)
        .bind(record.quarantined)
        .bind(&record.quarantined_by)
        .bind(record.protected)
        .bind(record.last_access.map(|t| int(t.0)))
        .bind(&blob.datastore.0)
        .bind(blob.key.as_str())
        .bind(key.to_string())
        .bind(quota.map(|q| q.user.as_str()))
        .bind(quota.and_then(|q| limit(q.max_files)))
        .bind(quota.and_then(|q| limit(q.max_bytes)))
        .bind(windows.iter().map(|w| int(w.since.0)).collect::<Vec<_>>())
        .bind(
            windows
                .iter()
                .map(|w| limit(w.max_files))
                .collect::<Vec<_>>(),
        )
        .bind(
            windows
                .iter()
                .map(|w| limit(w.max_bytes))
                .collect::<Vec<_>>(),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(match row.try_get::<&str, _>("o_outcome")? {
            "done" => Commit::Done {
                deduplicated: row.try_get("o_deduplicated")?,
            },
            "over_quota" => Commit::OverQuota,
            "taken" => Commit::Taken,
            "has_content" => Commit::AlreadyHasContent,
            "not_owner" => Commit::NotOwner,
            "not_reserved" => Commit::NotReserved,
            other => return Err(RepoError::Corrupt(format!("commit outcome {other:?}"))),
        })
    }

    async fn lookup(&self, key: &MediaKey) -> Result<Lookup, RepoError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT m.state, m.owner, m.pending_created, m.expires, {MEDIA_COLUMNS}, {BLOB_COLUMNS}
             FROM media m LEFT JOIN blobs b ON b.sha256 = m.sha256
             WHERE m.server = $1 AND m.media_id = $2"
        )))
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Lookup::Missing);
        };
        Ok(match row.try_get::<i16, _>("state")? {
            PENDING => Lookup::Pending(PendingRecord {
                owner: row
                    .try_get::<Option<String>, _>("owner")?
                    .unwrap_or_default(),
                created: UnixMillis(uint(
                    row.try_get::<Option<i64>, _>("pending_created")?
                        .unwrap_or(0),
                )),
                expires: UnixMillis(uint(row.try_get::<Option<i64>, _>("expires")?.unwrap_or(0))),
            }),
            COMPLETE => Lookup::Complete {
                record: media_record(&row)?,
                blob: blob_record(&row)?,
            },
            _ => Lookup::Missing,
        })
    }

    async fn delete(&self, key: &MediaKey, tombstone: bool) -> Result<Deletion, RepoError> {
        let mut tx = self.pool.begin().await?;
        let sha: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT sha256 FROM media WHERE server = $1 AND media_id = $2 AND state = 1 FOR UPDATE",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sha) = sha else {
            return Ok(Deletion::Missing);
        };
        let thumbs: Vec<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM thumbnails WHERE server = $1 AND media_id = $2 RETURNING sha256",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut released = Vec::new();
        for thumb in &thumbs {
            release_blob(&mut tx, thumb, &mut released).await?;
        }
        release_blob(&mut tx, &sha, &mut released).await?;
        let statement = if tombstone {
            "UPDATE media SET state = 2, deleted_at = $3, sha256 = NULL, size = NULL, content_type = NULL,
                upload_name = NULL, uploader = NULL, created = NULL, origin = NULL,
                requires_auth = NULL, quarantined = NULL, quarantined_by = NULL,
                protected = NULL, last_access = NULL
             WHERE server = $1 AND media_id = $2"
        } else {
            "DELETE FROM media WHERE server = $1 AND media_id = $2"
        };
        let mut query = sqlx::query(statement)
            .bind(key.server.as_str())
            .bind(key.id.as_str());
        if tombstone {
            query = query.bind(int(UnixMillis::now().0));
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Deletion::Deleted { unlinked: released })
    }

    async fn thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
    ) -> Result<Option<StoredThumb>, RepoError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {THUMB_COLUMNS}, {BLOB_COLUMNS} FROM thumbnails t
             LEFT JOIN blobs b ON b.sha256 = t.sha256
             WHERE t.server = $1 AND t.media_id = $2 AND t.width = $3 AND t.height = $4
               AND t.crop = $5 AND t.animated = $6"
        )))
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(dimension(size.width))
        .bind(dimension(size.height))
        .bind(size.crop)
        .bind(size.animated)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let blob = blob_record(&row)?
            .ok_or(RepoError::Inconsistent("thumbnail record without its blob"))?;
        Ok(Some(StoredThumb {
            record: thumb_record(&row)?,
            blob,
        }))
    }

    async fn commit_thumbnail(
        &self,
        key: &MediaKey,
        size: &ThumbSize,
        record: &ThumbRecord,
        blob: &NewBlob,
    ) -> Result<CommitThumb, RepoError> {
        let mut tx = self.pool.begin().await?;
        // Shares the media row with a deletion, which waits (or is waited for).
        let present: Option<i16> = sqlx::query_scalar(
            "SELECT state FROM media WHERE server = $1 AND media_id = $2 AND state = 1 FOR SHARE",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if present.is_none() {
            return Ok(CommitThumb::MediaGone);
        }
        let inserted = sqlx::query(
            "INSERT INTO thumbnails (server, media_id, width, height, crop, animated, sha256, size,
                content_type, thumb_width, thumb_height, created, last_access)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
        )
        .bind(key.server.as_str())
        .bind(key.id.as_str())
        .bind(dimension(size.width))
        .bind(dimension(size.height))
        .bind(size.crop)
        .bind(size.animated)
        .bind(&record.sha256.0[..])
        .bind(int(record.size))
        .bind(&record.content_type)
        .bind(dimension(record.width))
        .bind(dimension(record.height))
        .bind(int(record.created.0))
        .bind(record.last_access.map(|t| int(t.0)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            drop(tx);
            let existing = self
                .thumbnail(key, size)
                .await?
                .ok_or(RepoError::Inconsistent(
                    "a thumbnail vanished while committing",
                ))?;
            return Ok(CommitThumb::Exists(existing));
        }
        let deduplicated = attach_blob(
            &mut tx,
            &record.sha256,
            (&blob.datastore, &blob.key),
            record.size,
            record.created,
        )
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BLOB_COLUMNS} FROM blobs b WHERE b.sha256 = $1"
        )))
        .bind(&record.sha256.0[..])
        .fetch_one(&mut *tx)
        .await?;
        let stored_blob =
            blob_record(&row)?.ok_or(RepoError::Inconsistent("blob vanished in commit"))?;
        tx.commit().await?;
        Ok(CommitThumb::Done {
            deduplicated,
            stored: StoredThumb {
                record: record.clone(),
                blob: stored_blob,
            },
        })
    }
}
