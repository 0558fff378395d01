//! The `mxmedia` command: a thin layer over the library.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use mxmedia::{app, config::Config, telemetry};

mod cli;

#[derive(Parser)]
#[command(
    name = "mxmedia",
    version,
    about = "Media repository for Matrix homeservers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the media server.
    Serve {
        /// The YAML config file; MXMEDIA__* env vars override its keys.
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Load and check a config file, print every problem, and exit.
    CheckConfig {
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Run every datastore's self-test (put, head, ranged get, multipart,
    /// presign, delete) and report; safe while the server runs.
    Selfcheck {
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Moderate media: info, quarantine, protection, deletion, purges.
    /// Talks to the running server through its control socket, or does the
    /// work itself when no server runs.
    Media {
        #[command(subcommand)]
        command: cli::media::MediaCli,
    },
    /// Import media from another media repository.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Export media for another media repository.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// The metadata database: migrate its schema, copy it into another.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Move and check stored blobs. Talks to the running server through its
    /// control socket, or does the work itself when no server runs.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// From Synapse: its media store and its database (a SQLite file or a
    /// postgres:// URL, read only). Resumable: run it again after an
    /// interruption, or after Synapse received more uploads.
    Synapse(cli::media::ImportSynapseArgs),
    /// From matrix-media-repo's export: every part of one export (the
    /// gzipped tar files; one of them holds `manifest.json`). Resumable.
    Mmr(cli::media::ImportMmrArgs),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Brings the configured database's schema to this version (also done
    /// at start-up).
    Migrate {
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
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
}

#[derive(Subcommand)]
enum ExportCommand {
    /// To Synapse: every media item and thumbnail written in Synapse's file
    /// layout under `--media-store`, and the rows of Synapse's media tables to
    /// SQL (load it into Synapse's database while Synapse is stopped).
    Synapse(cli::media::ExportSynapseArgs),
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Move every blob of datastore FROM to datastore TO, online and resumably.
    Sync {
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
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
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
        /// Datastore id to adopt.
        #[arg(long)]
        datastore: String,
    },
    /// Report orphan objects and records whose bytes are missing.
    Fsck {
        #[arg(long, short, env = "MXMEDIA_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
        /// Delete old orphans and restore missing bytes from the hot cache.
        #[arg(long)]
        repair: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(loaded) => {
                // Ignore a closed stdout (`| head`): the check itself passed.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}: configuration OK", config.display());
                let _ = writeln!(out, "{loaded:#?}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{}: {error}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Selfcheck { config } => selfcheck(&config).await,
        Command::Db { command } => db(command).await,
        Command::Storage { command } => storage::run(command).await,
        Command::Media { command } => cli::media::run(command).await,
        Command::Import {
            command: ImportCommand::Synapse(args),
        } => cli::media::run(cli::media::MediaCli::ImportSynapse(args)).await,
        Command::Import {
            command: ImportCommand::Mmr(args),
        } => cli::media::run(cli::media::MediaCli::ImportMmr(args)).await,
        Command::Export {
            command: ExportCommand::Synapse(args),
        } => cli::media::run(cli::media::MediaCli::ExportSynapse(args)).await,
        Command::Serve { config } => {
            cap_malloc_arenas();
            let loaded = match Config::load(&config) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("{}: {error}", config.display());
                    return ExitCode::from(2);
                }
            };
            telemetry::init(&loaded.log);
            tracing::info!(config = ?loaded, "configuration loaded");
            match app::run(&loaded).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "mxmedia failed");
                    eprintln!("mxmedia: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per core)
/// and keeps freed memory in each, so thumbnail jobs on blocking threads
/// leave the process far above the memory it really uses, past the bound the
/// thumbnail budget documents (measured: 168 MiB of growth where at most 2
/// arenas give 104). glibc reads the setting only at start-up, so `serve`
/// runs itself again, once, with it set; an admin's own value wins.
fn cap_malloc_arenas() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("MALLOC_ARENA_MAX", arenas.to_string())
            .exec();
        eprintln!("mxmedia: cannot restart with MALLOC_ARENA_MAX set ({error}); going on without");
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("{}: {error}", path.display());
        ExitCode::from(2)
    })
}

async fn selfcheck(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let stores = match mxmedia::storage::build_datastores(&config.datastores, &config.data_dir) {
        Ok(stores) => stores,
        Err(error) => {
            eprintln!("mxmedia: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for store in stores.iter() {
        match store.selfcheck().await {
            Ok(report) => println!(
                "datastore {}: ok ({})",
                report.datastore,
                report.calls.join(", ")
            ),
            Err(error) => {
                failed = true;
                println!("{error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

mod storage {
    //! `mxmedia storage sync|fsck`: through the control socket of a running
    //! server, or in this process when none runs.

    use std::process::ExitCode;

    use indicatif::{ProgressBar, ProgressStyle};
    use mxmedia::{
        media::{FsckReport, FsckRequest, SyncProgress, SyncRequest},
        ops::control::{self, ControlError},
    };

    use super::{StorageCommand, load};

    pub async fn run(command: StorageCommand) -> ExitCode {
        match command {
            StorageCommand::Sync {
                config,
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
                match load(&config) {
                    Ok(config) => sync(&config, &request).await,
                    Err(code) => code,
                }
            }
            StorageCommand::Fsck { config, repair } => match load(&config) {
                Ok(config) => fsck(&config, &FsckRequest { repair }).await,
                Err(code) => code,
            },
            StorageCommand::Adopt { config, datastore } => match load(&config) {
                Ok(config) => adopt(&config, &datastore).await,
                Err(code) => code,
            },
        }
    }

    async fn adopt(config: &mxmedia::config::Config, datastore: &str) -> ExitCode {
        let id = mxmedia::ids::DatastoreId(datastore.to_owned());
        let outcome = match mxmedia::app::build_state(config).await {
            Ok(state) => state
                .media
                .adopt_datastore(&id, &mxmedia::app::database_label(config))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                println!(
                    "datastore {datastore} now belongs to {}; objects already in it will never be swept",
                    mxmedia::app::database_label(config)
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mxmedia storage adopt: {error}");
                ExitCode::FAILURE
            }
        }
    }

    fn bar() -> ProgressBar {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} blobs, {msg} [{elapsed_precise}]")
        {
            bar.set_style(style);
        }
        bar
    }

    fn show(bar: &ProgressBar, p: &SyncProgress) {
        bar.set_length(p.total.max(p.done));
        bar.set_position(p.done);
        bar.set_message(format!("{} moved, {} failed", p.moved, p.failed));
    }

    async fn sync(config: &mxmedia::config::Config, request: &SyncRequest) -> ExitCode {
        let bar = bar();
        let body = serde_json::to_value(request).unwrap_or_default();
        let asked = control::call(
            &config.control_socket_path(),
            "/control/storage/sync",
            &body,
            |p| {
                if let Ok(p) = serde_json::from_value(p) {
                    show(&bar, &p);
                }
            },
        )
        .await;
        let outcome: Result<SyncProgress, String> = match asked {
            Ok(report) => Ok(report),
            Err(ControlError::NotRunning(_)) => match mxmedia::app::build_state(config).await {
                Ok(state) => state
                    .media
                    .sync(request, |p| {
                        show(&bar, p);
                        true
                    })
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        bar.finish_and_clear();
        match outcome {
            Ok(report) => {
                println!(
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
                    println!("  {error}");
                }
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

    async fn fsck(config: &mxmedia::config::Config, request: &FsckRequest) -> ExitCode {
        let body = serde_json::to_value(request).unwrap_or_default();
        let asked = control::call(
            &config.control_socket_path(),
            "/control/storage/fsck",
            &body,
            |_| {},
        )
        .await;
        let outcome: Result<FsckReport, String> = match asked {
            Ok(report) => Ok(report),
            Err(ControlError::NotRunning(_)) => match mxmedia::app::build_state(config).await {
                Ok(state) => state.media.fsck(request).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(report) => {
                println!(
                    "fsck: {} records checked, {} orphan objects ({} deleted), {} records with missing bytes ({} restored from the cache)",
                    report.records_checked,
                    report.orphans.len(),
                    report.orphans_deleted,
                    report.missing.len(),
                    report.restored_from_cache
                );
                for orphan in &report.orphans {
                    println!("  orphan {orphan}");
                }
                for missing in &report.missing {
                    println!("  missing {missing}");
                }
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
}

async fn db(command: DbCommand) -> ExitCode {
    match command {
        DbCommand::Migrate { config } => {
            let loaded = match Config::load(&config) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("{}: {error}", config.display());
                    return ExitCode::from(2);
                }
            };
            match mxmedia::app::migrate_database(&loaded).await {
                Ok(done) => {
                    println!("{done}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("mxmedia db migrate: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        DbCommand::Copy { from, to } => {
            let opened = async {
                let source = mxmedia::app::open_database(&from).await?;
                let target = mxmedia::app::open_database(&to).await?;
                Ok::<_, mxmedia::app::AppError>((source, target))
            };
            let (source, target) = match opened.await {
                Ok(both) => both,
                Err(error) => {
                    eprintln!("mxmedia db copy: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let bar = indicatif::ProgressBar::new_spinner();
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
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
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
    }
}
