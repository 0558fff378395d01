//! `mxmedia storage sync|fsck|adopt`: through the control socket of a
//! running server, or in this process when none runs.

use std::{fmt::Write as _, process::ExitCode};

use clap::Subcommand;
use indicatif::ProgressBar;
use mxmedia::{
    config::Config,
    media::{FsckProgress, FsckReport, FsckRequest, SyncProgress, SyncRequest},
};

use super::output::Output;

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Move every blob of datastore FROM to datastore TO, online and resumably.
    Sync {
        /// Datastore id to move blobs out of.
        #[arg(long)]
        from: String,
        /// Datastore id to move blobs into.
        #[arg(long)]
        to: String,
        /// Delete each blob from FROM once it is moved.
        #[arg(long)]
        delete_source: bool,
        /// Read each copy back and check its SHA-256 before switching to it.
        #[arg(long)]
        verify: bool,
    },
    /// Tie datastore ID to this config's metadata database on purpose (it
    /// belongs to another database, or holds objects this one never wrote).
    /// Objects already in it are never deleted by this database's sweeps.
    /// Run it with the server stopped.
    Adopt {
        /// Datastore id to adopt.
        #[arg(long)]
        datastore: String,
    },
    /// Report orphan objects and records whose bytes are missing, with
    /// progress (objects listed, records and bytes checked, ETA).
    Fsck {
        /// Delete old orphans and restore missing bytes from the hot cache.
        #[arg(long)]
        repair: bool,
    },
}

pub async fn run(command: StorageCommand, config: &Config, out: Output) -> ExitCode {
    match command {
        StorageCommand::Sync {
            from,
            to,
            delete_source,
            verify,
        } => {
            let request = SyncRequest {
                from,
                to,
                delete_source,
                verify,
            };
            sync(config, &request, out).await
        }
        StorageCommand::Fsck { repair } => fsck(config, &FsckRequest { repair }, out).await,
        StorageCommand::Adopt { datastore } => adopt(config, &datastore, out).await,
    }
}

async fn adopt(config: &Config, datastore: &str, out: Output) -> ExitCode {
    let id = mxmedia::ids::DatastoreId(datastore.to_owned());
    let database = mxmedia::app::database_label(config);
    let outcome = match mxmedia::app::build_state(config).await {
        Ok(state) => state
            .media
            .adopt_datastore(&id, &database)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => {
            out.result(
                &serde_json::json!({ "datastore": datastore, "database": database }),
                || {
                    format!(
                        "datastore {datastore} now belongs to {database}; objects already in it will never be swept"
                    )
                },
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mxmedia storage adopt: {error}");
            ExitCode::FAILURE
        }
    }
}

fn show_sync(bar: &ProgressBar, p: &SyncProgress) {
    bar.set_length(p.total.max(p.done));
    bar.set_position(p.done);
    bar.set_message(format!("{} moved, {} failed", p.moved, p.failed));
}

async fn sync(config: &Config, request: &SyncRequest, out: Output) -> ExitCode {
    let bar = out.bar("{bar:40} {pos}/{len} blobs, {msg} [{elapsed_precise}, ETA {eta}]");
    let body = serde_json::to_value(request).unwrap_or_default();
    let shown = &bar;
    let outcome: Result<SyncProgress, String> = super::ask_or_run(
        config,
        "/control/storage/sync",
        &body,
        |p| show_sync(shown, &p),
        |state| async move {
            state
                .media
                .sync(request, |p| {
                    show_sync(shown, p);
                    true
                })
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            out.result(&report, || {
                let mut text = format!(
                    "sync {} -> {}: {} of {} blobs moved ({} bytes), {} skipped (changed meanwhile), {} failed, {} source objects deleted",
                    request.from,
                    request.to,
                    report.moved,
                    report.total,
                    report.bytes,
                    report.skipped,
                    report.failed,
                    report.deleted_sources
                );
                for error in &report.errors {
                    let _ = write!(text, "\n  {error}");
                }
                text
            });
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("mxmedia storage sync: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Draws fsck's progress: objects listed first, then records checked
/// against the total, with their bytes.
fn show_fsck(bar: &ProgressBar, p: &FsckProgress) {
    bar.set_length(p.total.max(p.records_checked));
    bar.set_position(p.records_checked);
    bar.set_message(format!(
        "{} objects listed, {} checked, {} orphans, {} missing",
        p.objects_listed,
        bytesize::ByteSize(p.bytes_checked),
        p.orphans,
        p.missing
    ));
}

async fn fsck(config: &Config, request: &FsckRequest, out: Output) -> ExitCode {
    let bar = out.bar("{bar:40} {pos}/{len} records, {msg} [{elapsed_precise}, ETA {eta}]");
    let body = serde_json::to_value(request).unwrap_or_default();
    let shown = &bar;
    let outcome: Result<FsckReport, String> = super::ask_or_run(
        config,
        "/control/storage/fsck",
        &body,
        |p| show_fsck(shown, &p),
        |state| async move {
            state
                .media
                .fsck_with_progress(request, |r| {
                    show_fsck(shown, &r.progress());
                    true
                })
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            out.result(&report, || {
                let mut text = format!(
                    "fsck: {} records checked ({} bytes), {} objects listed, {} orphan objects ({} deleted), {} records with missing bytes ({} restored from the cache)",
                    report.records_checked,
                    report.bytes_checked,
                    report.objects_listed,
                    report.orphans.len(),
                    report.orphans_deleted,
                    report.missing.len(),
                    report.restored_from_cache
                );
                for orphan in &report.orphans {
                    let _ = write!(text, "\n  orphan {orphan}");
                }
                for missing in &report.missing {
                    let _ = write!(text, "\n  missing {missing}");
                }
                text
            });
            let unrepaired = report.missing.len() as u64 > report.restored_from_cache;
            if unrepaired {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("mxmedia storage fsck: {error}");
            ExitCode::FAILURE
        }
    }
}
