//! The schema, as numbered migrations applied in order, each in its own
//! transaction, under an advisory lock (instances starting together
//! migrate once). A database newer than this binary is refused.

use sqlx::{PgPool, Row};

use crate::media::ports::RepoError;

/// Migrations, in order; version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE identity (
    only_one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_one),
    id TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE claims (
    datastore TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);
CREATE TABLE blobs (
    sha256 BYTEA PRIMARY KEY,
    datastore TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    refs BIGINT NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE (datastore, key)
);
CREATE TABLE unlinked (
    seq BIGSERIAL,
    datastore TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 BYTEA NOT NULL,
    PRIMARY KEY (datastore, key)
);
CREATE TABLE media (
    server TEXT COLLATE "C" NOT NULL,
    media_id TEXT COLLATE "C" NOT NULL,
    state SMALLINT NOT NULL,
    owner TEXT,
    pending_created BIGINT,
    expires BIGINT,
    deleted_at BIGINT,
    sha256 BYTEA,
    size BIGINT,
    content_type TEXT,
    upload_name TEXT COLLATE "C",
    uploader TEXT COLLATE "C",
    created BIGINT,
    origin SMALLINT,
    requires_auth BOOLEAN,
    quarantined BOOLEAN,
    quarantined_by TEXT COLLATE "C",
    protected BOOLEAN,
    last_access BIGINT,
    PRIMARY KEY (server, media_id)
);
CREATE INDEX media_by_sha256 ON media (sha256) WHERE state = 1;
CREATE INDEX media_by_uploader ON media (uploader, created) WHERE state = 1 AND origin = 0;
CREATE INDEX media_pending_by_owner ON media (owner, expires) WHERE state = 0;
CREATE INDEX media_pending_by_expiry ON media (expires) WHERE state = 0;
CREATE TABLE thumbnails (
    server TEXT COLLATE "C" NOT NULL,
    media_id TEXT COLLATE "C" NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    crop BOOLEAN NOT NULL,
    animated BOOLEAN NOT NULL,
    sha256 BYTEA NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    thumb_width INTEGER NOT NULL,
    thumb_height INTEGER NOT NULL,
    created BIGINT NOT NULL,
    last_access BIGINT,
    PRIMARY KEY (server, media_id, width, height, crop, animated)
);
CREATE TABLE quarantined_content (
    sha256 BYTEA PRIMARY KEY,
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE quarantine_log (
    seq BIGSERIAL PRIMARY KEY,
    server TEXT NOT NULL,
    media_id TEXT NOT NULL,
    quarantined BOOLEAN NOT NULL
);
"#,
    r#"
CREATE TABLE writes (
    datastore TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    instance BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (datastore, key)
);
CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tokens FLOAT8 NOT NULL,
    at FLOAT8 NOT NULL,
    full_at FLOAT8 NOT NULL,
    granted BOOLEAN NOT NULL
);
CREATE INDEX rate_buckets_by_full_at ON rate_buckets (full_at);
"#,
];

/// The version this binary's schema is at.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
pub const LATEST: i32 = MIGRATIONS.len() as i32;

pub async fn version(pool: &PgPool) -> Result<i32, RepoError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM mxmedia_schema")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("v")?)
}

/// Brings the database to `LATEST`.
pub async fn migrate(pool: &PgPool) -> Result<(), RepoError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('mxmedia schema', 4242))")
        .execute(&mut *conn)
        .await?;
    let outcome = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS mxmedia_schema (version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let current: i32 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM mxmedia_schema")
            .fetch_one(&mut *conn)
            .await?
            .try_get("v")?;
        if current > LATEST {
            return Err(RepoError::Inconsistent(
                "the database's schema is newer than this mxmedia: upgrade mxmedia",
            ));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(*migration)).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO mxmedia_schema (version, applied) VALUES ($1, $2)")
                .bind(version)
                .bind(i64::try_from(crate::ids::UnixMillis::now().0).unwrap_or(0))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "metadata schema migrated");
        }
        Ok(())
    }
    .await;
    let unlocked =
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended('mxmedia schema', 4242))")
            .execute(&mut *conn)
            .await;
    outcome?;
    unlocked?;
    Ok(())
}
