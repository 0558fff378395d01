//! `Housekeeping` on PostgreSQL: sweeps, ownership, health, and what the
//! instances sharing the database coordinate through it (leases, single
//! flight, announced writes, rate buckets, commit notifications).

use std::{sync::atomic::Ordering, time::Duration};

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool, Row};

use super::{PgRepo, blob_key, blobs::limit, int, row_key, uint};
use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, UnixMillis},
    media::ports::{ClaimRecord, Counts, DatabaseIdentity, Housekeeping, Lease, RepoError, Token},
};

#[async_trait]
impl Housekeeping for PgRepo {
    async fn expire_pending(&self, now: UnixMillis, n: usize) -> Result<Vec<MediaKey>, RepoError> {
        // Only constants go into the statement.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM writes WHERE instance NOT IN ({LIVE_INSTANCES})"
        )))
        .execute(&self.pool)
        .await?;
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
        self.instance.leave().await;
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

    async fn writing(&self, datastore: &DatastoreId, key: &BlobKey) -> Result<Lease, RepoError> {
        sqlx::query(
            "INSERT INTO writes (datastore, key, instance, since) VALUES ($1, $2, $3, $4)
             ON CONFLICT (datastore, key) DO UPDATE SET instance = $3, since = $4",
        )
        .bind(&datastore.0)
        .bind(key.as_str())
        .bind(self.instance.id)
        .bind(int(UnixMillis::now().0))
        .execute(&self.pool)
        .await?;
        Ok(Lease(Box::new(Announced {
            withdrawals: self.withdrawals.clone(),
            datastore: datastore.0.clone(),
            key: key.as_str().to_owned(),
        })))
    }

    async fn being_written(
        &self,
        datastore: &DatastoreId,
        keys: Vec<BlobKey>,
    ) -> Result<Vec<BlobKey>, RepoError> {
        let listed: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        let busy: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM writes WHERE datastore = $1 AND key = ANY($2::TEXT[])",
        )
        .bind(&datastore.0)
        .bind(&listed)
        .fetch_all(&self.pool)
        .await?;
        busy.iter().map(|k| blob_key(k)).collect()
    }

    async fn spend_token(&self, bucket: &str, rate: (f64, u32)) -> Result<Token, RepoError> {
        self.spend(bucket, rate).await
    }
}

/// Live instances: the ids whose session lock is held (see [`Instance`]).
const LIVE_INSTANCES: &str = "SELECT objid::BIGINT FROM pg_locks
    WHERE locktype = 'advisory' AND classid = 4245 AND objsubid = 2 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// This process among the instances sharing the database: an id whose
/// session advisory lock it holds on a connection of its own for as long
/// as it runs. When the process dies, the connection closes and the lock
/// goes with it, so the others know its announced writes are over. A lost
/// connection (the database restarted) is replaced within seconds.
pub(super) struct Instance {
    pub(super) id: i64,
    connection: tokio::sync::Mutex<Option<PgConnection>>,
}

/// How often an instance checks that it still holds its lock.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

impl Instance {
    pub(super) async fn join(pool: &PgPool) -> Result<std::sync::Arc<Self>, RepoError> {
        loop {
            let id = i64::from(rand::random::<u32>() >> 1);
            if let Some(connection) = Self::lock(pool, id).await? {
                let instance = std::sync::Arc::new(Self {
                    id,
                    connection: tokio::sync::Mutex::new(Some(connection)),
                });
                tokio::spawn(Self::keep_alive(
                    std::sync::Arc::downgrade(&instance),
                    pool.clone(),
                ));
                return Ok(instance);
            }
        }
    }

    /// A connection holding the lock on `id`, or `None` if another holds it.
    async fn lock(pool: &PgPool, id: i64) -> Result<Option<PgConnection>, RepoError> {
        let mut connection = pool.acquire().await?.detach();
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(4245, $1::INTEGER)")
            .bind(id)
            .fetch_one(&mut connection)
            .await?;
        Ok(held.then_some(connection))
    }

