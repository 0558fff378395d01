//! Async upload (spec v1.7, MSC2246): `/create`, `PUT /upload/{s}/{id}`,
//! waiting downloads, expiry and the per-user cap; and the token checks.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn create(t: &TestServer, token: &str) -> reqwest::Response {
    t.http
        .post(t.url("/_matrix/media/v1/create"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
}

async fn create_ok(t: &TestServer, token: &str) -> (String, String, u64) {
    let resp = create(t, token).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let (s, id) = split_mxc(body["content_uri"].as_str().unwrap());
    (s, id, body["unused_expires_at"].as_u64().unwrap())
}

async fn put(
    t: &TestServer,
    token: &str,
    s: &str,
    id: &str,
    body: &'static [u8],
) -> reqwest::Response {
    t.http
        .put(t.url(&format!("/_matrix/media/v3/upload/{s}/{id}")))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .query(&[("filename", "late.txt")])
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Spec 4.2 #11, #15: create gives an mxc and an expiry ~24 h ahead; PUT fills it once, then 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_put_then_download() {
    let t = TestServer::start().await;
    let (s, id, expires) = create_ok(&t, ALICE).await;
    assert_eq!(s, SERVER_NAME);
    let day = 24 * 3600 * 1000;
    assert!(expires > now_ms() + day - 60_000 && expires <= now_ms() + day + 60_000);

    let resp = put(&t, ALICE, &s, &id, b"async bytes").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({}));

    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(BOB),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "inline; filename=\"late.txt\""
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"async bytes");

    let resp = put(&t, ALICE, &s, &id, b"again").await;
    assert_matrix_error(resp, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
    assert_eq!(t.counts().await.pending, 0);
}

/// MSC2246's unstable prefix, for bridges built before spec v1.7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unstable_prefix_works_too() {
    let t = TestServer::start().await;
    let prefix = "/_matrix/media/unstable/fi.mau.msc2246";
    let resp = t
        .http
        .post(t.url(&format!("{prefix}/create")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let (s, id) = split_mxc(body["content_uri"].as_str().unwrap());
    let resp = t
        .http
        .put(t.url(&format!("{prefix}/upload/{s}/{id}")))
        .bearer_auth(ALICE)
        .body("unstable bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(BOB),
        )
        .await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"unstable bytes");
}

/// Spec 4.2 #13-14: another user's id is 403; unknown ids, other servers' ids are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_checks_owner_and_existence() {
    let t = TestServer::start().await;
    let (s, id, _) = create_ok(&t, ALICE).await;
    assert_matrix_error(put(&t, BOB, &s, &id, b"x").await, 403, "M_FORBIDDEN").await;
    assert_matrix_error(
        put(&t, ALICE, &s, "neverCreated123", b"x").await,
        404,
        "M_NOT_FOUND",
    )
    .await;
    assert_matrix_error(
        put(&t, ALICE, "other.example", &id, b"x").await,
        404,
        "M_NOT_FOUND",
    )
    .await;
    // An uploaded (not reserved) id cannot be PUT to either.
    let (s2, id2) = t.upload_ok(ALICE, b"done", None, None).await;
    assert_matrix_error(
        put(&t, ALICE, &s2, &id2, b"x").await,
        409,
        "M_CANNOT_OVERWRITE_MEDIA",
    )
    .await;
    // The rightful owner still can, and nothing was stored by the refused attempts.
    assert_eq!(put(&t, ALICE, &s, &id, b"mine").await.status(), 200);
    assert_eq!(t.counts().await.media, 2);
}

/// Spec 4.2 #14: an expired id is 404 for PUT and for downloads; the sweep removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_ids_are_not_found() {
    let t = TestServer::start_with(|c| c.media.pending_expiry = Duration::from_millis(300)).await;
    let (s, id, _) = create_ok(&t, ALICE).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_matrix_error(put(&t, ALICE, &s, &id, b"x").await, 404, "M_NOT_FOUND").await;
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    let report = t.server().state().media.sweep().await.unwrap();
    assert_eq!(report.expired_pending, 1);
    assert_eq!(t.counts().await.pending, 0);
}

