//! A user's usage and quota inside a transaction, shared by reservations,
//! commits and the usage report.

use sqlx::{Postgres, Row, Transaction};

use super::{PgRepo, int, lock_user, uint};
use crate::{
    ids::UnixMillis,
    media::ports::{Quota, RepoError, UserUsage},
};

impl PgRepo {
    /// Within `tx`: what the user has stored, reserved and committed in each
    /// quota window.
    pub(super) async fn usage_in(
        tx: &mut Transaction<'_, Postgres>,
        user: &str,
        since: &[UnixMillis],
    ) -> Result<UserUsage, RepoError> {
        let totals = sqlx::query(
            "SELECT
                (SELECT COUNT(*) FROM media WHERE uploader = $1 AND state = 1 AND origin = 0) AS files,
                (SELECT COALESCE(SUM(size), 0)::BIGINT FROM media WHERE uploader = $1 AND state = 1 AND origin = 0) AS bytes,
                (SELECT COUNT(*) FROM media WHERE owner = $1 AND state = 0 AND expires > $2) AS pending",
        )
        .bind(user)
        .bind(int(UnixMillis::now().0))
        .fetch_one(&mut **tx)
        .await?;
        let mut windows = Vec::with_capacity(since.len());
        for start in since {
            let row = sqlx::query(
                "SELECT COUNT(*) AS files, COALESCE(SUM(size), 0)::BIGINT AS bytes FROM media
                 WHERE uploader = $1 AND state = 1 AND origin = 0 AND created >= $2",
            )
            .bind(user)
            .bind(int(start.0))
            .fetch_one(&mut **tx)
            .await?;
            windows.push((uint(row.try_get("files")?), uint(row.try_get("bytes")?)));
        }
        Ok(UserUsage {
            files: uint(totals.try_get("files")?),
            bytes: uint(totals.try_get("bytes")?),
            pending: uint(totals.try_get("pending")?),
            windows,
        })
    }

    pub(super) async fn admits(
        tx: &mut Transaction<'_, Postgres>,
        quota: &Quota,
        size: u64,
        new_file: bool,
    ) -> Result<bool, RepoError> {
        lock_user(tx, &quota.user).await?;
        let since: Vec<UnixMillis> = quota.windows.iter().map(|w| w.since).collect();
        let usage = Self::usage_in(tx, &quota.user, &since).await?;
        Ok(quota.admits(&usage, size, new_file))
    }
}