    /// Until the instance leaves: re-takes the lock on a new connection when
    /// the one holding it was lost.
    async fn keep_alive(instance: std::sync::Weak<Self>, pool: PgPool) {
        loop {
            tokio::time::sleep(KEEP_ALIVE).await;
            let Some(instance) = instance.upgrade() else {
                return;
            };
            let mut held = instance.connection.lock().await;
            let Some(connection) = held.as_mut() else {
                return;
            };
            if sqlx::query("SELECT 1")
                .execute(&mut *connection)
                .await
                .is_ok()
            {
                continue;
            }
            match Self::lock(&pool, instance.id).await {
                Ok(Some(connection)) => {
                    tracing::info!("rejoined the instances sharing the database");
                    *held = Some(connection);
                }
                Ok(None) => {
                    tracing::warn!(id = instance.id, "another instance took this instance's id");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot rejoin the instances sharing the database");
                }
            }
        }
    }

    async fn leave(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            drop(sqlx::Connection::close(connection).await);
        }
    }
}

/// A write announced by [`Housekeeping::writing`]; withdrawn when dropped.
struct Announced {
    withdrawals: Withdrawals,
    datastore: String,
    key: String,
}

impl Drop for Announced {
    fn drop(&mut self) {
        let entry = (
            std::mem::take(&mut self.datastore),
            std::mem::take(&mut self.key),
        );
        // Gone only when the store closed: forgotten then by the others
        // (`expire_pending`), as this instance's lock went with it.
        drop(self.withdrawals.send(entry));
    }
}

/// Withdrawn announcements, deleted in batches: whatever queued up while
/// the last delete ran goes in the next one, so concurrent uploads do not
/// each pay a statement of their own.
pub(super) type Withdrawals = tokio::sync::mpsc::UnboundedSender<(String, String)>;

/// Deletes withdrawn announcements until every sender is gone.
pub(super) async fn withdraw_batches(
    pool: PgPool,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    const MOST: usize = 512;
    let mut batch = Vec::with_capacity(MOST);
    while queue.recv_many(&mut batch, MOST).await > 0 {
        let (stores, keys): (Vec<String>, Vec<String>) = batch.drain(..).unzip();
        let done = sqlx::query(
            "DELETE FROM writes w USING UNNEST($1::TEXT[], $2::TEXT[]) AS g(datastore, key)
             WHERE w.datastore = g.datastore AND w.key = g.key",
        )
        .bind(&stores)
        .bind(&keys)
        .execute(&pool)
        .await;
        if let Err(error) = done {
            // Forgotten when this instance stops (`expire_pending`).
            tracing::warn!(%error, count = keys.len(), "could not withdraw write announcements");
        }
    }
}

impl PgRepo {
    /// One statement: refills the bucket by the time passed on the
    /// database's clock (the same for every instance), then takes a token
    /// if there is one. Rows of full buckets are the same as no row, and
    /// are pruned now and then so the table holds only buckets in use.
    async fn spend(
        &self,
        bucket: &str,
        (per_second, burst): (f64, u32),
    ) -> Result<Token, RepoError> {
        const REFILLED: &str = "LEAST($3, b.tokens + GREATEST(0, EXCLUDED.at - b.at) * $2)";
        // Only constants go into the statement.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rate_buckets AS b (bucket, tokens, at, full_at, granted)
             SELECT $1, $3 - 1, t, t + 1 / $2, TRUE
             FROM (SELECT EXTRACT(EPOCH FROM clock_timestamp())::FLOAT8 AS t) AS now
             ON CONFLICT (bucket) DO UPDATE SET
                granted = {REFILLED} >= 1,
                tokens = {REFILLED} - CASE WHEN {REFILLED} >= 1 THEN 1 ELSE 0 END,
                full_at = EXCLUDED.at + ($3 - {REFILLED} + CASE WHEN {REFILLED} >= 1 THEN 1 ELSE 0 END) / $2,
                at = EXCLUDED.at
             RETURNING granted, tokens"
        )))
        .bind(bucket)
        .bind(per_second)
        .bind(f64::from(burst))
        .fetch_one(&self.pool)
        .await?;
        if self
            .spent
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY)
        {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let pruned = sqlx::query(
                    "DELETE FROM rate_buckets WHERE full_at < EXTRACT(EPOCH FROM clock_timestamp())",
                )
                .execute(&pool)
                .await;
                if let Err(error) = pruned {
                    tracing::warn!(%error, "could not prune full rate buckets");
                }
            });
        }
        if row.try_get("granted")? {
            return Ok(Token::Granted);
        }
        let tokens: f64 = row.try_get("tokens")?;
        Ok(Token::Wait(Duration::from_secs_f64(
            ((1.0 - tokens) / per_second).max(0.0),
        )))
    }
}

/// Buckets spent between two prunings of full buckets.
const PRUNE_EVERY: u64 = 1024;