/// Spec 4.2 #12 and 4.8 #53: too many pending ids -> 429 M_LIMIT_EXCEEDED with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pending_uploads_are_rate_limited() {
    let t = TestServer::start_with(|c| c.media.max_pending_per_user = 2).await;
    create_ok(&t, ALICE).await;
    let (s, id, _) = create_ok(&t, ALICE).await;
    let resp = create(&t, ALICE).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after > 3600,
        "the oldest id expires in ~24 h: {retry_after}"
    );
    let body = assert_matrix_error(resp, 429, "M_LIMIT_EXCEEDED").await;
    assert!(body["retry_after_ms"].as_u64().unwrap() > 3_600_000);
    // Other users are not affected; using an id frees a slot.
    create_ok(&t, BOB).await;
    assert_eq!(put(&t, ALICE, &s, &id, b"x").await.status(), 200);
    create_ok(&t, ALICE).await;
}

/// Spec 4.2 #16-17: a download of a pending id waits up to timeout_ms (capped), then 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_media_download_times_out_with_not_yet_uploaded() {
    let t =
        TestServer::start_with(|c| c.media.max_download_wait = Duration::from_millis(300)).await;
    let (s, id, _) = create_ok(&t, ALICE).await;
    let path = format!("/_matrix/client/v1/media/download/{s}/{id}");
    let resp = t.get(&format!("{path}?timeout_ms=100"), Some(ALICE)).await;
    assert_matrix_error(resp, 504, "M_NOT_YET_UPLOADED").await;
    // Far above the cap: still answers (after the cap, not after ten days).
    let resp = t
        .get(&format!("{path}?timeout_ms=864000000"), Some(ALICE))
        .await;
    assert_matrix_error(resp, 504, "M_NOT_YET_UPLOADED").await;
    let resp = t.get(&format!("{path}?timeout_ms=abc"), Some(ALICE)).await;
    assert_matrix_error(resp, 400, "M_INVALID_PARAM").await;
}

/// Spec 4.2 #16: when the bytes arrive during the wait, the waiting download gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_download_returns_once_the_upload_arrives() {
    let t = TestServer::start().await;
    let (s, id, _) = create_ok(&t, ALICE).await;
    let url = t.url(&format!(
        "/_matrix/client/v1/media/download/{s}/{id}?timeout_ms=20000"
    ));
    let http = t.http.clone();
    let waiter = tokio::spawn(async move { http.get(url).bearer_auth(BOB).send().await.unwrap() });
    // The download is waiting on the server before the upload arrives.
    t.wait_for_metric("mxmedia_downloads_waiting", "", 1.0)
        .await;
    assert!(!waiter.is_finished());
    assert_eq!(put(&t, ALICE, &s, &id, b"arrived").await.status(), 200);
    let resp = waiter.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"arrived");
}

/// `/create` takes `{}` or an empty body, and refuses a body that is not a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_body_is_checked() {
    let t = TestServer::start().await;
    let post = |body: &'static str| {
        t.http
            .post(t.url("/_matrix/media/v1/create"))
            .bearer_auth(ALICE)
            .body(body)
            .send()
    };
    assert_eq!(post("").await.unwrap().status(), 200);
    assert_eq!(post("{}").await.unwrap().status(), 200);
    assert_matrix_error(post("not json").await.unwrap(), 400, "M_NOT_JSON").await;
    assert_matrix_error(post("[1]").await.unwrap(), 400, "M_BAD_JSON").await;
    assert_matrix_error(
        t.http
            .post(t.url("/_matrix/media/v1/create"))
            .body("{}")
            .send()
            .await
            .unwrap(),
        401,
        "M_MISSING_TOKEN",
    )
    .await;
}

