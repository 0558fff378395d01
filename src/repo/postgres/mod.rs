//! The PostgreSQL adapter of the metadata ports: one database shared by
//! any number of mxmedia instances. Each port method is one transaction
//! (most are one statement); reference counts, quotas and reservations
//! hold under concurrent instances through row locks and transaction-scoped
//! advisory locks. The schema is versioned and migrated at start, under an
//! advisory lock so instances starting together migrate once.

mod blobs;
mod catalog;
mod housekeeping;
mod records;
mod schema;
mod transfer;
mod usage;

use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgPoolOptions, PgRow},
};

use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{BlobRecord, MediaRecord, Origin, RepoError, Unlinked},
};

/// The channel commits are announced on (`LISTEN`/`NOTIFY`).
const COMMITS_CHANNEL: &str = "mxmedia_commits";

/// Media row states; 2 is a deleted local id, never handed out again
/// (written and read only in SQL).
const PENDING: i16 = 0;
const COMPLETE: i16 = 1;

/// The media columns a `MediaRecord` is read from, in `media_record`'s order.
const MEDIA_COLUMNS: &str = "m.sha256, m.size, m.content_type, m.upload_name, m.uploader, m.created, m.origin, m.requires_auth, m.quarantined, m.quarantined_by, m.protected, m.last_access";
/// The blob columns a `BlobRecord` is read from, prefixed `b_`.
const BLOB_COLUMNS: &str = "b.datastore AS b_datastore, b.key AS b_key, b.size AS b_size, b.refs AS b_refs, b.created AS b_created";

/// Metadata in PostgreSQL.
#[derive(Clone)]
pub struct PgRepo {
    pool: PgPool,
    instance: std::sync::Arc<housekeeping::Instance>,
    /// Rate-bucket tokens spent, for pruning full buckets now and then.
    spent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Announced writes that ended, for deletion in batches.
    withdrawals: housekeeping::Withdrawals,
}

fn backend(error: sqlx::Error) -> RepoError {
    RepoError::backend(error)
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        backend(error)
    }
}

/// An unsigned count or size as PostgreSQL's BIGINT.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn digest(bytes: &[u8]) -> Result<Sha256Digest, RepoError> {
    bytes
        .try_into()
        .map(Sha256Digest)
        .map_err(|_| RepoError::Corrupt("a digest that is not 32 bytes".to_owned()))
}

fn key_of(server: &str, id: &str) -> Result<MediaKey, RepoError> {
    MediaKey::parse(server, id).map_err(|e| RepoError::Corrupt(format!("media key: {e}")))
}

/// The media key of a row with `server` and `media_id` columns.
fn row_key(row: &PgRow) -> Result<MediaKey, RepoError> {
    key_of(row.try_get("server")?, row.try_get("media_id")?)
}

fn blob_key(key: &str) -> Result<BlobKey, RepoError> {
    BlobKey::from_listed(key).ok_or_else(|| RepoError::Corrupt(format!("blob key {key:?}")))
}

fn origin_code(origin: Origin) -> i16 {
    match origin {
        Origin::Local => 0,
        Origin::Remote => 1,
    }
}

/// A `MediaRecord` from a row selected with `MEDIA_COLUMNS`.
fn media_record(row: &PgRow) -> Result<MediaRecord, RepoError> {
    let sha: Vec<u8> = row.try_get("sha256")?;
    Ok(MediaRecord {
        sha256: digest(&sha)?,
        size: uint(row.try_get("size")?),
        content_type: row.try_get("content_type")?,
        upload_name: row.try_get("upload_name")?,
        uploader: row.try_get("uploader")?,
        created: UnixMillis(uint(row.try_get("created")?)),
        origin: if row.try_get::<i16, _>("origin")? == 0 {
            Origin::Local
        } else {
            Origin::Remote
        },
        requires_auth: row.try_get("requires_auth")?,
        quarantined: row.try_get("quarantined")?,
        quarantined_by: row.try_get("quarantined_by")?,
        protected: row.try_get("protected")?,
        last_access: row
            .try_get::<Option<i64>, _>("last_access")?
            .map(|t| UnixMillis(uint(t))),
    })
}

