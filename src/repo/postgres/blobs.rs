//! `BlobIndex` and `Housekeeping` on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{BLOB_COLUMNS, PgRepo, blob_key, blob_record, digest, int, row_key, uint};
use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        BlobIndex, BlobRecord, ClaimRecord, Counts, DatabaseIdentity, Housekeeping, Lease,
        RepoError, Unlinked,
    },
};

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn blob_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
    rows.iter()
        .map(|row| {
            let sha: Vec<u8> = row.try_get("sha256")?;
            let blob = blob_record(row)?.ok_or(RepoError::Inconsistent("blob row"))?;
            Ok((digest(&sha)?, blob))
        })
        .collect()
}

#[async_trait]
impl BlobIndex for PgRepo {
    async fn blob(&self, sha256: &Sha256Digest) -> Result<Option<BlobRecord>, RepoError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BLOB_COLUMNS} FROM blobs b WHERE b.sha256 = $1"
        )))
        .bind(&sha256.0[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(None), |row| blob_record(&row))
    }

    async fn move_blob(
        &self,
        sha256: &Sha256Digest,
        from: (&DatastoreId, &BlobKey),
        to: (&DatastoreId, &BlobKey),
    ) -> Result<bool, RepoError> {
        let moved = sqlx::query(
            "UPDATE blobs SET datastore = $4, key = $5
             WHERE sha256 = $1 AND datastore = $2 AND key = $3",
        )
        .bind(&sha256.0[..])
        .bind(&from.0.0)
        .bind(from.1.as_str())
        .bind(&to.0.0)
        .bind(to.1.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved > 0)
    }

    async fn blobs_in(
        &self,
        datastore: &DatastoreId,
        after: Option<&BlobKey>,
        n: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT b.sha256, {BLOB_COLUMNS} FROM blobs b
             WHERE b.datastore = $1 AND ($2::TEXT IS NULL OR b.key > $2)
             ORDER BY b.key LIMIT $3"
        )))
        .bind(&datastore.0)
        .bind(after.map(BlobKey::as_str))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        blob_rows(&rows)
    }

    async fn count_blobs_in(&self, datastore: &DatastoreId) -> Result<u64, RepoError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE datastore = $1")
            .bind(&datastore.0)
            .fetch_one(&self.pool)
            .await?;
        Ok(uint(n))
    }

    async fn blobs_after(
        &self,
        after: Option<&Sha256Digest>,
        n: usize,
    ) -> Result<Vec<(Sha256Digest, BlobRecord)>, RepoError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT b.sha256, {BLOB_COLUMNS} FROM blobs b
             WHERE $1::BYTEA IS NULL OR b.sha256 > $1 ORDER BY b.sha256 LIMIT $2"
        )))
        .bind(after.map(|d| d.0.to_vec()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        blob_rows(&rows)
    }

    async fn unlinked(&self, n: usize) -> Result<Vec<Unlinked>, RepoError> {
        let rows = sqlx::query("SELECT datastore, key, sha256 FROM unlinked ORDER BY seq LIMIT $1")
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let sha: Vec<u8> = row.try_get("sha256")?;
                Ok(Unlinked {
                    datastore: DatastoreId(row.try_get("datastore")?),
                    key: blob_key(row.try_get::<&str, _>("key")?)?,
                    sha256: digest(&sha)?,
                })
            })
            .collect()
    }

    async fn forget_unlinked(&self, object: &Unlinked) -> Result<(), RepoError> {
        sqlx::query("DELETE FROM unlinked WHERE datastore = $1 AND key = $2")
            .bind(&object.datastore.0)
            .bind(object.key.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unknown_keys(
        &self,
        datastore: &DatastoreId,
        keys: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError> {
        let listed: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        let unknown: Vec<String> = sqlx::query_scalar(
            "SELECT k.key FROM UNNEST($2::TEXT[]) WITH ORDINALITY AS k(key, n)
             WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.datastore = $1 AND b.key = k.key)
             ORDER BY k.n",
        )
        .bind(&datastore.0)
        .bind(&listed)
        .fetch_all(&self.pool)
        .await?;
        unknown.iter().map(|k| blob_key(k)).collect()
    }
}

#[async_trait]
impl Housekeeping for PgRepo {
    async fn expire_pending(&self, now: UnixMillis, n: usize) -> Result<Vec<MediaKey>, RepoError> {
        // Instances sweeping at once each take rows the others do not hold.
        let rows = sqlx::query(
            "DELETE FROM media WHERE (server, media_id) IN (
                SELECT server, media_id FROM media WHERE state = 0 AND expires <= $1
                ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING server, media_id",
        )
        .bind(int(now.0))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_key).collect()
    }

    async fn counts(&self) -> Result<Counts, RepoError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM media WHERE state = 1) AS media,
                    (SELECT COUNT(*) FROM media WHERE state = 0) AS pending,
                    (SELECT COUNT(*) FROM blobs) AS blobs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            media: uint(row.try_get("media")?),
            pending: uint(row.try_get("pending")?),
            blobs: uint(row.try_get("blobs")?),
        })
    }

    async fn pending_count(&self) -> Result<u64, RepoError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE state = 0")
            .fetch_one(&self.pool)
            .await?;
        Ok(uint(n))
    }

    async fn identity(&self) -> Result<DatabaseIdentity, RepoError> {
        sqlx::query("INSERT INTO identity (id, created) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(hex::encode(rand::random::<[u8; 16]>()))
            .bind(int(UnixMillis::now().0))
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT id, created FROM identity")
            .fetch_one(&self.pool)
            .await?;
        Ok(DatabaseIdentity {
            id: row.try_get("id")?,
            created: UnixMillis(uint(row.try_get("created")?)),
        })
    }

    async fn claim(&self, datastore: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError> {
        let since: Option<i64> =
            sqlx::query_scalar("SELECT since FROM claims WHERE datastore = $1")
                .bind(&datastore.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(since.map(|s| ClaimRecord {
            since: UnixMillis(uint(s)),
        }))
    }

    async fn put_claim(
        &self,
        datastore: &DatastoreId,
        claim: &ClaimRecord,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO claims (datastore, since) VALUES ($1, $2)
             ON CONFLICT (datastore) DO UPDATE SET since = $2",
        )
        .bind(&datastore.0)
        .bind(int(claim.since.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) -> Result<(), RepoError> {
        // Waits for connections in use to come back; one that does not
        // (a stuck query) must not hold the process up for ever.
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("PostgreSQL connections still in use at shutdown; closing anyway");
        }
        Ok(())
    }

    async fn commits(&self) -> Result<Option<futures::stream::BoxStream<'static, ()>>, RepoError> {
        use futures::StreamExt;
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(super::COMMITS_CHANNEL).await?;
        // The listener reconnects by itself after a lost connection; an
        // error in between wakes the waiters too (they look again), after
        // a pause so a database that is down is not hammered.
        // The feed ends when this store is closed.
        let pool = self.pool.clone();
        let stream = listener
            .into_stream()
            .take_while(move |_| std::future::ready(!pool.is_closed()))
            .then(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "listening for commits of other instances");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            });
        Ok(Some(stream.boxed()))
    }

    async fn exclusive(&self, work: &str) -> Result<Lease, RepoError> {
        // As `lease`, waiting for the lock instead of giving up.
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 4244))")
            .bind(work)
            .execute(&mut conn)
            .await?;
        Ok(Lease(Box::new(std::sync::Mutex::new(conn))))
    }

    async fn lease(&self, job: &str) -> Result<Option<Lease>, RepoError> {
        // A session lock on a connection of its own, taken off the pool:
        // dropping the lease closes the connection, which releases it, even
        // if this process dies.
        let mut conn = self.pool.acquire().await?.detach();
        let held: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 4243))")
                .bind(job)
                .fetch_one(&mut conn)
                .await?;
        Ok(held.then(|| Lease(Box::new(std::sync::Mutex::new(conn)))))
    }
}
