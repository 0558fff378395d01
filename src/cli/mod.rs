//! The subcommands' argument types and how each prints its result.

pub mod db;
pub mod media;
pub mod output;
pub mod selfcheck;
pub mod stats;
pub mod storage;

use std::{future::Future, path::Path, process::ExitCode};

use mxmedia::{
    config::Config,
    http::AppState,
    ops::control::{self, ControlError},
};
use serde::de::DeserializeOwned;

/// Asks the running server (the control socket's `path` with `body`; its
/// progress lines go to `on_progress`) or, when none runs, does the work in
/// this process with `here`, closing the stores after it.
pub async fn ask_or_run<T, P, Fut>(
    config: &Config,
    path: &str,
    body: &serde_json::Value,
    mut on_progress: impl FnMut(P),
    here: impl FnOnce(AppState) -> Fut,
) -> Result<T, String>
where
    T: DeserializeOwned,
    P: DeserializeOwned,
    Fut: Future<Output = Result<T, String>>,
{
    let asked = control::call(&config.control_socket_path(), path, body, |p| {
        if let Ok(p) = serde_json::from_value(p) {
            on_progress(p);
        }
    })
    .await;
    match asked {
        Ok(result) => Ok(result),
        Err(ControlError::NotRunning(_)) => {
            let state = mxmedia::app::build_state(config)
                .await
                .map_err(|e| e.to_string())?;
            let media = state.media.clone();
            let result = here(state).await;
            let closed = media.close().await.map_err(|e| e.to_string());
            result.and_then(|r| closed.map(|()| r))
        }
        Err(other) => Err(other.to_string()),
    }
}

/// The config at `path`, or the exit code after saying what is wrong.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("{}: {error}", path.display());
        ExitCode::from(2)
    })
}
