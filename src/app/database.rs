//! The metadata database `config` names: opened behind the core's ports,
//! migrated, backed up and restored, and databases named on the command
//! line (`mxmedia db copy`).

use std::sync::Arc;

use super::{AppError, database_label};
use crate::{
    config::{Config, DatabaseConfig, Secret},
    media::ports::Metadata,
    repo::{postgres::PgRepo, sled::SledRepo},
};

/// Says whether the metadata store is closed (every handle dropped).
pub(super) type ClosedProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// The metadata adapter `config` names, behind the core's ports.
pub(super) async fn open_metadata(config: &Config) -> Result<(Metadata, ClosedProbe), AppError> {
    match &config.database {
        DatabaseConfig::Sled { cache_capacity, .. } => {
            let repo = SledRepo::open(&config.sled_path(), cache_capacity.as_u64())?;
            let probe = Box::new(repo.closed_probe());
            Ok((Metadata::new(Arc::new(repo)), probe))
        }
        DatabaseConfig::Postgres {
            url,
            url_file,
            max_connections,
        } => {
            let url = Secret::resolve(url.as_ref(), url_file.as_deref())?
                .ok_or(AppError::NoDatabaseUrl)?;
            let repo = PgRepo::open(url.expose(), *max_connections).await?;
            let probe = Box::new(repo.closed_probe());
            Ok((Metadata::new(Arc::new(repo)), probe))
        }
    }
}

/// A metadata database named on the command line: a `postgres://` URL
/// (migrated to this version), or a sled directory.
pub async fn open_database(spec: &str) -> Result<Metadata, AppError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        Ok(Metadata::new(Arc::new(PgRepo::open(spec, 4).await?)))
    } else {
        let repo = SledRepo::open(std::path::Path::new(spec), 64 << 20)?;
        Ok(Metadata::new(Arc::new(repo)))
    }
}

/// Opens the configured database (migrating PostgreSQL to this version);
/// its description.
pub async fn migrate_database(config: &Config) -> Result<String, AppError> {
    let (metadata, _) = open_metadata(config).await?;
    let identity = metadata.housekeeping.identity().await?;
    metadata.housekeeping.close().await?;
    Ok(format!(
        "{} (database {}) is at this version's schema",
        database_label(config),
        identity.id
    ))
}

/// Backs the configured database up to the file `out` in this process (no
/// server runs; a running one takes backups itself through its control
/// socket). PostgreSQL answers that `pg_dump` does this.
pub async fn backup_database(
    config: &Config,
    out: &std::path::Path,
) -> Result<crate::media::records::BackupReport, AppError> {
    let (metadata, _) = open_metadata(config).await?;
    let taken = metadata.transfer.backup(out).await;
    metadata.housekeeping.close().await?;
    Ok(taken?)
}

/// Restores `backup` as the configured (embedded) database, which must not
/// exist yet. Every datastore then keeps the objects written before the
/// restore out of the sweeps' reach: uploads made after the backup have no
/// record in it, and only `storage fsck` names them.
pub async fn restore_database(
    config: &Config,
    backup: &std::path::Path,
) -> Result<crate::media::records::RestoreReport, AppError> {
    if !matches!(config.database, DatabaseConfig::Sled { .. }) {
        return Err(AppError::Refused(
            "the configured database is PostgreSQL: restore it with pg_restore, or restore the backup into a sled directory and move it with `mxmedia db copy` (docs/backup.md)".to_owned(),
        ));
    }
    let (backup, dir) = (backup.to_owned(), config.sled_path());
    let mut report = tokio::task::spawn_blocking(move || SledRepo::restore(&backup, &dir))
        .await
        .map_err(|e| AppError::Refused(e.to_string()))??;
    let (metadata, _) = open_metadata(config).await?;
    let held = async {
        let now = crate::ids::UnixMillis::now();
        for (datastore, _) in metadata.transfer.claims().await? {
            let claim = crate::media::records::ClaimRecord { since: now };
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
