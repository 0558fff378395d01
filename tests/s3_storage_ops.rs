//! `storage sync` and `storage fsck` between a local and an S3 datastore
//! (a real S3 server on 127.0.0.1), through the control socket as the CLI
//! uses it, and through the `mxmedia` binary itself.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use common::*;
use mxmedia::{
    config::{Config, DatastoreConfig, DatastoreKind, LocalDatastoreConfig},
    media::SyncProgress,
    ops::control,
};
use serde_json::json;

/// Uploads go to a local datastore listed first; the S3 one is the target.
fn local_then_s3(config: &mut Config) {
    let local = LocalDatastoreConfig {
        kinds: vec![DatastoreKind::LocalMedia],
        ..LocalDatastoreConfig::default()
    };
    config.datastores.insert(0, DatastoreConfig::Local(local));
}

async fn upload_many(t: &TestServer, range: std::ops::Range<u32>) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    let ids: Vec<u32> = range.collect();
    for chunk in ids.chunks(25) {
        let uploads = chunk.iter().map(|i| {
            let data = format!("blob number {i} ")
                .repeat(1 + (*i as usize % 7))
                .into_bytes();
            async move {
                let (s, id) = t.upload_ok(ALICE, &data, Some("text/plain"), None).await;
                (format!("{s}/{id}"), data)
            }
        });
        out.extend(futures::future::join_all(uploads).await);
    }
    out
}

async fn assert_all_served(t: &TestServer, media: &HashMap<String, Vec<u8>>) {
    for (mxc, data) in media {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{mxc}"),
                Some(BOB),
            )
            .await;
        assert_eq!(resp.status(), 200, "{mxc}");
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            data.as_slice(),
            "{mxc}"
        );
    }
}

fn local_files(t: &TestServer) -> usize {
    let mut files = Vec::new();
    walk(&t.dir.path().join("media"), &mut files);
    files.len()
}

async fn sync_over_socket(t: &TestServer, body: serde_json::Value) -> (SyncProgress, usize) {
    let mut done = None;
    let mut lines = 0;
    control::request(
        &t.config.control_socket_path(),
        "/control/storage/sync",
        &body,
        |line| {
            lines += 1;
            if let Some(report) = line.get("done") {
                done = Some(serde_json::from_value(report.clone()).unwrap());
            }
            assert!(line.get("error").is_none(), "{line}");
        },
    )
    .await
    .unwrap();
    (done.expect("a final report"), lines)
}

/// A few hundred blobs move from local to S3 with --verify and
/// --delete-source while uploads continue; none is lost, and a second run
/// resumes with what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_moves_blobs_online_while_uploads_continue() {
    let t = TestServer::start_with(local_then_s3).await;
    let mut media = upload_many(&t, 0..300).await;
    assert_eq!(local_files(&t), 300);

    let request = json!({"from": "local", "to": "s3", "verify": true, "delete_source": true});
    let during = async { upload_many(&t, 300..400).await };
    let ((report, lines), more) = tokio::join!(sync_over_socket(&t, request.clone()), during);
    media.extend(more);
    assert!(report.finished && report.failed == 0, "{report:?}");
    assert!(report.moved >= 300, "{report:?}");
    assert_eq!(report.deleted_sources, report.moved);
    assert!(lines > 2, "progress was streamed");
    assert_all_served(&t, &media).await;

    // Resume: whatever arrived during the first run moves now.
    let (second, _) = sync_over_socket(&t, request).await;
    assert_eq!(second.failed, 0);
    assert_eq!(report.moved + second.moved, 400, "{report:?} {second:?}");
    assert_eq!(local_files(&t), 0, "sources are deleted");
    let s3 = t.s3.as_ref().unwrap();
    assert_eq!(s3.leftovers().len(), 400);
    assert_all_served(&t, &media).await;
    // Reads come from S3 now, even with the cache gone.
    std::fs::remove_dir_all(t.dir.path().join("cache")).ok();
    assert_all_served(&t, &media).await;
}

/// Bad requests are refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_unknown_or_identical_datastores() {
    let t = TestServer::start_with(local_then_s3).await;
    for body in [
        json!({"from": "local", "to": "local"}),
        json!({"from": "nope", "to": "s3"}),
    ] {
        let mut error = None;
        control::request(
            &t.config.control_socket_path(),
            "/control/storage/sync",
            &body,
            |line| {
                error = line
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned);
            },
        )
        .await
        .unwrap();
        assert!(error.is_some(), "{body}");
    }
}

fn cli_config(t: &TestServer) -> std::path::PathBuf {
    let yaml = format!(
        "server_name: {SERVER_NAME}\ndata_dir: {}\nselfcheck_on_start: false\nmedia: {{orphan_grace: 0s}}\nhomeserver: {{url: '{}'}}\n{}",
        t.dir.path().display(),
        t.hs.url,
        datastores_yaml(TestBackend::S3, t.s3.as_ref()).replacen(
            "datastores:\n",
            "datastores:\n  - {type: local, id: local, kinds: [local_media]}\n",
            1
        )
    );
    let path = t.dir.path().join("cli.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The `mxmedia storage` commands: through the socket while the server
/// runs, in-process when it does not; fsck finds and repairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commands_work_with_and_without_a_running_server() {
    let mut t = TestServer::start_with(|c| {
        local_then_s3(c);
        c.media.orphan_grace = Duration::ZERO;
    })
    .await;
    let media = upload_many(&t, 0..20).await;
    let config = cli_config(&t);
    let bin = env!("CARGO_BIN_EXE_mxmedia");

    // Server running: the CLI asks it.
    let cli = |args: Vec<String>| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(bin)
                    .args(&args)
                    .arg("--config")
                    .arg(&config)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = cli(vec![
        "storage".into(),
        "sync".into(),
        "--from".into(),
        "local".into(),
        "--to".into(),
        "s3".into(),
        "--verify".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("20 of 20 blobs moved"), "{stdout}");
    assert_all_served(&t, &media).await;
    // Without --delete-source the local copies are now orphans; fsck sees them.
    let out = cli(vec!["storage".into(), "fsck".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("20 records checked (")
            && stdout.contains("40 objects listed, 20 orphan objects (0 deleted)"),
        "{stdout}"
    );

    // Lose one object from S3; keep its hot-cache copy.
    let victim =
        t.s3.as_ref()
            .unwrap()
            .leftovers()
            .into_iter()
            .next()
            .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let out = cli(vec!["storage".into(), "fsck".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("1 records with missing bytes"), "{stdout}");

    // Server stopped: the CLI does the work itself.
    let socket = t.config.control_socket_path();
    t.server_stop().await;
    assert!(
        !socket.exists(),
        "the control socket is removed on shutdown"
    );
    let out = cli(vec!["storage".into(), "fsck".into(), "--repair".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("20 orphan objects (20 deleted), 1 records with missing bytes (1 restored from the cache)"), "{stdout}");
    assert!(victim.exists(), "restored from the hot cache");
    t.server_start().await;
    std::fs::remove_dir_all(t.dir.path().join("cache")).ok();
    assert_all_served(&t, &media).await;
}
