//! `mxmedia db …`: the metadata database: schema, copies, backups.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;
use mxmedia::{
    config::Config,
    media::records::BackupReport,
    ops::control::{self, ControlError},
};

use super::output::Output;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Brings the configured database's schema to this version (also done
    /// at start-up).
    Migrate,
    /// Copies one metadata database into another, with mxmedia stopped:
    /// sled to PostgreSQL or back. Verified; run it again after an
    /// interruption. Then point `database:` at the copy.
    Copy {
        /// The source: a `postgres://` URL or a sled directory.
        #[arg(long)]
        from: String,
        /// The target: a `postgres://` URL (an empty database) or a sled
        /// directory (new or empty).
        #[arg(long)]
        to: String,
    },
    /// Writes a point-in-time copy of the embedded database to the file OUT
    /// (which must not exist), while the server runs (uploads wait for the
    /// moment it takes) or not. Back up before the datastores: see
    /// docs/backup.md. PostgreSQL: use `pg_dump`.
    Backup {
        /// The backup file to write.
        out: PathBuf,
    },
    /// Restores a backup as the configured database, with the server
    /// stopped and no database in the data directory yet. Objects written
    /// before the restore are kept out of the sweeps' reach; run
    /// `mxmedia storage fsck` next.
    Restore {
        /// The backup file `mxmedia db backup` wrote.
        input: PathBuf,
    },
}

pub async fn run(command: DbCommand, config: &Path, out: Output) -> ExitCode {
    if let DbCommand::Copy { from, to } = command {
        // Names both databases itself: the config is not read.
        return copy(&from, &to, out).await;
    }
    let config = match super::load(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match command {
        DbCommand::Migrate => match mxmedia::app::migrate_database(&config).await {
            Ok(done) => {
                out.result(&serde_json::json!({ "migrated": done }), || done.clone());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mxmedia db migrate: {error}");
                ExitCode::FAILURE
            }
        },
        DbCommand::Backup { out: file } => backup(&config, file, out).await,
        DbCommand::Restore { input } => {
            match mxmedia::app::restore_database(&config, &input).await {
                Ok(report) => {
                    out.result(&report, || {
                        format!(
                            "restored {} entries: {} media, {} stored objects; objects in {} datastores written before now are kept from the sweeps. Next: mxmedia storage fsck",
                            report.entries, report.media, report.blobs, report.datastores_held
                        )
                    });
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("mxmedia db restore: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        DbCommand::Copy { .. } => ExitCode::FAILURE,
    }
}

async fn backup(config: &Config, file: PathBuf, out: Output) -> ExitCode {
    // The running server writes the file: it needs a path that means the
    // same thing to it.
    let file = std::path::absolute(&file).unwrap_or(file);
    let body = serde_json::json!({ "out": file });
    let asked = control::call::<BackupReport>(
        &config.control_socket_path(),
        "/control/db/backup",
        &body,
        |_| {},
    )
    .await;
    let outcome = match asked {
        Ok(report) => Ok(report),
        Err(ControlError::NotRunning(_)) => mxmedia::app::backup_database(config, &file)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(report) => {
            out.result(&report, || {
                format!(
                    "backed up {} entries of {} trees to {} ({} bytes); writes waited {} ms",
                    report.entries,
                    report.trees,
                    file.display(),
                    report.bytes,
                    report.writes_paused_ms
                )
            });
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mxmedia db backup: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn copy(from: &str, to: &str, out: Output) -> ExitCode {
    let opened = async {
        let source = mxmedia::app::open_database(from).await?;
        let target = mxmedia::app::open_database(to).await?;
        Ok::<_, mxmedia::app::AppError>((source, target))
    };
    let (source, target) = match opened.await {
        Ok(both) => both,
        Err(error) => {
            eprintln!("mxmedia db copy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let bar = out.spinner();
    let copied = mxmedia::media::copy_metadata(&source, &target, |r| {
        bar.set_message(format!("{} media, {} thumbnails", r.media, r.thumbnails));
    })
    .await;
    bar.finish_and_clear();
    let closed = (
        source.housekeeping.close().await,
        target.housekeeping.close().await,
    );
    match (copied, closed) {
        (Ok(report), (Ok(()), Ok(()))) => {
            // The report is the result in both forms.
            out.result(&report, || {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            });
            ExitCode::SUCCESS
        }
        (Err(error), _) => {
            eprintln!("mxmedia db copy: {error}");
            ExitCode::FAILURE
        }
        (_, (Err(error), _) | (_, Err(error))) => {
            eprintln!("mxmedia db copy: closing: {error}");
            ExitCode::FAILURE
        }
    }
}
