//! `Transfer` on PostgreSQL: what `mxmedia db copy` carries besides
//! records, blobs and thumbnails.

use async_trait::async_trait;
use sqlx::Row;

use super::{PgRepo, digest, int, row_key, uint};
use crate::{
    ids::{DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        BackupReport, ClaimRecord, DatabaseIdentity, PendingRecord, QuarantinedContent, RepoError,
        Reserved, Transfer, Unlinked,
    },
};

fn millis(row: &sqlx::postgres::PgRow, column: &str) -> Result<UnixMillis, RepoError> {
    Ok(UnixMillis(uint(
        row.try_get::<Option<i64>, _>(column)?.unwrap_or(0),
    )))
}

#[async_trait]
impl Transfer for PgRepo {
    async fn reserved_after(
        &self,
        after: Option<&MediaKey>,
        limit: usize,
    ) -> Result<Vec<(MediaKey, Reserved)>, RepoError> {
        let (server, id) = after.map_or(("", ""), |k| (k.server.as_str(), k.id.as_str()));
        let rows = sqlx::query(
            "SELECT server, media_id, state, owner, pending_created, expires, deleted_at FROM media
             WHERE state <> 1 AND (server, media_id) > ($1, $2)
             ORDER BY server, media_id LIMIT $3",
        )
        .bind(server)
        .bind(id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let key = row_key(row)?;
                let reserved = if row.try_get::<i16, _>("state")? == super::PENDING {
                    Reserved::Pending(PendingRecord {
                        owner: row
                            .try_get::<Option<String>, _>("owner")?
                            .unwrap_or_default(),
                        created: millis(row, "pending_created")?,
                        expires: millis(row, "expires")?,
                    })
                } else {
                    Reserved::Retired {
                        at: millis(row, "deleted_at")?,
                    }
                };
                Ok((key, reserved))
            })
            .collect()
    }

    async fn put_reserved(&self, key: &MediaKey, reserved: &Reserved) -> Result<bool, RepoError> {
        let query = match reserved {
            Reserved::Pending(p) => sqlx::query(
                "INSERT INTO media (server, media_id, state, owner, pending_created, expires)
                 VALUES ($1, $2, 0, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(key.server.as_str())
            .bind(key.id.as_str())
            .bind(p.owner.clone())
            .bind(int(p.created.0))
            .bind(int(p.expires.0)),
            Reserved::Retired { at } => sqlx::query(
                "INSERT INTO media (server, media_id, state, deleted_at)
                 VALUES ($1, $2, 2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(key.server.as_str())
            .bind(key.id.as_str())
            .bind(int(at.0)),
        };
        Ok(query.execute(&self.pool).await?.rows_affected() > 0)
    }

    async fn quarantined_after(
        &self,
        after: Option<&Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<(Sha256Digest, QuarantinedContent)>, RepoError> {
        let rows = sqlx::query(
            "SELECT sha256, by_user, at FROM quarantined_content
             WHERE $1::BYTEA IS NULL OR sha256 > $1 ORDER BY sha256 LIMIT $2",
        )
        .bind(after.map(|d| d.0.to_vec()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let sha: Vec<u8> = row.try_get("sha256")?;
                Ok((
                    digest(&sha)?,
                    QuarantinedContent {
                        by: row.try_get("by_user")?,
                        at: UnixMillis(uint(row.try_get("at")?)),
                    },
                ))
            })
            .collect()
    }

    async fn put_quarantined(
        &self,
        sha256: &Sha256Digest,
        content: &QuarantinedContent,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO quarantined_content (sha256, by_user, at) VALUES ($1, $2, $3)
             ON CONFLICT (sha256) DO UPDATE SET by_user = $2, at = $3",
        )
        .bind(&sha256.0[..])
        .bind(&content.by)
        .bind(int(content.at.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claims(&self) -> Result<Vec<(DatastoreId, ClaimRecord)>, RepoError> {
        let rows = sqlx::query("SELECT datastore, since FROM claims ORDER BY datastore")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    DatastoreId(row.try_get("datastore")?),
                    ClaimRecord {
                        since: UnixMillis(uint(row.try_get("since")?)),
                    },
                ))
            })
            .collect()
    }

    async fn adopt_identity(&self, identity: &DatabaseIdentity) -> Result<bool, RepoError> {
        sqlx::query("INSERT INTO identity (id, created) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&identity.id)
            .bind(int(identity.created.0))
            .execute(&self.pool)
            .await?;
        let stored: String = sqlx::query_scalar("SELECT id FROM identity")
            .fetch_one(&self.pool)
            .await?;
        Ok(stored == identity.id)
    }

    async fn put_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO unlinked (datastore, key, sha256) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&object.datastore.0)
        .bind(object.key.as_str())
        .bind(&object.sha256.0[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// PostgreSQL's own tools take consistent copies of a live database.
    async fn backup(&self, _out: &std::path::Path) -> Result<BackupReport, RepoError> {
        Err(RepoError::backend(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the metadata is in PostgreSQL: back it up with pg_dump --format=custom (docs/backup.md)",
        )))
    }
}
