//! Rate limits: token buckets per user and per client address (as
//! resolved through `trusted_proxies`) for uploads, downloads, thumbnail
//! generation and remote fetches; 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms` and `Retry-After`; exempt classes pass; refusals are
//! counted by class and family, never by user.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mxmedia::config::{Rate, UserClass};

fn limited(c: &mut mxmedia::config::Config) {
    c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    c.rate_limits.uploads = Some(Rate {
        per_second: 0.01,
        burst: 3,
    });
    c.rate_limits.downloads = Some(Rate {
        per_second: 0.01,
        burst: 5,
    });
    c.rate_limits.thumbnails = Some(Rate {
        per_second: 0.01,
        burst: 1,
    });
    c.quotas.classes = vec![UserClass {
        name: "bridges".into(),
        users: vec!["@bridge_.*:test\\.local".into()],
        quota: Default::default(),
        rate_limited: false,
    }];
    c.media.freeze_unauthenticated = false;
    c.thumbnails.pregenerate = false;
}

async fn upload_from(t: &TestServer, token: &str, address: &str, query: &str) -> reqwest::Response {
    t.http
        .post(t.url(&format!("/_matrix/media/v3/upload{query}")))
        .bearer_auth(token)
        .header("X-Forwarded-For", address)
        .body(format!("from {address} {}", rand::random::<u64>()))
        .send()
        .await
        .unwrap()
}

async fn get_from(t: &TestServer, path: &str, address: &str) -> reqwest::Response {
    t.http
        .get(t.url(path))
        .bearer_auth(ALICE)
        .header("X-Forwarded-For", address)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_limited_per_user_and_per_address() {
    let t = TestServer::start_with(limited).await;
    for _ in 0..3 {
        assert_eq!(upload_from(&t, ALICE, "10.0.0.1", "").await.status(), 200);
    }
    let refused = upload_from(&t, ALICE, "10.0.0.1", "").await;
    let retry = refused.headers().get("retry-after").cloned();
    let body = assert_matrix_error(refused, 429, "M_LIMIT_EXCEEDED").await;
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000, "{body}");
    assert!(retry.is_some(), "Retry-After is sent");
    // Alice from elsewhere: her own bucket is empty.
    let moved = upload_from(&t, ALICE, "10.0.0.2", "").await;
    assert_matrix_error(moved, 429, "M_LIMIT_EXCEEDED").await;
    // Bob from Alice's address: the address's bucket is empty.
    let shared = upload_from(&t, BOB, "10.0.0.1", "").await;
    assert_matrix_error(shared, 429, "M_LIMIT_EXCEEDED").await;
    // Bob from his own address.
    assert_eq!(upload_from(&t, BOB, "10.0.0.3", "").await.status(), 200);
    // A bridge (not rate limited) from the exhausted address.
    for _ in 0..10 {
        let resp = upload_from(&t, APPSERVICE, "10.0.0.1", "?user_id=@bridge_a:test.local").await;
        assert_eq!(resp.status(), 200);
    }
    assert!(
        t.metric(
            "mxmedia_rate_limited_total",
            "class=\"default\",family=\"uploads\""
        ) >= 2.0
    );
    assert!(
        t.metric(
            "mxmedia_rate_limited_total",
            "class=\"address\",family=\"uploads\""
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_and_thumbnail_generation_are_limited() {
    let t = TestServer::start_with(limited).await;
    let picture = picture(300, 200, 1, image::ImageFormat::Png);
    let (s, id) = t.upload_ok(BOB, &picture, Some("image/png"), None).await;
    let legacy = format!("/_matrix/media/v3/download/{s}/{id}");
    let anonymous = |address: &'static str| {
        t.http
            .get(t.url(&legacy))
            .header("X-Forwarded-For", address)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(anonymous("10.1.0.1").await.unwrap().status(), 200);
    }
    let resp = anonymous("10.1.0.1").await.unwrap();
    assert_matrix_error(resp, 429, "M_LIMIT_EXCEEDED").await;
    // Another address downloads on.
    assert_eq!(anonymous("10.1.0.2").await.unwrap().status(), 200);

    // One thumbnail generation; the stored one is served again; a second
    // size would be a second generation.
    let thumb = |w: u32| {
        format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width={w}&height={w}&method=crop")
    };
    assert_eq!(get_from(&t, &thumb(32), "10.2.0.1").await.status(), 200);
    assert_eq!(get_from(&t, &thumb(32), "10.2.0.2").await.status(), 200);
    let second = get_from(&t, &thumb(96), "10.2.0.3").await;
    assert_matrix_error(second, 429, "M_LIMIT_EXCEEDED").await;
    assert!(
        t.metric(
            "mxmedia_rate_limited_total",
            "class=\"default\",family=\"thumbnails\""
        ) >= 1.0
    );
}
