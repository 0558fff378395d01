//! Direct uploads (MSC3870) against the in-process S3 server, which checks
//! SigV4 signatures, presigned URLs included: `/create` answers an upload
//! URL for one object; the client PUTs there, then completes; mxmedia
//! verifies, deduplicates and commits, and whatever goes wrong leaves no
//! object behind.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const UPLOAD_URL: &str = "com.beeper.msc3870.upload_url";

fn direct(c: &mut mxmedia::config::Config) {
    let mxmedia::config::DatastoreConfig::S3(s3) = &mut c.datastores[0] else {
        panic!("an S3 datastore");
    };
    s3.direct_uploads.enabled = true;
}

/// `/create` as `token`: `(server, id, upload URL)`.
async fn create(t: &TestServer, token: &str) -> (String, String, Option<String>) {
    let json = t.create_json(token).await;
    let (server, id) = split_mxc(json["content_uri"].as_str().unwrap());
    (server, id, json[UPLOAD_URL].as_str().map(str::to_owned))
}

/// A PUT straight to the bucket, as a client does.
async fn put(url: &str, body: &[u8], content_type: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(url)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

async fn complete(t: &TestServer, token: &str, server: &str, id: &str) -> reqwest::Response {
    t.http
        .post(t.url(&format!(
            "/_matrix/media/unstable/com.beeper.msc3870/upload/{server}/{id}/complete?filename=direct.png"
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn download_path(server: &str, id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{server}/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_put_at_the_upload_url_become_the_media() {
    let t = TestServer::start_with(direct).await;
    let (server, id, url) = create(&t, ALICE).await;
    let url = url.expect("an upload URL");
    assert!(url.starts_with(&t.s3.as_ref().unwrap().endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");

    // A download waiting on the id wakes when the upload completes.
    let waiting = {
        let (http, url) = (
            t.http.clone(),
            t.url(&format!("{}?timeout_ms=20000", download_path(&server, &id))),
        );
        tokio::spawn(async move { http.get(url).bearer_auth(BOB).send().await.unwrap() })
    };
    let png = b"\x89PNG\r\n\x1a\n direct bytes";
    assert_eq!(put(&url, png, "image/png").await, 200);
    let resp = complete(&t, ALICE, &server, &id).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = waiting.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("direct.png")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), png);
    assert_eq!(t.counts().await.blobs, 1);
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);

    // Replayed, the completion answers the same; the id cannot be filled again.
    assert_eq!(complete(&t, ALICE, &server, &id).await.status(), 200);
    let again = t
        .http
        .put(t.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body("other")
        .send()
        .await
        .unwrap();
    assert_matrix_error(again, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
    assert_eq!(t.blob_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_bytes_are_stored_once() {
    let t = TestServer::start_with(direct).await;
    t.upload_ok(BOB, b"same bytes", Some("text/plain"), None)
        .await;
    let (server, id, url) = create(&t, ALICE).await;
    assert_eq!(put(&url.unwrap(), b"same bytes", "text/plain").await, 200);
    assert_eq!(t.blob_files().len(), 2);
    assert_eq!(complete(&t, ALICE, &server, &id).await.status(), 200);
    // The earlier blob wins; the object at the upload URL is removed.
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);
    assert_eq!(t.counts().await.blobs, 1);
    let resp = t.get(&download_path(&server, &id), Some(BOB)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"same bytes");
    assert_eq!(complete(&t, ALICE, &server, &id).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_completions_are_refused_and_leave_nothing() {
    let t = TestServer::start_with(|c| {
        direct(c);
        c.media.max_upload_size = bytesize::ByteSize::b(1000);
    })
    .await;
    let (server, id, url) = create(&t, ALICE).await;
    let url = url.unwrap();

    // Nothing uploaded yet.
    let missing = complete(&t, ALICE, &server, &id).await;
    assert_matrix_error(missing, 404, "M_NOT_FOUND").await;

    // Another user's completion touches nothing.
    assert_eq!(put(&url, &[1u8; 500], "text/plain").await, 200);
    let theirs = complete(&t, BOB, &server, &id).await;
    assert_matrix_error(theirs, 403, "M_FORBIDDEN").await;
    assert_eq!(t.blob_files().len(), 1);

    // Over the upload limit: refused, and the object goes.
    assert_eq!(put(&url, &[2u8; 1500], "text/plain").await, 200);
    let large = complete(&t, ALICE, &server, &id).await;
    assert_matrix_error(large, 413, "M_TOO_LARGE").await;
    assert!(t.wait_for_blob_files(0, false).await.is_empty());
    assert_eq!(t.counts().await.media, 0);

    // The id is still the owner's to fill, the plain way too.
    let plain = t
        .http
        .put(t.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body("the plain way")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    // Then bytes at the URL lost: a completion is refused and removes them.
    assert_eq!(put(&url, b"too late", "text/plain").await, 200);
    assert_eq!(t.blob_files().len(), 2);
    let late = complete(&t, ALICE, &server, &id).await;
    assert_matrix_error(late, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);
    let resp = t.get(&download_path(&server, &id), Some(BOB)).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"the plain way");

    // An id that was never reserved, or is not ours to name.
    let unknown = complete(&t, ALICE, &server, "NoSuchMediaId").await;
    assert_matrix_error(unknown, 404, "M_NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_url_is_signed_for_one_object_and_expires() {
    let t = TestServer::start_with(|c| {
        direct(c);
        let mxmedia::config::DatastoreConfig::S3(s3) = &mut c.datastores[0] else {
            panic!("an S3 datastore");
        };
        s3.direct_uploads.url_ttl = Duration::from_secs(2);
    })
    .await;
    let (_, _, url) = create(&t, ALICE).await;
    let url = url.unwrap();
    // Another key under the same signature is refused by the bucket.
    let parsed = url::Url::parse(&url).unwrap();
    let mut other = parsed.clone();
    let path = parsed.path().to_owned();
    let last = path.rsplit_once('/').unwrap().0;
    other.set_path(&format!("{last}/00000000000000000000000000000000"));
    assert_eq!(put(other.as_str(), b"elsewhere", "text/plain").await, 403);
    // So is a GET with the PUT's signature.
    let read = reqwest::get(url.as_str()).await.unwrap();
    assert_eq!(read.status(), 403);
    // And the URL stops working.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(put(&url, b"too late", "text/plain").await, 403);
    assert!(t.blob_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_never_completed_are_swept() {
    let t = TestServer::start_with(|c| {
        direct(c);
        c.media.orphan_grace = Duration::ZERO;
    })
    .await;
    let (_, _, url) = create(&t, ALICE).await;
    assert_eq!(put(&url.unwrap(), b"abandoned", "text/plain").await, 200);
    assert_eq!(t.blob_files().len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = t.server().state().media.sweep().await.unwrap();
    assert_eq!(report.orphan_blobs, 1);
    assert!(t.blob_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_direct_uploads_there_is_no_upload_url() {
    let t = TestServer::start().await;
    let (server, id, url) = create(&t, ALICE).await;
    assert!(url.is_none());
    let resp = complete(&t, ALICE, &server, &id).await;
    assert_matrix_error(resp, 400, "M_INVALID_PARAM").await;
}

/// Completions racing each other commit once and keep the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_completions_commit_once() {
    let t = TestServer::start_with(direct).await;
    let (server, id, url) = create(&t, ALICE).await;
    assert_eq!(put(&url.unwrap(), &[7u8; 300_000], "text/plain").await, 200);
    let completions = (0..8).map(|_| complete(&t, ALICE, &server, &id));
    for resp in futures::future::join_all(completions).await {
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.blob_files().len(), 1);
    let resp = t.get(&download_path(&server, &id), Some(BOB)).await;
    assert_eq!(resp.bytes().await.unwrap().len(), 300_000);
}

/// Bytes quarantined as such arrive quarantined through the upload URL too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_bytes_arrive_quarantined() {
    let t = TestServer::start_with(direct).await;
    let (s, first) = t.upload_ok(BOB, b"forbidden bytes", None, None).await;
    let quarantine = t
        .http
        .post(t.url(&format!("/_synapse/admin/v1/media/quarantine/{s}/{first}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(quarantine.status(), 200);
    let (server, id, url) = create(&t, ALICE).await;
    assert_eq!(
        put(&url.unwrap(), b"forbidden bytes", "text/plain").await,
        200
    );
    assert_eq!(complete(&t, ALICE, &server, &id).await.status(), 200);
    let resp = t.get(&download_path(&server, &id), Some(BOB)).await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    // Stored once: the upload URL's copy went.
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);
}
