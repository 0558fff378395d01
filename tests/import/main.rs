//! Moving media in and out: the real Synapse (from PyPI, on SQLite and on
//! a real PostgreSQL) with its own media repository, round trip through
//! the real `mxmedia` binary (`real_synapse.rs`); Synapse-shaped stores too
//! large to upload through Synapse, for routing and `kill -9` resumption
//! (`synthetic.rs`); matrix-media-repo's export archives (`mmr.rs`).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/synapse.rs"]
mod synapse;

mod mmr;
mod real_synapse;
mod synthetic;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

/// Runs the `mxmedia` binary with `args`; its JSON report.
pub async fn mxmedia(args: Vec<std::ffi::OsString>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mxmedia"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn files_under(dir: &Path) -> usize {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.len()
}

/// A config for the `mxmedia` command line naming the running test
/// server's data directory and datastores, so commands go through its
/// control socket.
pub fn cli_config(t: &TestServer) -> std::path::PathBuf {
    let config = t.dir.path().join("import.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nhomeserver: {{url: '{}'}}\nselfcheck_on_start: false\n{}",
            t.dir.path().display(),
            t.hs.url,
            datastores_yaml(backend(), t.s3.as_ref())
        ),
    )
    .unwrap();
    config
}
