//! What only an object-store datastore has: the hot cache in front of it,
//! behaviour during an S3 outage, presigned redirects, key prefix and
//! storage class, and uploads with multipart switched off. Runs on the S3
//! backend (this binary's name starts with `s3_`).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mxmedia::{
    config::{Config, DatastoreConfig, S3DatastoreConfig},
    ids::MediaKey,
};

fn s3_of(config: &mut Config) -> &mut S3DatastoreConfig {
    match &mut config.datastores[0] {
        DatastoreConfig::S3(s3) => s3,
        DatastoreConfig::Local(_) => panic!("this binary runs on S3"),
    }
}

fn authed(s: &str, id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{s}/{id}")
}

async fn cache_settles(t: &TestServer, fills: u64) {
    for _ in 0..200 {
        if t.server().state().media.cache_stats().unwrap().fills >= fills {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache was not filled");
}

/// Uploads fill the cache from the bytes passing through; cache hits need
/// no S3 at all, ranges included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_fill_the_cache_and_hits_need_no_s3() {
    let t = TestServer::start().await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    let (s, id) = t
        .upload_ok(ALICE, &data, Some("image/png"), Some("c.png"))
        .await;
    cache_settles(&t, 1).await;
    t.s3.as_ref().unwrap().stop().await;
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "inline; filename=\"c.png\""
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = t
        .http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);
    // Each read came from the disk cache or, once read, from memory.
    let disk = t.server().state().media.cache_stats().unwrap().hits as f64;
    let memory = t.metric("mxmedia_memory_cache_hits_total", "");
    assert!(disk >= 1.0 && disk + memory >= 2.0, "{disk} {memory}");
}

/// A full read that misses fills the cache on the way through; the next read is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fill_the_cache() {
    let t = TestServer::start().await;
    let (s, id) = t.upload_ok(ALICE, &[4u8; 50_000], None, None).await;
    cache_settles(&t, 1).await;
    // Lose the cached copy; the cache notices on the next read.
    std::fs::remove_dir_all(t.dir.path().join("cache")).unwrap();
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(resp.bytes().await.unwrap().len(), 50_000);
    cache_settles(&t, 2).await;
    t.s3.as_ref().unwrap().stop().await;
    let resp = t.get(&authed(&s, &id), Some(BOB)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        vec![4u8; 50_000].as_slice()
    );
}

