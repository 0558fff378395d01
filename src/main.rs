//! The `mxmedia` command: a thin layer over the library.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use mxmedia::{app, config::Config, telemetry};

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
        Command::Serve { config } => {
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
