//! `mxmedia db backup` and `mxmedia db restore`: a point-in-time copy of
//! the embedded database in one file, and that file restored into an empty
//! data directory. A running server takes the backup itself (through the
//! control socket: the database admits one process); restores run with the
//! server stopped. PostgreSQL is backed up with its own tools.

use std::{path::Path, sync::Arc};

use crate::{
    app::{AppError, open_metadata},
    config::{Config, DatabaseConfig},
    ids::UnixMillis,
    media::records::{BackupReport, ClaimRecord, RestoreReport},
    repo::sled::SledRepo,
};

/// Backs the configured database up to `out` in this process (no server
/// runs).
pub async fn backup(config: &Config, out: &Path) -> Result<BackupReport, AppError> {
    let (metadata, _) = open_metadata(config).await?;
    let taken = metadata.transfer.backup(out).await;
    metadata.housekeeping.close().await?;
    Ok(taken?)
}

/// Restores `backup` as the configured (embedded) database, which must not
/// exist yet. The datastores keep every object written before the restore
/// out of the sweeps' reach: uploads made after the backup have no record
/// in it, and only `storage fsck` names them.
pub async fn restore(config: &Config, backup: &Path) -> Result<RestoreReport, AppError> {
    if !matches!(config.database, DatabaseConfig::Sled { .. }) {
        return Err(AppError::Refused(
            "the configured database is PostgreSQL: restore it with pg_restore, or restore the backup into a sled directory and move it with `mxmedia db copy` (docs/backup.md)".to_owned(),
        ));
    }
    let (backup, dir) = (Arc::new(backup.to_owned()), config.sled_path());
    let mut report = tokio::task::spawn_blocking(move || SledRepo::restore(&backup, &dir))
        .await
        .map_err(|e| AppError::Refused(e.to_string()))??;
    let (metadata, _) = open_metadata(config).await?;
    let held = async {
        let now = UnixMillis::now();
        for (datastore, _) in metadata.transfer.claims().await? {
            let claim = ClaimRecord { since: now };
            metadata.housekeeping.put_claim(&datastore, &claim).await?;
            report.datastores_held += 1;
        }
        let counts = metadata.housekeeping.counts().await?;
        (report.media, report.blobs) = (counts.media, counts.blobs);
        Ok::<_, AppError>(())
    }
    .await;
    metadata.housekeeping.close().await?;
    held?;
    Ok(report)
}
