//! Rule 1 under `kill -9`: the real binary is killed while 1,000 uploads
//! are in flight. Every upload it acknowledged downloads byte-identical
//! after a restart, and once the sweep has run no orphan object and no
//! staging file remains, on a local datastore and on S3.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use process::RealServer;

const UPLOADS: usize = 1000;
/// The server is killed once this many uploads were acknowledged.
const KILL_AFTER: usize = 300;

/// Distinct bodies: most small, one in ten over a megabyte (multipart on S3,
/// several staged writes on disk).
fn body(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(10) {
        1_500_000 + i * 1000
    } else {
        4096 + i * 61
    };
    let seed = (i as u32).wrapping_mul(2_654_435_761);
    (0..len as u32)
        .map(|j| (j.wrapping_mul(31).wrapping_add(seed) >> 7) as u8)
        .collect()
}

/// `mxmedia storage fsck` against the running server: (orphans, missing).
fn fsck(config: &std::path::Path) -> (usize, usize, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"))
        .args(["storage", "fsck", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let number_before = |marker: &str| -> usize {
        let at = text.find(marker).unwrap_or_else(|| panic!("{text}"));
        text[..at]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        number_before(" orphan objects"),
        number_before(" records with missing bytes"),
        text,
    )
}

fn staging_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.retain(|f| {
        f.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('#'))
            .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
    });
    files
}

async fn kill_during_uploads(datastores: &str, objects_dir: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let yaml = format!(
        "server_name: {SERVER_NAME}\ndata_dir: ./data\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\nmedia: {{sweep_interval: 1s, orphan_grace: 1s}}\n{datastores}",
        hs.url
    );
    let server = RealServer::start(dir.path(), &yaml).await;
    let port = server.addr.port();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let (enough_tx, enough_rx) = tokio::sync::watch::channel(false);
    let enough_tx = Arc::new(enough_tx);
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let (http, url, acked, enough) = (
            http.clone(),
            server.url("/_matrix/media/v3/upload"),
            Arc::clone(&acked),
            Arc::clone(&enough_tx),
        );
        uploads.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(ALICE)
                .body(body(i))
                .send()
                .await
                .ok()?;
            if resp.status() != 200 {
                return None;
            }
            let json: serde_json::Value = resp.json().await.ok()?;
            let mxc = json["content_uri"].as_str()?.to_owned();
            if acked.fetch_add(1, Ordering::SeqCst) + 1 >= KILL_AFTER {
                let _ = enough.send(true);
            }
            Some((i, mxc))
        }));
    }
    let mut enough = enough_rx;
    tokio::time::timeout(Duration::from_secs(300), enough.wait_for(|e| *e))
        .await
        .expect("uploads are acknowledged")
        .unwrap();
    server.kill9().await;
    let mut acknowledged = Vec::new();
    for upload in uploads {
        if let Some(done) = upload.await.unwrap() {
            acknowledged.push(done);
        }
    }
    println!(
        "killed with {} of {UPLOADS} uploads acknowledged; {} staging files, {} objects on disk",
        acknowledged.len(),
        staging_files(objects_dir).len(),
        {
            let mut files = Vec::new();
            walk(objects_dir, &mut files);
            files.len()
        }
    );
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < UPLOADS,
        "the kill came too late to test anything"
    );

    let server = RealServer::start_on(dir.path().join("config.yaml"), port).await;
    for (i, mxc) in &acknowledged {
        let (status, bytes) = server.download_as(ALICE, mxc).await;
        assert_eq!(status, 200, "acknowledged upload {i} lost");
        assert!(bytes == body(*i), "acknowledged upload {i} corrupted");
    }
    // The sweep runs every second: wait until it has cleared what the kill
    // left (fsck reports the orphans it sees, and bytes that are missing).
    let config = dir.path().join("config.yaml");
    let mut last = String::new();
    for _ in 0..120 {
        let (orphans, missing, text) = fsck(&config);
        assert_eq!(missing, 0, "{text}");
        if orphans == 0 && staging_files(objects_dir).is_empty() {
            println!("after the sweep: {}", text.lines().next().unwrap_or(""));
            return;
        }
        last = text;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "orphans or staging files remain: {last} {:?}",
        staging_files(objects_dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_on_a_local_datastore() {
    let media = tempfile::tempdir().unwrap();
    let datastores = format!(
        "datastores:\n  - {{type: local, id: local, path: {}}}\n",
        media.path().display()
    );
    kill_during_uploads(&datastores, media.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_on_s3() {
    let s3 = S3Server::start().await;
    let datastores = datastores_yaml(TestBackend::S3, Some(&s3));
    kill_during_uploads(&datastores, &s3.root.path().join(S3_BUCKET)).await;
}