/// Spec 1.1 / 4.2 #10: missing token 401 M_MISSING_TOKEN, unknown token 401 M_UNKNOWN_TOKEN, on every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_checked() {
    let t = TestServer::start().await;
    let (s, id) = t.upload_ok(ALICE, b"x", None, None).await;
    let endpoints = [
        (reqwest::Method::POST, "/_matrix/media/v3/upload".to_owned()),
        (reqwest::Method::POST, "/_matrix/media/v1/create".to_owned()),
        (
            reqwest::Method::PUT,
            format!("/_matrix/media/v3/upload/{s}/{id}"),
        ),
        (
            reqwest::Method::GET,
            format!("/_matrix/client/v1/media/download/{s}/{id}"),
        ),
        (
            reqwest::Method::GET,
            format!("/_matrix/client/v1/media/download/{s}/{id}/f.txt"),
        ),
        (
            reqwest::Method::GET,
            "/_matrix/client/v1/media/config".to_owned(),
        ),
        (reqwest::Method::GET, "/_matrix/media/v3/config".to_owned()),
    ];
    for (method, path) in endpoints {
        let resp = t
            .http
            .request(method.clone(), t.url(&path))
            .send()
            .await
            .unwrap();
        assert_matrix_error(resp, 401, "M_MISSING_TOKEN").await;
        let resp = t
            .http
            .request(method.clone(), t.url(&path))
            .bearer_auth("bogus")
            .send()
            .await
            .unwrap();
        assert_matrix_error(resp, 401, "M_UNKNOWN_TOKEN").await;
        let resp = t
            .http
            .request(method, t.url(&path))
            .header("authorization", "Basic abc")
            .send()
            .await
            .unwrap();
        assert_matrix_error(resp, 401, "M_MISSING_TOKEN").await;
    }
}

/// Spec 1.1 (v1.19): `?access_token=` works, and can be switched off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_access_token_is_accepted_unless_disabled() {
    let t = TestServer::start().await;
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/config?access_token={ALICE}"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let t = TestServer::start_with(|c| c.homeserver.accept_query_token = false).await;
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/config?access_token={ALICE}"),
            None,
        )
        .await;
    assert_matrix_error(resp, 401, "M_MISSING_TOKEN").await;
}

/// Spec v1.12 (MSC4189): guests may download; upload, create and config are not for guests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_download_but_do_not_upload() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"for guests", Some("text/plain"), None)
        .await;
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(GUEST),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_matrix_error(
        t.upload(GUEST, "x", None, None).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    )
    .await;
    assert_matrix_error(create(&t, GUEST).await, 403, "M_GUEST_ACCESS_FORBIDDEN").await;
}