/// Quarantined media is never served from the cache (or anywhere else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_wins_over_the_cache() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"bad content", Some("image/png"), None)
        .await;
    cache_settles(&t, 1).await;
    let key = MediaKey::parse(&s, &id).unwrap();
    let flagged = t
        .server()
        .state()
        .media
        .set_quarantined(&key, true)
        .await
        .unwrap();
    assert!(flagged);
    assert_matrix_error(
        t.get(&authed(&s, &id), Some(ALICE)).await,
        404,
        "M_NOT_FOUND",
    )
    .await;
    let resp = t
        .http
        .head(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// S3 outage: cached files are still served; uploads fail with 503 and
/// Retry-After; nothing half-written becomes visible; service recovers by
/// itself when S3 returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_degrades_cleanly_and_recovers() {
    let t = TestServer::start().await;
    let s3 = t.s3.as_ref().unwrap();
    let (s, hot) = t
        .upload_ok(ALICE, b"hot file", Some("text/plain"), None)
        .await;
    let big: Vec<u8> = vec![8u8; 70 * 1024 * 1024];
    let (_, cold) = t.upload_ok(ALICE, &big, None, None).await;
    cache_settles(&t, 1).await;
    let before = t.counts().await;
    let objects_before = s3.leftovers().len();

    s3.stop().await;
    // Cached: served. Too big for the cache: the store is needed, 503.
    let resp = t.get(&authed(&s, &hot), Some(ALICE)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hot file");
    let resp = t.get(&authed(&s, &cold), Some(ALICE)).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_matrix_error(resp, 503, "M_UNKNOWN").await;
    // Uploads, small (single PUT) and large (multipart), fail clearly.
    for size in [1000usize, 12 * 1024 * 1024] {
        let resp = t.upload(ALICE, vec![1u8; size], None, None).await;
        assert!(resp.headers().contains_key("retry-after"));
        let body = assert_matrix_error(resp, 503, "M_UNKNOWN").await;
        assert!(
            !body["error"].as_str().unwrap().contains("127.0.0.1"),
            "no internals: {body}"
        );
    }
    assert_eq!(t.counts().await, before, "a failed upload left a record");

    s3.resume().await;
    let (_, after) = t.upload_ok(ALICE, b"after the outage", None, None).await;
    let resp = t.get(&authed(&s, &cold), Some(ALICE)).await;
    assert_eq!(resp.bytes().await.unwrap().len(), big.len());
    let resp = t.get(&authed(&s, &after), Some(ALICE)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"after the outage");
    let left = t.wait_for_blob_files(objects_before + 1, false).await;
    assert_eq!(
        left.len(),
        objects_before + 1,
        "half-written objects or parts left: {left:?}"
    );
}

/// Presigned redirects: 307 only after every check, a URL that stays the
/// same within its window, `private` caching no longer than the signature,
/// and the bucket answers with our bytes and our headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_redirects_serve_the_same_bytes_and_headers() {
    let t = TestServer::start_with(|c| {
        c.media.freeze_unauthenticated = false;
        let s3 = s3_of(c);
        s3.redirect.enabled = true;
    })
    .await;
    let data = b"<svg>not inline</svg>".to_vec();
    let (s, id) = t
        .upload_ok(ALICE, &data, Some("image/svg+xml"), Some("pic.svg"))
        .await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let resp = http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&t.s3.as_ref().unwrap().endpoint()),
        "{location}"
    );
    let cache_control = resp.headers()["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cache_control
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age > 0 && max_age <= 3600, "{cache_control}");
    // The same URL within the reuse window.
    let again = http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);

    // Followed by an ordinary client (no Matrix auth): our bytes and headers.
    let followed = http.get(&location).send().await.unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(followed.headers()["content-type"], "image/svg+xml");
    assert_eq!(
        followed.headers()["content-disposition"],
        "attachment; filename=\"pic.svg\""
    );
    assert_eq!(followed.bytes().await.unwrap().as_ref(), data.as_slice());
    // The signature covers the object: another key with the same query is refused.
    let tampered = location.replacen("/media/", "/media/x", 1);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);

    // Legacy endpoints redirect only when asked to.
    let legacy = format!("/_matrix/media/v3/download/{s}/{id}");
    let resp = http.get(t.url(&legacy)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = http
        .get(t.url(&format!("{legacy}?allow_redirect=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);

    // No redirect before auth or for media a check refuses.
    assert_eq!(
        http.get(t.url(&authed(&s, &id)))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let key = MediaKey::parse(&s, &id).unwrap();
    t.server()
        .state()
        .media
        .set_quarantined(&key, true)
        .await
        .unwrap();
    assert_eq!(
        http.get(t.url(&authed(&s, &id)))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(t.url(&format!("{legacy}?allow_redirect=true")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// Frozen media is 404 on the legacy endpoints even when a redirect is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_media_is_not_redirected_on_legacy_endpoints() {
    let t = TestServer::start_with(|c| s3_of(c).redirect.enabled = true).await;
    let (s, id) = t.upload_ok(ALICE, b"frozen", None, None).await;
    let resp = t
        .get(
            &format!("/_matrix/media/v3/download/{s}/{id}?allow_redirect=true"),
            None,
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
}

/// Key prefix and storage class reach the bucket; multipart can be switched off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_storage_class_and_single_put_mode() {
    let t = TestServer::start_with(|c| {
        let s3 = s3_of(c);
        s3.prefix = "/tenant/media/".into();
        s3.storage_class = Some("STANDARD".into());
        s3.multipart = false;
    })
    .await;
    let data = vec![6u8; 12 * 1024 * 1024];
    let (s, id) = t.upload_ok(ALICE, &data, None, None).await;
    let objects = t.blob_files();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let relative = objects[0]
        .strip_prefix(t.blob_dir())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(relative.starts_with("tenant/media/"), "{relative}");
    std::fs::remove_dir_all(t.dir.path().join("cache")).ok();
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    // Orphans are found under the prefix too.
    let orphan = t
        .blob_dir()
        .join("tenant/media/ab/cd/abcd0123456789abcdef0123456789ab");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"x").unwrap();
    let report = t
        .server()
        .state()
        .media
        .fsck(&mxmedia::media::FsckRequest::default())
        .await
        .unwrap();
    assert_eq!((report.records_checked, report.orphans.len()), (1, 1));
    assert!(report.orphans[0].ends_with("abcd0123456789abcdef0123456789ab"));
}

/// Wrong credentials: the server's signature check refuses, and uploads get 503, not 500 or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_by_the_s3_server() {
    let t = TestServer::start_with(|c| {
        s3_of(c).secret_access_key = Some(mxmedia::config::Secret::new("wrong"))
    })
    .await;
    let resp = t.upload(ALICE, b"x".to_vec(), None, None).await;
    assert_matrix_error(resp, 503, "M_UNKNOWN").await;
    assert_eq!(t.counts().await.media, 0);
}

/// The self-test runs every call mxmedia makes, presign included when enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcheck_runs_every_call() {
    let t = TestServer::start_with(|c| s3_of(c).redirect.enabled = true).await;
    let reports = mxmedia::app::selfcheck(t.server().state()).await.unwrap();
    assert_eq!(
        reports[0].calls,
        vec![
            "put",
            "head",
            "ranged get",
            "presign",
            "delete",
            "multipart"
        ]
    );
    // It cleans up after itself.
    assert!(t.wait_for_blob_files(0, false).await.is_empty());
}

/// A bucket the credentials cannot write stops start-up, naming the call and the service's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_selfcheck_stops_start_up_naming_the_call() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let mut config = test_config_with(dir.path(), &hs.url, TestBackend::S3, Some(&s3));
    config.selfcheck_on_start = true;
    s3_of(&mut config).secret_access_key = Some(mxmedia::config::Secret::new("wrong"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = match mxmedia::app::Server::start_on(listener, &config).await {
        Ok(_) => panic!("start-up must fail"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("datastore s3: put failed"), "{error}");
    assert!(
        error.contains("SignatureDoesNotMatch") || error.contains("403"),
        "{error}"
    );
}

/// A client reading a large file more slowly than the S3 request timeout
/// (1 s here) still receives every byte: reads have a per-read timeout, not
/// a cap on the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_files_get_every_byte() {
    let t = TestServer::start_with(|c| {
        s3_of(c).timeout = std::time::Duration::from_secs(1);
        c.cache.enabled = false;
    })
    .await;
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (s, id) = t.upload_ok(ALICE, &data, None, None).await;
    let started = std::time::Instant::now();
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut received = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the body is cut short");
        received.extend_from_slice(&chunk);
        // About 1.5 MiB/s: the transfer takes several S3 timeouts.
        tokio::time::sleep(std::time::Duration::from_micros(
            chunk.len() as u64 * 650 / 1024,
        ))
        .await;
    }
    println!("slow read took {:?}", started.elapsed());
    assert!(started.elapsed() > std::time::Duration::from_secs(2));
    assert!(
        received == data,
        "{} of {} bytes",
        received.len(),
        data.len()
    );
}

/// S3 failing mid-transfer: an upload under way gets 503 and leaves no
/// record and no object; a download under way ends with an error (never a
/// hang, never a cached half), and afterwards everything reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_transfer_fails_cleanly() {
    let t = TestServer::start_with(|c| {
        s3_of(c).timeout = std::time::Duration::from_secs(5);
        c.cache.max_file_size = bytesize::ByteSize::mib(64);
    })
    .await;
    let s3 = t.s3.as_ref().unwrap();
    let big: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (s, id) = t.upload_ok(ALICE, &big, None, None).await;
    let before = t.counts().await;
    let objects = |s3: &S3Server| {
        let mut files = Vec::new();
        walk(&s3.root.path().join(S3_BUCKET), &mut files);
        files.len()
    };
    let objects_before = objects(s3);

    // Upload: 24 MiB streamed; S3 goes away after 12 MiB.
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let mut sent_tx = Some(sent_tx);
    let body = futures::stream::iter(0..24u32).then(move |i| {
        if i == 12
            && let Some(tx) = sent_tx.take()
        {
            let _ = tx.send(());
        }
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i as u8; 1024 * 1024]))
        }
    });
    let upload = t.upload(ALICE, reqwest::Body::wrap_stream(body), None, None);
    let outage = async {
        sent_rx.await.unwrap();
        s3.stop().await;
    };
    let (resp, ()) = tokio::join!(upload, outage);
    assert_matrix_error(resp, 503, "M_UNKNOWN").await;
    assert_eq!(t.counts().await, before, "a failed upload left a record");
    s3.resume().await;

    // Download: not in the hot cache yet; S3 goes away after 1 MiB.
    let resp = t.get(&authed(&s, &id), Some(BOB)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut received = 0usize;
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => received += chunk.len(),
                Err(_) => return Err(()),
            }
            if received >= 1024 * 1024 {
                s3.stop().await;
            }
        }
        Ok(())
    })
    .await
    .expect("a download from a store that went away must end, not hang");
    assert!(
        outcome.is_err() || received == big.len(),
        "the body ended early without an error ({received} bytes)"
    );
    s3.resume().await;

    // Nothing was corrupted or half-cached: the file reads back whole.
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().as_ref() == big.as_slice());
    assert_eq!(
        objects(s3),
        objects_before,
        "the failed upload left an object"
    );
}
