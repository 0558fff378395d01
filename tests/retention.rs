//! Retention: media and thumbnails nobody served for their lifetime are
//! deleted and their bytes leave the datastore (listed after the run, on
//! disk here and in the S3 bucket through `s3_contract.rs`); served,
//! protected, quarantined media and avatars stay. Access times are noted
//! without a write per download and shown by the admin API.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LIFETIME: Duration = Duration::from_secs(2);

async fn admin_post(t: &TestServer, path: &str) {
    let resp = t
        .http
        .post(t.url(path))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
}

async fn last_access(t: &TestServer, s: &str, id: &str) -> Value {
    let resp = t
        .http
        .get(t.url(&format!("/_synapse/admin/v1/media/{s}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["media_info"]["last_access_ts"].clone()
}

/// A dry run reports and deletes nothing; the real run deletes exactly the
/// expired media and thumbnails, frees their objects, and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_frees_what_nobody_served() {
    let t = TestServer::start_with(|c| {
        c.retention.local = Some(LIFETIME);
        c.retention.thumbnails = Some(LIFETIME);
        c.retention.access_granularity = Duration::ZERO;
        c.homeserver.admin_token = Some(mxmedia::config::Secret::new(ADMIN));
        c.thumbnails.pregenerate = false;
    })
    .await;
    let (s, old) = t.upload_ok(ALICE, b"nobody reads this", None, None).await;
    let photo_bytes = picture(400, 300, 9, image::ImageFormat::Jpeg);
    let (_, photo) = t
        .upload_ok(ALICE, &photo_bytes, Some("image/jpeg"), None)
        .await;
    let (_, served) = t.upload_ok(ALICE, b"read every day", None, None).await;
    let (_, avatar) = t.upload_ok(ALICE, b"my face", None, None).await;
    let (_, kept) = t.upload_ok(ALICE, b"a sticker", None, None).await;
    let (_, evidence) = t.upload_ok(ALICE, b"evidence", None, None).await;
    t.hs.set_avatar("@alice:test.local", &format!("mxc://{s}/{avatar}"));
    admin_post(&t, &format!("/_synapse/admin/v1/media/protect/{kept}")).await;
    admin_post(
        &t,
        &format!("/_synapse/admin/v1/media/quarantine/{s}/{evidence}"),
    )
    .await;
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{s}/{photo}?width=96&height=96&method=crop");
    assert_eq!(t.get(&thumb, Some(ALICE)).await.status(), 200);
    assert_eq!(last_access(&t, &s, &old).await, Value::Null, "never served");
    let media = &t.server().state().media;
    media.flush_accesses().await.unwrap();
    assert!(
        last_access(&t, &s, &photo).await.as_u64().is_some(),
        "the thumbnail request counts"
    );

    // Past the lifetime, one item is served again just before the run.
    tokio::time::sleep(LIFETIME + Duration::from_millis(500)).await;
    let download = format!("/_matrix/client/v1/media/download/{s}/{served}");
    assert_eq!(t.get(&download, Some(BOB)).await.status(), 200);
    let objects = t.wait_for_blob_files(7, true).await.len();

    let dry = media.retention(true, |_| {}).await.unwrap();
    let expected_local = (17 + photo_bytes.len()) as u64;
    assert_eq!(
        (dry.local.items, dry.local.bytes),
        (2, expected_local),
        "{dry:?}"
    );
    assert_eq!(dry.thumbnails.items, 1, "{dry:?}");
    assert_eq!(dry.remote.items, 0);
    assert_eq!(t.blob_files().len(), objects, "a dry run deletes nothing");

    let run = media.retention(false, |_| {}).await.unwrap();
    assert_eq!((run.local, run.thumbnails), (dry.local, dry.thumbnails));
    println!(
        "retention freed {} local media ({} bytes) and {} thumbnails ({} bytes)",
        run.local.items, run.local.bytes, run.thumbnails.items, run.thumbnails.bytes
    );
    // Their objects are gone from the datastore: two originals, one thumbnail.
    assert_eq!(
        t.wait_for_blob_files(objects - 3, false).await.len(),
        objects - 3
    );
    for id in [&old, &photo] {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{s}/{id}"),
                Some(ALICE),
            )
            .await;
        assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    }
    for id in [&served, &avatar, &kept] {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{s}/{id}"),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.status(), 200, "{id} is kept");
    }
    assert!(
        last_access(&t, &s, &evidence).await.is_null(),
        "quarantined media is kept, unserved"
    );
    assert_eq!(
        t.metric("mxmedia_retention_freed_bytes_total", "kind=\"local\""),
        expected_local as f64
    );
    assert_eq!(
        t.metric("mxmedia_retention_deleted_total", "kind=\"thumbnail\""),
        1.0
    );

    // A second run finds nothing more.
    let again = media.retention(false, |_| {}).await.unwrap();
    assert_eq!(again.local.items + again.thumbnails.items, 0, "{again:?}");
}

/// Without a lifetime for a kind, nothing of it is touched; avatars need
/// the homeserver's answer, so a failing homeserver stops the run before it
/// deletes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_guesses_about_avatars() {
    let t = TestServer::start_with(|c| {
        c.retention.local = Some(Duration::from_millis(1));
        c.homeserver.admin_token = Some(mxmedia::config::Secret::new("not_an_admin"));
    })
    .await;
    let (s, id) = t.upload_ok(ALICE, b"maybe an avatar", None, None).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let media = &t.server().state().media;
    assert!(
        media.retention(false, |_| {}).await.is_err(),
        "the homeserver refused the token"
    );
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

/// Retention runs by itself on its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_in_the_background() {
    let t = TestServer::start_with(|c| {
        c.retention.local = Some(Duration::from_millis(200));
        c.retention.keep_avatars = false;
        c.retention.interval = Duration::from_millis(300);
    })
    .await;
    let (s, id) = t.upload_ok(ALICE, b"short-lived", None, None).await;
    let download = format!("/_matrix/client/v1/media/download/{s}/{id}");
    for _ in 0..100 {
        if t.get(&download, Some(BOB)).await.status() == 404 {
            assert_eq!(t.counts().await.media, 0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("background retention never deleted the expired media");
}
