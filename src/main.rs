//! The `mxmedia` command: a thin layer over the library.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use mxmedia::{app, config::Config, telemetry};

mod cli;

use cli::{db::DbCommand, output::Output, storage::StorageCommand};

#[derive(Parser)]
#[command(
    name = "mxmedia",
    version,
    about = "Media repository for Matrix homeservers"
)]
struct Cli {
    /// The YAML config file; MXMEDIA__* env vars override its keys.
    #[arg(
        long,
        short,
        global = true,
        env = "MXMEDIA_CONFIG",
        default_value = "config.yaml"
    )]
    config: PathBuf,
    /// Print the result as one JSON document, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the media server.
    Serve,
    /// Load and check the config, print every problem, or the effective
    /// configuration (defaults and MXMEDIA__* overrides applied) as YAML
    /// with secrets redacted.
    CheckConfig,
    /// Run every datastore's self-test (put, head, ranged get, multipart,
    /// presign, delete) and report; safe while the server runs. With
    /// `--public-url`: check the deployment from outside, through the
    /// reverse proxy, one line per check with the fix for each failure.
    Selfcheck(cli::selfcheck::SelfcheckArgs),
    /// What is stored, by kind and by datastore, and the hot cache's size
    /// and hit rate (the running server's, when one runs).
    Stats,
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
    /// The metadata database: migrate its schema, copy it, back it up and
    /// restore it.
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
    /// Print a completion script for SHELL, e.g. for bash:
    /// `mxmedia completions bash > /etc/bash_completion.d/mxmedia`.
    Completions { shell: clap_complete::Shell },
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
enum ExportCommand {
    /// To Synapse: every media item and thumbnail written in Synapse's file
    /// layout under `--media-store`, and the rows of Synapse's media tables to
    /// SQL (load it into Synapse's database while Synapse is stopped).
    Synapse(cli::media::ExportSynapseArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let config = || cli::load(&cli.config);
    match cli.command {
        Command::CheckConfig => check_config(&cli.config, out),
        Command::Selfcheck(args) if args.public_url.is_some() => {
            cli::selfcheck::public(args, out).await
        }
        Command::Selfcheck(_) => match config() {
            Ok(config) => selfcheck(&config, out).await,
            Err(code) => code,
        },
        Command::Stats => match config() {
            Ok(config) => cli::stats::run(&config, out).await,
            Err(code) => code,
        },
        Command::Db { command } => cli::db::run(command, &cli.config, out).await,
        Command::Storage { command } => match config() {
            Ok(config) => cli::storage::run(command, &config, out).await,
            Err(code) => code,
        },
        Command::Media { command } => cli::media::run(command, config(), out).await,
        Command::Import {
            command: ImportCommand::Synapse(args),
        } => cli::media::run(cli::media::MediaCli::ImportSynapse(args), config(), out).await,
        Command::Import {
            command: ImportCommand::Mmr(args),
        } => cli::media::run(cli::media::MediaCli::ImportMmr(args), config(), out).await,
        Command::Export {
            command: ExportCommand::Synapse(args),
        } => cli::media::run(cli::media::MediaCli::ExportSynapse(args), config(), out).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mxmedia", &mut script);
            // A closed stdout (`| head`) is not the command's failure.
            let _ = std::io::stdout().lock().write_all(&script);
            ExitCode::SUCCESS
        }
        Command::Serve => {
            cap_malloc_arenas();
            let loaded = match config() {
                Ok(loaded) => loaded,
                Err(code) => return code,
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

/// Every problem of the config, or the configuration in effect.
fn check_config(path: &std::path::Path, out: Output) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            // Ignore a closed stdout (`| head`): the check itself passed.
            let mut stdout = std::io::stdout().lock();
            if out.json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&loaded).unwrap_or_default()
                );
            } else {
                let _ = writeln!(stdout, "# {}: configuration OK", path.display());
                let _ = write!(
                    stdout,
                    "{}",
                    serde_norway::to_string(&loaded).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            ExitCode::from(2)
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

async fn selfcheck(config: &Config, out: Output) -> ExitCode {
    let stores = match mxmedia::storage::build_datastores(&config.datastores, &config.data_dir) {
        Ok(stores) => stores,
        Err(error) => {
            eprintln!("mxmedia: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut results = Vec::new();
    for store in stores.iter() {
        results.push(match store.selfcheck().await {
            Ok(report) => serde_json::json!({
                "datastore": report.datastore,
                "ok": true,
                "calls": report.calls,
            }),
            Err(error) => serde_json::json!({
                "datastore": store.id().0,
                "ok": false,
                "error": error.to_string(),
            }),
        });
    }
    let failed = results.iter().any(|r| r["ok"] == false);
    out.result(&results, || {
        results
            .iter()
            .map(|r| match r["error"].as_str() {
                Some(error) => error.to_owned(),
                None => format!(
                    "datastore {}: ok ({})",
                    r["datastore"].as_str().unwrap_or_default(),
                    r["calls"]
                        .as_array()
                        .map(|calls| calls
                            .iter()
                            .filter_map(serde_json::Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
