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