/// Appservices act as their users through `?user_id=`: attribution and the E3 same-user rule follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appservice_user_id_is_passed_through() {
    let t = TestServer::start().await;
    let as_user = |path: &str, user: &str| {
        format!(
            "{}?user_id={}",
            t.url(path),
            user.replace('@', "%40").replace(':', "%3A")
        )
    };
    let resp = t
        .http
        .post(as_user(
            "/_matrix/media/v1/create",
            "@bridge_alice:test.local",
        ))
        .bearer_auth(APPSERVICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let (s, id) = split_mxc(body["content_uri"].as_str().unwrap());
    let upload_path = format!("/_matrix/media/v3/upload/{s}/{id}");
    // The appservice's own user is a different user: 403.
    let resp = t
        .http
        .put(t.url(&upload_path))
        .bearer_auth(APPSERVICE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 403, "M_FORBIDDEN").await;
    let resp = t
        .http
        .put(as_user(&upload_path, "@bridge_alice:test.local"))
        .bearer_auth(APPSERVICE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Outside the namespace, the homeserver's refusal is relayed.
    let resp = t
        .http
        .post(as_user("/_matrix/media/v3/upload", "@alice:test.local"))
        .bearer_auth(APPSERVICE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 403, "M_FORBIDDEN").await;
}

/// Token answers are cached (valid and rejected), and a logged-out token is refused once its entry expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_checks_are_cached_both_ways() {
    let t =
        TestServer::start_with(|c| c.homeserver.token_cache_ttl = Duration::from_millis(300)).await;
    t.hs.add_user("carol_token", "@carol:test.local");
    for _ in 0..5 {
        assert_eq!(
            t.get("/_matrix/client/v1/media/config", Some("carol_token"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(t.hs.calls(), 1);
    for _ in 0..5 {
        assert_eq!(
            t.get("/_matrix/client/v1/media/config", Some("nope"))
                .await
                .status(),
            401
        );
    }
    assert_eq!(t.hs.calls(), 2);
    t.hs.revoke("carol_token");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = t
        .get("/_matrix/client/v1/media/config", Some("carol_token"))
        .await;
    assert_matrix_error(resp, 401, "M_UNKNOWN_TOKEN").await;
}

/// Revocation with the default cache (5 s, re-checked in the background
/// after 2 s): a token logged out while its client keeps using it is refused
/// within 5 s, and the homeserver sees about one check per 2 s of traffic,
/// not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_tokens_are_refused_within_seconds() {
    let t = TestServer::start().await;
    t.hs.add_user("dave_token", "@dave:test.local");
    let start = std::time::Instant::now();
    let mut requests = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let resp = t
            .get("/_matrix/client/v1/media/config", Some("dave_token"))
            .await;
        assert_eq!(resp.status(), 200);
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = t.hs.calls();
    println!("{calls} homeserver checks for {requests} requests in 3 s");
    assert!(
        (1..=3).contains(&calls),
        "{calls} checks for {requests} requests"
    );
    t.hs.revoke("dave_token");
    let revoked = std::time::Instant::now();
    loop {
        let status = t
            .get("/_matrix/client/v1/media/config", Some("dave_token"))
            .await
            .status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "still accepted 10 s after logout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = revoked.elapsed();
    println!("refused {took:?} after logout");
    // The bound is the cache's design (5 s), with room for a loaded machine.
    assert!(took < Duration::from_secs(6), "refused only after {took:?}");
}

/// A homeserver that is down or broken gives 503/502, never 401; a locked account is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_failures_are_gateway_errors() {
    let dead = dead_url().await;
    let t = TestServer::start_with(|c| c.homeserver.url = dead.parse().unwrap()).await;
    let resp = t.get("/_matrix/client/v1/media/config", Some(ALICE)).await;
    assert!(resp.headers().contains_key("retry-after"));
    let body = assert_matrix_error(resp, 503, "M_UNKNOWN").await;
    assert!(
        !body["error"].as_str().unwrap().contains("127.0.0.1"),
        "no internals: {body}"
    );

    let t = TestServer::start().await;
    assert_matrix_error(
        t.get("/_matrix/client/v1/media/config", Some(BROKEN)).await,
        502,
        "M_UNKNOWN",
    )
    .await;
    let body = assert_matrix_error(
        t.get("/_matrix/client/v1/media/config", Some(LOCKED)).await,
        401,
        "M_USER_LOCKED",
    )
    .await;
    assert_eq!(body["soft_logout"], true);
}

/// 100 concurrent uploads of one content: 100 media, one blob, one file; of distinct contents: 100 blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_deduplicate_with_correct_counts() {
    let t = TestServer::start().await;
    let same = futures::future::join_all(
        (0..100).map(|_| t.upload(ALICE, vec![42u8; 100_000], None, None)),
    )
    .await;
    let mut ids = std::collections::HashSet::new();
    for resp in same {
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        ids.insert(body["content_uri"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 100);
    let counts = t.counts().await;
    assert_eq!((counts.media, counts.blobs), (100, 1));
    // Surplus copies are deleted in the background; wait for that to settle.
    assert_eq!(t.wait_for_blob_files(1, false).await.len(), 1);

    let distinct = futures::future::join_all(
        (0..100u32).map(|i| t.upload(BOB, i.to_le_bytes().repeat(1000), None, None)),
    )
    .await;
    assert!(distinct.iter().all(|r| r.status() == 200));
    let counts = t.counts().await;
    assert_eq!((counts.media, counts.blobs), (200, 101));
    assert_eq!(t.blob_files().len(), 101);
    // Every media id serves its own bytes.
    let (s, id) = split_mxc(ids.iter().next().unwrap());
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        vec![42u8; 100_000].as_slice()
    );
}
