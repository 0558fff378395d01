//! The operator's commands on the real binary: a backup taken while the
//! server runs and uploads go on, restored into an empty data directory,
//! then `storage fsck` naming exactly what changed since; `check-config`,
//! `stats`, `--json`, shell completions; the systemd unit checked by
//! `systemd-analyze verify`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use common::*;
use process::RealServer;
use serde_json::Value;

/// `mxmedia ARGS --config CONFIG`: (success, stdout, stderr).
async fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"));
    command.args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mxmedia --json ARGS`: whether it succeeded, and its JSON result.
async fn cli_result(config: &Path, args: &[&str]) -> (bool, Value) {
    let args: Vec<&str> = std::iter::once("--json")
        .chain(args.iter().copied())
        .collect();
    let (ok, out, err) = cli(config, &args).await;
    let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}{err}"));
    (ok, value)
}

/// `mxmedia --json ARGS`, which must succeed: its JSON result.
async fn cli_json(config: &Path, args: &[&str]) -> Value {
    let (ok, value) = cli_result(config, args).await;
    assert!(ok, "{args:?}: {value}");
    value
}

async fn upload(server: &RealServer, bytes: Vec<u8>) -> String {
    server.upload_as(ALICE, bytes).await
}

async fn download(server: &RealServer, mxc: &str) -> (u16, Vec<u8>) {
    server.download_as(ALICE, mxc).await
}

/// Objects in the datastore directory, as `local:<key>` like fsck names them.
fn objects(media: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    walk(media, &mut files);
    files
        .iter()
        .map(|f| format!("local:{}", f.strip_prefix(media).unwrap().display()))
        .collect()
}

fn yaml(hs: &FakeHomeserver, media: &Path) -> String {
    format!(
        "server_name: {SERVER_NAME}\ndata_dir: ./data\nselfcheck_on_start: false\nhomeserver: {{url: '{}', admin_token: 'hs-admin-secret'}}\nmedia: {{orphan_grace: 0s}}\ndatastores:\n  - {{type: local, id: local, path: {}}}\n",
        hs.url,
        media.display()
    )
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A backup taken while uploads go on, restored after more uploads and a
/// deletion: everything acknowledged before the backup is served again,
/// and fsck names exactly the objects uploaded since (orphans, kept from
/// every sweep) and the media deleted since (bytes missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_and_fsck_names_what_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let server = RealServer::start(dir.path(), &yaml(&hs, media.path())).await;
    let config = server.config.clone();
    let kept: Vec<(String, Vec<u8>)> = futures::future::join_all((0..20u8).map(|i| {
        let server = &server;
        async move {
            let bytes = vec![i; 1000 + usize::from(i)];
            (upload(server, bytes.clone()).await, bytes)
        }
    }))
    .await;
    let doomed_bytes = b"deleted after the backup".to_vec();
    let doomed = upload(&server, doomed_bytes.clone()).await;

    // Uploads keep arriving while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (stop, http, url) = (
            stop.clone(),
            server.http.clone(),
            server.url("/_matrix/media/v3/upload"),
        );
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let resp = http
                    .post(&url)
                    .bearer_auth(ALICE)
                    .body(format!("during the backup {n}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let out = dir.path().join("backup.mxb");
    let report = cli_json(&config, &["db", "backup", out.to_str().unwrap()]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = busy.await.unwrap();
    assert!(during > 0, "uploads went on around the backup");
    assert!(report["entries"].as_u64().unwrap() > 0, "{report}");
    println!("backup while uploading: {report} ({during} uploads around it)");
    let (ok, _, err) = cli(&config, &["db", "backup", out.to_str().unwrap()]).await;
    assert!(!ok && err.contains("exists already"), "{err}");

    // After the backup: what the restore will not know about.
    let at_backup = objects(media.path());
    let later = upload(&server, b"uploaded after the backup".to_vec()).await;
    let resp = server
        .http
        .delete(server.url(&format!(
            "/_synapse/admin/v1/media/{}",
            doomed.trim_start_matches("mxc://")
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One object more (the later upload), one fewer (the deleted media's).
    for _ in 0..200 {
        if objects(media.path()).len() == at_backup.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    server.stop().await;

    // A restore goes only into an empty data directory.
    let (ok, _, err) = cli(&config, &["db", "restore", out.to_str().unwrap()]).await;
    assert!(!ok && err.contains("holds a database already"), "{err}");
    std::fs::rename(dir.path().join("data/db"), dir.path().join("db.before")).unwrap();
    let restored = cli_json(&config, &["db", "restore", out.to_str().unwrap()]).await;
    assert_eq!(restored["entries"], report["entries"], "{restored}");
    assert_eq!(restored["datastores_held"], 1, "{restored}");

    let now = objects(media.path());
    let since: BTreeSet<String> = now.difference(&at_backup).cloned().collect();
    assert_eq!(since.len(), 1, "one upload after the backup: {since:?}");
    let (clean, fsck) = cli_result(&config, &["storage", "fsck"]).await;
    assert!(!clean, "missing bytes make fsck fail: {fsck}");
    let orphans: BTreeSet<String> = fsck["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    // Uploads that committed after the backup's moment are orphans too.
    assert!(orphans.is_superset(&since), "{fsck}");
    assert!(orphans.len() <= since.len() + during as usize, "{fsck}");
    let missing = fsck["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{fsck}");
    assert!(
        missing[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("sha256:{}", hex_sha256(&doomed_bytes))),
        "{fsck}"
    );
    assert_eq!(fsck["records_checked"], fsck["total"], "{fsck}");

    // Even a repair leaves the orphans of before the restore alone.
    let (_, repaired) = cli_result(&config, &["storage", "fsck", "--repair"]).await;
    assert_eq!(repaired["orphans_deleted"], 0, "{repaired}");
    assert!(objects(media.path()).is_superset(&since));

    let server = RealServer::start_on(config.clone(), server_port(&config)).await;
    for (mxc, bytes) in &kept {
        assert_eq!(download(&server, mxc).await, (200, bytes.clone()), "{mxc}");
    }
    assert_eq!(download(&server, &later).await.0, 404);
    let stats = cli_json(&config, &["stats"]).await;
    assert_eq!(
        stats["local_media"]["count"].as_u64().unwrap(),
        restored["media"].as_u64().unwrap(),
        "{stats}"
    );
    server.stop().await;
}

/// The port a config file names in its `listen` line.
fn server_port(config: &PathBuf) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen: 127.0.0.1:"))
        .unwrap();
    listen.trim().parse().unwrap()
}

/// `check-config` prints the configuration in effect, secrets redacted,
/// that loads again; `stats` counts with and without a running server;
/// completions are generated for the shells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admins_commands_answer_for_people_and_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let server = RealServer::start(dir.path(), &yaml(&hs, media.path())).await;
    let config = server.config.clone();

    let (ok, effective, err) = cli(&config, &["check-config"]).await;
    assert!(ok, "{err}");
    assert!(effective.contains("admin_token: <redacted>"), "{effective}");
    assert!(!effective.contains("hs-admin-secret"), "{effective}");
    assert!(effective.contains("orphan_grace: 0s"), "{effective}");
    assert!(
        effective.contains("sweep_interval: 10m"),
        "defaults shown: {effective}"
    );
    let again = dir.path().join("effective.yaml");
    std::fs::write(&again, &effective).unwrap();
    let (ok, reloaded, err) = cli(&again, &["check-config"]).await;
    assert!(ok, "the printed configuration loads again: {err}");
    assert_eq!(
        reloaded.lines().skip(1).collect::<Vec<_>>(),
        effective.lines().skip(1).collect::<Vec<_>>()
    );
    let json = cli_json(&config, &["check-config"]).await;
    assert_eq!(json["homeserver"]["admin_token"], "<redacted>");

    upload(&server, vec![1; 100]).await;
    upload(&server, vec![1; 100]).await;
    upload(&server, vec![2; 50]).await;
    let stats = cli_json(&config, &["stats"]).await;
    assert_eq!(
        stats["local_media"],
        serde_json::json!({"count": 3, "bytes": 250})
    );
    assert_eq!(
        stats["datastores"]["local"],
        serde_json::json!({"count": 2, "bytes": 150}),
        "two distinct contents: {stats}"
    );
    server.stop().await;
    let stats = cli_json(&config, &["stats"]).await;
    assert_eq!(
        stats["local_media"]["count"], 3,
        "without a server: {stats}"
    );
    let (ok, text, _) = cli(&config, &["stats"]).await;
    assert!(ok && text.contains("local media"), "{text}");

    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, err) = cli(&config, &["completions", shell]).await;
        assert!(ok, "{err}");
        assert!(
            script.contains("backup") && script.contains("fsck"),
            "{shell}: {}",
            &script[..script.len().min(200)]
        );
    }
}

/// The unit in deploy/ passes `systemd-analyze verify` without a warning
/// (unknown keys and bad values only warn, so any output fails).
#[test]
fn the_systemd_unit_verifies() {
    let Ok(found) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("systemd-analyze is not installed: not checked");
        return;
    };
    assert!(found.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/mxmedia.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/mxmedia", env!("CARGO_BIN_EXE_mxmedia"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mxmedia.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