/// A `BlobRecord` from a row selected with `BLOB_COLUMNS`; `None` when the
/// join found no blob.
fn blob_record(row: &PgRow) -> Result<Option<BlobRecord>, RepoError> {
    let Some(datastore) = row.try_get::<Option<String>, _>("b_datastore")? else {
        return Ok(None);
    };
    Ok(Some(BlobRecord {
        datastore: DatastoreId(datastore),
        key: blob_key(row.try_get::<&str, _>("b_key")?)?,
        size: uint(row.try_get("b_size")?),
        refs: uint(row.try_get("b_refs")?),
        created: UnixMillis(uint(row.try_get("b_created")?)),
    }))
}

/// Points one more reference at the blob of `sha256`, registering it at
/// `datastore`/`key` when it is new; true when it was stored already.
async fn attach_blob(
    tx: &mut Transaction<'_, Postgres>,
    sha256: &Sha256Digest,
    location: (&DatastoreId, &BlobKey),
    size: u64,
    created: UnixMillis,
) -> Result<bool, RepoError> {
    let row = sqlx::query(
        "INSERT INTO blobs (sha256, datastore, key, size, refs, created) VALUES ($1, $2, $3, $4, 1, $5)
         ON CONFLICT (sha256) DO UPDATE SET refs = blobs.refs + 1
         RETURNING (xmax = 0) AS inserted",
    )
    .bind(&sha256.0[..])
    .bind(&location.0.0)
    .bind(location.1.as_str())
    .bind(int(size))
    .bind(int(created.0))
    .fetch_one(&mut **tx)
    .await?;
    Ok(!row.try_get::<bool, _>("inserted")?)
}

/// Takes one reference off the blob of `sha256`; the last one removes it
/// and records its object as unlinked (pushed onto `released` too).
async fn release_blob(
    tx: &mut Transaction<'_, Postgres>,
    sha256: &[u8],
    released: &mut Vec<Unlinked>,
) -> Result<(), RepoError> {
    let row = sqlx::query(
        "UPDATE blobs SET refs = refs - 1 WHERE sha256 = $1 RETURNING refs, datastore, key",
    )
    .bind(sha256)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(RepoError::Inconsistent("a record points at a missing blob"))?;
    if row.try_get::<i64, _>("refs")? > 0 {
        return Ok(());
    }
    let object = Unlinked {
        datastore: DatastoreId(row.try_get("datastore")?),
        key: blob_key(row.try_get::<&str, _>("key")?)?,
        sha256: digest(sha256)?,
    };
    sqlx::query("DELETE FROM blobs WHERE sha256 = $1")
        .bind(sha256)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO unlinked (datastore, key, sha256) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&object.datastore.0)
    .bind(object.key.as_str())
    .bind(sha256)
    .execute(&mut **tx)
    .await?;
    released.push(object);
    Ok(())
}

/// Serialises the transactions of one user (their quota, their
/// reservations) across every instance, until the transaction ends.
async fn lock_user(tx: &mut Transaction<'_, Postgres>, user: &str) -> Result<(), RepoError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 4242))")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PgRepo {
    /// Connects to `url` with up to `max_connections`, and migrates the
    /// schema to this version.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, RepoError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(url)
            .await?;
        schema::migrate(&pool).await?;
        let instance = housekeeping::Instance::join(&pool).await?;
        let (withdrawals, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(housekeeping::withdraw_batches(pool.clone(), queue));
        Ok(Self {
            pool,
            instance,
            spent: std::sync::Arc::default(),
            withdrawals,
        })
    }

    /// Says whether the pool is closed (every connection given back).
    pub fn closed_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let pool = self.pool.clone();
        move || pool.is_closed()
    }

    /// The schema version this database is at.
    pub async fn schema_version(&self) -> Result<i32, RepoError> {
        schema::version(&self.pool).await
    }
}

#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
mod cluster;

#[cfg(test)]
mod tests;
