//! The subcommands' argument types and how each prints its result.

pub mod db;
pub mod media;
pub mod output;
pub mod selfcheck;
pub mod stats;
pub mod storage;

use std::{path::Path, process::ExitCode};

use mxmedia::config::Config;

/// The config at `path`, or the exit code after saying what is wrong.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("{}: {error}", path.display());
        ExitCode::from(2)
    })
}
