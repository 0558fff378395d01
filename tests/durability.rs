//! Durability rules: acknowledged data survives a restart, and failed or
//! abandoned uploads leave neither a record nor a blob.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// Rule 1: media, async reservations and their bytes survive a graceful restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart() {
    let mut t = TestServer::start().await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (s, small) = t
        .upload_ok(ALICE, b"small", Some("text/plain"), Some("s.txt"))
        .await;
    let (_, large) = t.upload_ok(ALICE, &big, Some("video/mp4"), None).await;
    let resp = t
        .http
        .post(t.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let (_, pending) = split_mxc(body["content_uri"].as_str().unwrap());
    let before = t.counts().await;

    t.restart().await;
    assert_eq!(t.counts().await, before);
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{small}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(
        resp.headers()["content-disposition"],
        "inline; filename=\"s.txt\""
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"small");
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{large}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());
    // The reservation is still usable by its owner after the restart.
    let resp = t
        .http
        .put(t.url(&format!("/_matrix/media/v3/upload/{s}/{pending}")))
        .bearer_auth(ALICE)
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Rule 1: a client that disconnects mid-upload leaves no record and no blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_upload_leaves_nothing() {
    let t = TestServer::start().await;
    // 12 MiB is past one local write chunk and past S3's single-PUT threshold,
    // so a multipart upload is under way when the client vanishes.
    for sent in [1000usize, 12 * 1024 * 1024] {
        let mut stream = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
        let head = format!(
            "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            30 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![9u8; sent]).await.unwrap();
        stream.flush().await.unwrap();
        // Let the server start writing the blob, then vanish; the bytes have
        // reached the datastore, so the cleanup path really runs.
        if sent > 1000 {
            assert!(
                !t.wait_for_blob_files(1, true).await.is_empty(),
                "the upload should have reached the disk"
            );
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(stream);
    }
    t.wait_for_blob_files(0, false).await;
    assert!(
        t.blob_files().is_empty(),
        "left behind: {:?}",
        t.blob_files()
    );
    assert_eq!(t.counts().await, mxmedia::media::ports::Counts::default());
    // The server is unharmed.
    t.upload_ok(ALICE, b"after", None, None).await;
}

/// Rule 1: an upload whose client stalls is dropped after the idle timeout, leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_dropped() {
    let t =
        TestServer::start_with(|c| c.media.upload_idle_timeout = Duration::from_millis(300)).await;
    let mut stream = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 100\r\n\r\nabc"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
    )
    .await;
    assert!(read.is_ok(), "the server must answer a stalled upload");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    t.wait_for_blob_files(0, false).await;
    assert!(t.blob_files().is_empty());
    assert_eq!(t.counts().await.media, 0);
}

/// The sweep deletes objects no record points at (after the grace period), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_orphans_only() {
    let t = TestServer::start_with(|c| c.media.orphan_grace = Duration::ZERO).await;
    let (s, id) = t
        .upload_ok(ALICE, b"keep me", Some("text/plain"), None)
        .await;
    let media = t.blob_dir();
    let orphan = media.join("ab/cd/abcd0123456789abcdef0123456789ab");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"crash leftover").unwrap();
    let foreign = media.join("README-not-a-blob.txt");
    std::fs::write(&foreign, b"admin note").unwrap();

    let report = t.server().state().media.sweep().await.unwrap();
    assert_eq!(report.orphan_blobs, 1);
    assert!(!orphan.exists());
    assert!(
        foreign.exists(),
        "objects that are not blob-shaped are never touched"
    );
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"keep me");

    // With the default grace, a fresh orphan is left for a later sweep.
    let t2 = TestServer::start().await;
    let young = t2.blob_dir().join("ab/cd/abcd0123456789abcdef0123456789ab");
    std::fs::create_dir_all(young.parent().unwrap()).unwrap();
    std::fs::write(&young, b"maybe in flight elsewhere").unwrap();
    assert_eq!(
        t2.server()
            .state()
            .media
            .sweep()
            .await
            .unwrap()
            .orphan_blobs,
        0
    );
    assert!(young.exists());
}

/// A blob damaged on disk is never served as a silently short 200: the body
/// ends in an error the client sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_fails_loudly() {
    let t = TestServer::start().await;
    let data = vec![3u8; 1_000_000];
    let (s, id) = t.upload_ok(ALICE, &data, None, None).await;
    let files = t.blob_files();
    assert_eq!(files.len(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(600_000)
        .unwrap();
    // The hot cache in front of S3 holds a verified copy from the upload;
    // without it, the damaged object itself is what gets read.
    let _ = std::fs::remove_dir_all(t.dir.path().join("cache"));
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.headers()["content-length"], "1000000");
    assert!(
        resp.bytes().await.is_err(),
        "a short body must not look complete"
    );
}

/// Deduplication never trusts a stored copy blindly: when the object the
/// digest points at has gone missing, a new upload of the same bytes takes
/// its place, and both media download again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_onto_a_missing_blob_stores_the_new_bytes() {
    let t = TestServer::start().await;
    let body = b"the same bytes, twice".to_vec();
    let (s, first) = t.upload_ok(ALICE, &body, None, None).await;
    let files = t.wait_for_blob_files(1, false).await;
    assert_eq!(files.len(), 1);
    std::fs::remove_file(&files[0]).unwrap();

    let (_, second) = t.upload_ok(ALICE, &body, None, None).await;
    for id in [&second, &first] {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{s}/{id}"),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.status(), 200, "{id}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);
}
