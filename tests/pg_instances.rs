//! Several mxmedia instances on one PostgreSQL database and one datastore:
//! what one instance commits, every instance serves at once (a download
//! waiting on another instance wakes on the commit's notification, not a
//! poll); quotas hold exactly across instances; background sweeps run on
//! one instance at a time (a lease), and never on a lease another holds,
//! nor on what another instance is writing; rate limits hold exactly
//! across instances; a remote media item is fetched once however many
//! instances are asked for it.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
// Only the deployments and their metrics are used here.
#[allow(dead_code)]
#[path = "common/peers.rs"]
mod peers;
#[path = "common/tls.rs"]
mod tls;

use common::*;
use mxmedia::media::ports::Housekeeping;
use peers::*;
use tls::TestCa;

/// A second instance sharing `first`'s database and datastores.
async fn another(
    first: &TestServer,
    tweak: impl FnOnce(&mut mxmedia::config::Config),
) -> TestServer {
    let database = first.config.database.clone();
    let mut datastores = first.config.datastores.clone();
    for store in &mut datastores {
        if let mxmedia::config::DatastoreConfig::Local(local) = store {
            local
                .path
                .get_or_insert_with(|| first.config.data_dir.join("media"));
        }
    }
    TestServer::start_with(move |c| {
        c.database = database;
        c.datastores = datastores;
        tweak(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_instance_commits_every_instance_serves_at_once() {
    let a = TestServer::start().await;
    let b = another(&a, |_| {}).await;
    // Uploaded on one, served by the other; identical bytes stored once.
    let (server, id) = a
        .upload_ok(ALICE, b"shared bytes", Some("text/plain"), None)
        .await;
    let resp = b
        .get(
            &format!("/_matrix/client/v1/media/download/{server}/{id}"),
            Some(BOB),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"shared bytes");
    b.upload_ok(BOB, b"shared bytes", Some("text/plain"), None)
        .await;
    assert_eq!(a.counts().await.blobs, 1);

    // A download waiting on B for an id reserved on A wakes when the bytes
    // land on A. While commits are relayed, waiting downloads poll only
    // every 30 s: inside this 10 s wait, only the notification can wake it.
    for _ in 0..200 {
        if b.server().state().media.relays_commits() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(b.server().state().media.relays_commits());
    let (server, id) = a.create_ok(ALICE).await;
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=10000");
    let waiting = {
        let (http, url) = (b.http.clone(), b.url(&path));
        tokio::spawn(async move { http.get(url).bearer_auth(BOB).send().await.unwrap() })
    };
    while b.metric("mxmedia_downloads_waiting", "") < 1.0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let put = a
        .http
        .put(a.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .header("content-type", "text/plain")
        .body("arrived on A")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let resp = waiting.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"arrived on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_hold_exactly_across_instances() {
    let limit = |c: &mut mxmedia::config::Config| c.quotas.default.max_files = Some(5);
    let a = TestServer::start_with(limit).await;
    let b = another(&a, limit).await;
    let uploads = (0..20u8).map(|i| {
        let t = if i % 2 == 0 { &a } else { &b };
        async move { t.upload(ALICE, vec![i; 100], None, None).await.status() }
    });
    let statuses = futures::future::join_all(uploads).await;
    let stored = statuses.iter().filter(|s| s.as_u16() == 200).count();
    assert_eq!(stored, 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 400].contains(&s.as_u16())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_run_on_one_instance_at_a_time() {
    let zero_grace =
        |c: &mut mxmedia::config::Config| c.media.orphan_grace = std::time::Duration::ZERO;
    let a = TestServer::start_with(zero_grace).await;
    let b = another(&a, zero_grace).await;
    a.upload_ok(ALICE, b"kept", None, None).await;
    // An object no record points at (as a crash mid-upload leaves one).
    let mxmedia::config::DatastoreConfig::Local(local) = &a.config.datastores[0] else {
        panic!("the local datastore");
    };
    let root = local
        .path
        .clone()
        .unwrap_or_else(|| a.config.data_dir.join("media"));
    let orphan = root.join("ab/cd/abcd0123456789abcdef0123456789ab");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();

    // While another holder has the lease, a sweep skips its round.
    let mxmedia::config::DatabaseConfig::Postgres { url: Some(url), .. } = &a.config.database
    else {
        panic!("PostgreSQL metadata");
    };
    let other = mxmedia::repo::postgres::PgRepo::open(url.expose(), 2)
        .await
        .unwrap();
    let lease = other
        .lease("sweep")
        .await
        .unwrap()
        .expect("the lease is free");
    let skipped = b.server().state().media.sweep().await.unwrap();
    assert_eq!(skipped.orphan_blobs, 0);
    assert!(orphan.exists());
    drop(lease);
    // Released (its connection closed), the next sweep takes it.
    let mut swept = 0;
    for _ in 0..100 {
        swept = b.server().state().media.sweep().await.unwrap().orphan_blobs;
        if swept > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(swept, 1);
    assert!(!orphan.exists());
    assert_eq!(a.counts().await.media, 1);
}

/// Three instances asked at once for one thumbnail make it once: each
/// coalesces its own requests, and one instance at a time holds the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_thumbnail_is_made_once_across_instances() {
    let on_request = |c: &mut mxmedia::config::Config| c.thumbnails.pregenerate = false;
    let a = TestServer::start_with(on_request).await;
    let b = another(&a, on_request).await;
    let c = another(&a, on_request).await;
    let png = picture(900, 700, 4, image::ImageFormat::Png);
    let (server, id) = a.upload_ok(ALICE, &png, Some("image/png"), None).await;
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=320&height=240&method=scale"
    );
    let requests = (0..30).map(|i| {
        let t = [&a, &b, &c][i % 3];
        let path = path.clone();
        async move { t.get(&path, Some(BOB)).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let made: f64 = [&a, &b, &c]
        .iter()
        .map(|t| t.metric("mxmedia_thumbnails_generated_total", ""))
        .sum();
    assert_eq!(made, 1.0);
}

/// The local datastore's directory.
fn media_root(t: &TestServer) -> std::path::PathBuf {
    let mxmedia::config::DatastoreConfig::Local(local) = &t.config.datastores[0] else {
        panic!("the local datastore");
    };
    local
        .path
        .clone()
        .unwrap_or_else(|| t.config.data_dir.join("media"))
}

/// Staging files (`<key>#<n>`) under a local datastore.
fn staging_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains('#') {
                found.push(path);
            }
        }
    }
    found
}

/// An upload in progress on one instance survives a sweep on another, even
/// with no grace period at all: the write is announced in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_leaves_what_another_instance_is_writing() {
    let zero_grace =
        |c: &mut mxmedia::config::Config| c.media.orphan_grace = std::time::Duration::ZERO;
    let a = TestServer::start_with(zero_grace).await;
    let b = another(&a, zero_grace).await;
    let root = media_root(&a);
    let mxmedia::config::DatastoreConfig::Local(local) = &a.config.datastores[0] else {
        panic!("the local datastore");
    };
    // More than one write chunk, so the write has begun in a staging file.
    let first = vec![1u8; usize::try_from(local.write_chunk_size.as_u64()).unwrap() + 1];
    let first_len = first.len();

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let upload = {
        let (http, url) = (a.http.clone(), a.url("/_matrix/media/v3/upload"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(ALICE)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    tx.send(Ok(first)).await.unwrap();
    let mut staged = Vec::new();
    for _ in 0..500 {
        staged = staging_files(&root);
        if !staged.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(staged.len(), 1, "the upload is being written");
    // Older than the (zero) grace, unknown to B's own in-flight set.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let report = b.server().state().media.sweep().await.unwrap();
    assert_eq!((report.staging_files, report.orphan_blobs), (0, 0));
    assert!(staged[0].exists());

    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap();
    assert_eq!(resp.status(), 200);
    let uri: serde_json::Value = resp.json().await.unwrap();
    let uri = uri["content_uri"].as_str().unwrap();
    let path = format!(
        "/_matrix/client/v1/media/download/{}",
        uri.trim_start_matches("mxc://")
    );
    let resp = b.get(&path, Some(BOB)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), first_len + 1000);
    assert_eq!(
        b.server().state().media.sweep().await.unwrap().orphan_blobs,
        0
    );
}

/// A user's downloads spend one bucket, whichever instance serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_exactly_across_instances() {
    let limited = |c: &mut mxmedia::config::Config| {
        c.rate_limits.downloads = Some(mxmedia::config::Rate {
            per_second: 0.001,
            burst: 4,
        });
    };
    let a = TestServer::start_with(limited).await;
    let b = another(&a, limited).await;
    let c = another(&a, limited).await;
    let (server, id) = a.upload_ok(ALICE, b"limited", None, None).await;
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let requests = (0..12).map(|i| {
        let t = [&a, &b, &c][i % 3];
        let path = path.clone();
        async move { t.get(&path, Some(BOB)).await }
    });
    let mut statuses = Vec::new();
    for resp in futures::future::join_all(requests).await {
        let status = resp.status().as_u16();
        if status == 429 {
            assert!(resp.headers().contains_key("retry-after"));
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            assert!(body["retry_after_ms"].as_u64().unwrap() > 900_000, "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{statuses:?}"
    );
}

/// Three instances of one deployment, 50 clients each asking at once for
/// the same remote media: one signed fetch reaches the remote server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_media_is_fetched_once_across_instances() {
    let ca = TestCa::new();
    let metrics = |c: &mut mxmedia::config::Config| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    };
    let remote = deployment(&ca, metrics).await;
    let here = deployment(&ca, |_| {}).await;
    let same_deployment = |c: &mut mxmedia::config::Config| {
        c.server_name = here.t.config.server_name.clone();
        c.federation = here.t.config.federation.clone();
    };
    let second = another(&here.t, same_deployment).await;
    let third = another(&here.t, same_deployment).await;
    let (_, id) = remote
        .t
        .upload_ok(BOB, b"bytes from afar", Some("text/plain"), Some("far.txt"))
        .await;

    let path = format!("/_matrix/client/v1/media/download/{}/{id}", remote.name);
    let requests = (0..150).map(|i| {
        let t = [&here.t, &second, &third][i % 3];
        let path = path.clone();
        async move { t.get(&path, Some(ALICE)).await }
    });
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), &b"bytes from afar"[..]);
    }
    assert_eq!(
        metric(&remote, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        1.0
    );
    assert_eq!(here.t.counts().await.media, 1);
}
