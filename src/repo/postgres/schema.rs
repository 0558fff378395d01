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
    COMMIT_FUNCTION,
];

/// Commits uploaded content in one round trip (`MediaRecords::commit`): the
/// quota (under the user's transaction lock), the id's state (under its row
/// lock), quarantine by content, the media row, the blob's reference and
/// the notification to other instances, as one transaction. The outcome
/// names the `Commit` variant.
const COMMIT_FUNCTION: &str = r"
CREATE FUNCTION mxmedia_commit(
    p_server TEXT, p_id TEXT, p_reserved BOOLEAN, p_owner TEXT, p_now BIGINT,
    p_sha256 BYTEA, p_size BIGINT, p_content_type TEXT, p_upload_name TEXT, p_uploader TEXT,
    p_created BIGINT, p_origin SMALLINT, p_requires_auth BOOLEAN, p_quarantined BOOLEAN,
    p_quarantined_by TEXT, p_protected BOOLEAN, p_last_access BIGINT,
    p_datastore TEXT, p_key TEXT, p_notice TEXT,
    p_quota_user TEXT, p_max_files BIGINT, p_max_bytes BIGINT,
    p_since BIGINT[], p_window_files BIGINT[], p_window_bytes BIGINT[],
    OUT o_outcome TEXT, OUT o_deduplicated BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    v_state SMALLINT;
    v_owner TEXT;
    v_expires BIGINT;
    v_files BIGINT;
    v_bytes BIGINT;
    v_pending BIGINT;
    v_by TEXT;
    v_inserted BOOLEAN;
BEGIN
    o_deduplicated := FALSE;
    IF p_quota_user IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_quota_user, 4242));
        SELECT COUNT(*), COALESCE(SUM(m.size), 0) INTO v_files, v_bytes FROM media m
            WHERE m.uploader = p_quota_user AND m.state = 1 AND m.origin = 0;
        SELECT COUNT(*) INTO v_pending FROM media m
            WHERE m.owner = p_quota_user AND m.state = 0
              AND m.expires > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
        IF (p_max_files IS NOT NULL
                AND v_files + v_pending + (CASE WHEN p_reserved THEN 0 ELSE 1 END) > p_max_files)
            OR (p_max_bytes IS NOT NULL AND v_bytes + p_size > p_max_bytes) THEN
            o_outcome := 'over_quota';
            RETURN;
        END IF;
        FOR i IN 1 .. COALESCE(array_length(p_since, 1), 0) LOOP
            SELECT COUNT(*), COALESCE(SUM(m.size), 0) INTO v_files, v_bytes FROM media m
                WHERE m.uploader = p_quota_user AND m.state = 1 AND m.origin = 0
                  AND m.created >= p_since[i];
            IF (p_window_files[i] IS NOT NULL AND v_files + 1 > p_window_files[i])
                OR (p_window_bytes[i] IS NOT NULL AND v_bytes + p_size > p_window_bytes[i]) THEN
                o_outcome := 'over_quota';
                RETURN;
            END IF;
        END LOOP;
    END IF;

    SELECT m.state, m.owner, m.expires INTO v_state, v_owner, v_expires FROM media m
        WHERE m.server = p_server AND m.media_id = p_id FOR UPDATE;
    IF NOT p_reserved THEN
        IF FOUND THEN
            o_outcome := 'taken';
            RETURN;
        END IF;
    ELSIF NOT FOUND OR v_state = 2 THEN
        o_outcome := 'not_reserved';
        RETURN;
    ELSIF v_state = 1 THEN
        o_outcome := 'has_content';
        RETURN;
    ELSIF v_expires IS NULL OR v_expires <= p_now THEN
        o_outcome := 'not_reserved';
        RETURN;
    ELSIF v_owner IS DISTINCT FROM p_owner THEN
        o_outcome := 'not_owner';
        RETURN;
    END IF;

    -- Content quarantined as such arrives quarantined.
    SELECT q.by_user INTO v_by FROM quarantined_content q WHERE q.sha256 = p_sha256;
    IF FOUND THEN
        p_quarantined := TRUE;
        p_quarantined_by := v_by;
        INSERT INTO quarantine_log (server, media_id, quarantined) VALUES (p_server, p_id, TRUE);
    END IF;
    INSERT INTO media AS m (server, media_id, state, sha256, size, content_type, upload_name,
            uploader, created, origin, requires_auth, quarantined, quarantined_by, protected,
            last_access)
        VALUES (p_server, p_id, 1, p_sha256, p_size, p_content_type, p_upload_name, p_uploader,
            p_created, p_origin, p_requires_auth, p_quarantined, p_quarantined_by, p_protected,
            p_last_access)
        ON CONFLICT (server, media_id) DO UPDATE SET state = 1, owner = NULL,
            pending_created = NULL, expires = NULL, sha256 = EXCLUDED.sha256,
            size = EXCLUDED.size, content_type = EXCLUDED.content_type,
            upload_name = EXCLUDED.upload_name, uploader = EXCLUDED.uploader,
            created = EXCLUDED.created, origin = EXCLUDED.origin,
            requires_auth = EXCLUDED.requires_auth, quarantined = EXCLUDED.quarantined,
            quarantined_by = EXCLUDED.quarantined_by, protected = EXCLUDED.protected,
            last_access = EXCLUDED.last_access;
    INSERT INTO blobs AS b (sha256, datastore, key, size, refs, created)
        VALUES (p_sha256, p_datastore, p_key, p_size, 1, p_created)
        ON CONFLICT (sha256) DO UPDATE SET refs = b.refs + 1
        RETURNING (b.xmax = 0) INTO v_inserted;
    o_deduplicated := NOT v_inserted;
    -- Heard by every instance once the transaction commits.
    PERFORM pg_notify('mxmedia_commits', p_notice);
    o_outcome := 'done';
END;
$$;
";

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
