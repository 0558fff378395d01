//! The admin's command line and deletion under `kill -9`, on the real
//! binary: `mxmedia media …` through the running server's control socket
//! and, with the server stopped, by itself; a bulk deletion killed midway
//! leaves no record pointing at a deleted object and deletes no object
//! still referenced, and the sweep finishes what it started.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::{path::Path, time::Duration};

use common::*;
use process::RealServer;

/// `mxmedia media ARGS --config CONFIG`: (success, stdout + stderr).
async fn media_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"));
    command.arg("media").args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn upload(server: &RealServer, bytes: Vec<u8>) -> String {
    server.upload_as(ALICE, bytes).await
}

async fn download(server: &RealServer, mxc: &str) -> (u16, Vec<u8>) {
    server.download_as(ALICE, mxc).await
}

/// A `POST` of the admin API as the admin, which must succeed.
async fn admin_post(server: &RealServer, path: &str) {
    let resp = server
        .http
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
}

fn files_in(dir: &Path) -> usize {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.len()
}

fn yaml(hs: &FakeHomeserver, media: &Path, extra: &str) -> String {
    format!(
        "server_name: {SERVER_NAME}\ndata_dir: ./data\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\n{extra}datastores:\n  - {{type: local, id: local, path: {}}}\n",
        hs.url,
        media.display()
    )
}

/// Every moderation command works against the running server and, the
/// server stopped, by itself; a dry run reports and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_commands_work_with_and_without_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let server = RealServer::start(dir.path(), &yaml(&hs, media.path(), "")).await;
    let config = server.config.clone();
    let first = upload(&server, b"first".to_vec()).await;
    let second = upload(&server, b"second!".to_vec()).await;
    let kept = upload(&server, b"protected".to_vec()).await;

    let (ok, text) = media_cli(&config, &["info", &first]).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("\"size\": 5") && text.contains("\"uploader\": \"@alice:test.local\""),
        "{text}"
    );
    let (ok, text) = media_cli(&config, &["quarantine", &first, "--as", "@root:test.local"]).await;
    assert!(ok && text.contains("\"quarantined\": 1"), "{text}");
    assert_eq!(download(&server, &first).await.0, 404);
    let (ok, text) = media_cli(&config, &["info", &first]).await;
    assert!(
        ok && text.contains("\"quarantined_by\": \"@root:test.local\""),
        "{text}"
    );
    let (ok, text) = media_cli(&config, &["unquarantine", &first]).await;
    assert!(ok && text.contains("\"released\": 1"), "{text}");
    assert_eq!(download(&server, &first).await.0, 200);
    let (ok, text) = media_cli(&config, &["protect", &kept]).await;
    assert!(ok, "{text}");
    let (ok, text) = media_cli(&config, &["quarantine", "--user", "@alice:test.local"]).await;
    assert!(
        ok && text.contains("\"quarantined\": 2"),
        "the protected one is exempt: {text}"
    );
    media_cli(&config, &["unquarantine", &first, &second]).await;

    let files = files_in(media.path());
    let (ok, text) = media_cli(
        &config,
        &[
            "delete",
            "--older-than",
            "0s",
            "--keep-profiles",
            "false",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        ok && text.contains("would delete 2 media, 12 bytes"),
        "{text}"
    );
    assert_eq!(files_in(media.path()), files, "a dry run deletes nothing");
    let (ok, text) = media_cli(&config, &["delete", &first]).await;
    assert!(ok && text.contains("deleted 1 media, 5 bytes"), "{text}");
    assert_eq!(download(&server, &first).await.0, 404);
    assert_eq!(files_in(media.path()), files - 1);
    let (ok, text) = media_cli(&config, &["info", &first]).await;
    assert!(!ok && text.contains("not found"), "{text}");
    let (ok, text) = media_cli(&config, &["delete", "--older-than", "0s"]).await;
    assert!(
        !ok && text.contains("access token"),
        "keeping avatars needs the homeserver: {text}"
    );
    let (ok, text) = media_cli(&config, &["delete"]).await;
    assert!(!ok, "nothing named: {text}");

    // The server stopped: the command opens the stores itself.
    let port = server.addr.port();
    server.stop().await;
    let (ok, text) = media_cli(&config, &["delete", "--older-than", "0s", "--token", ADMIN]).await;
    assert!(ok && text.contains("deleted 1 media, 7 bytes"), "{text}");
    let (ok, text) = media_cli(
        &config,
        &["purge-remote", "--older-than", "0s", "--dry-run"],
    )
    .await;
    assert!(ok && text.contains("would delete 0 media"), "{text}");
    let server = RealServer::start_on(config.clone(), port).await;
    assert_eq!(download(&server, &second).await.0, 404);
    assert_eq!(download(&server, &kept).await, (200, b"protected".to_vec()));
    assert_eq!(files_in(media.path()), files - 2);
}

