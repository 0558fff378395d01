//! `BlobIndex` and `Housekeeping` on PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{BLOB_COLUMNS, PgRepo, blob_key, blob_record, digest, uint};
use crate::{
    ids::{BlobKey, DatastoreId, Sha256Digest},
    media::ports::{BlobIndex, BlobRecord, RepoError, Unlinked},
};

pub(super) fn limit(n: usize) -> i64 {
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
               AND NOT EXISTS (SELECT 1 FROM writes w WHERE w.datastore = $1 AND w.key = k.key)
             ORDER BY k.n",
        )
        .bind(&datastore.0)
        .bind(&listed)
        .fetch_all(&self.pool)
        .await?;
        unknown.iter().map(|k| blob_key(k)).collect()
    }
}