/// Distinct bodies, with every fifth one shared by two uploads.
fn body(i: usize) -> Vec<u8> {
    let shared = i - i % 2;
    let n = if i % 10 < 2 { shared } else { i };
    format!("payload {n} ").repeat(50).into_bytes()
}

/// A deletion of every media item is killed midway: after a restart, media
/// still listed downloads intact (records never point at deleted objects),
/// deleted media is gone, and once the sweep ran no object is left that no
/// record needs, nor is one missing that a record needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bulk_deletion_loses_nothing_still_referenced() {
    const COUNT: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let extra = "media: {sweep_interval: 1s, orphan_grace: 1s}\n";
    let server = RealServer::start(dir.path(), &yaml(&hs, media.path(), extra)).await;
    let config = server.config.clone();
    let mut uploaded = Vec::new();
    for i in 0..COUNT {
        uploaded.push((i, upload(&server, body(i)).await));
    }
    // A protected item shares its bytes with one that will be deleted.
    let keep = upload(&server, body(0)).await;
    let (_, keep_id) = split_mxc(&keep);
    admin_post(
        &server,
        &format!("/_synapse/admin/v1/media/protect/{keep_id}"),
    )
    .await;
    let objects = files_in(media.path());

    let before = now_ms() + 60_000;
    let delete_all =
        format!("/_synapse/admin/v1/media/delete?before_ts={before}&keep_profiles=false");
    let http = server.http.clone();
    let url = server.url(&delete_all);
    let deletion = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({}))
            .send()
            .await
    });
    let mut waited = 0;
    while files_in(media.path()) > objects - objects / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += 1;
        assert!(waited < 60_000, "the deletion never got going");
    }
    let port = server.addr.port();
    server.kill9().await;
    let _ = deletion.await;
    let left_on_disk = files_in(media.path());
    println!("killed with {left_on_disk} of {objects} objects left");
    assert!(left_on_disk > 0, "the kill came too late to test anything");

    let server = RealServer::start_on(config.clone(), port).await;
    let mut still = 0;
    for (i, mxc) in &uploaded {
        let (status, bytes) = download(&server, mxc).await;
        match status {
            200 => {
                assert_eq!(bytes, body(*i), "{mxc} served other bytes");
                still += 1;
            }
            404 => {}
            other => panic!("{mxc}: record without its bytes? status {other}"),
        }
    }
    assert_eq!(download(&server, &keep).await, (200, body(0)));
    println!("{still} of {COUNT} media survived the interrupted deletion");
    // Finish the job, then let the sweep clear what the kill left.
    admin_post(&server, &delete_all).await;
    for _ in 0..120 {
        if files_in(media.path()) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        files_in(media.path()),
        1,
        "only the protected item's object is left"
    );
    assert_eq!(download(&server, &keep).await, (200, body(0)));
    let (ok, text) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"))
            .args(["storage", "fsck", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(
        ok && text.contains("0 orphan objects") && text.contains("0 records with missing bytes"),
        "{text}"
    );
}
