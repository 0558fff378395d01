//! Upload quotas by class of user: exact under concurrent uploads (zero
//! overshoot), refused before the body is read when the declared size
//! says so and cut off while it streams otherwise, with Synapse's
//! `media_upload_limits` answer (400 `M_RESOURCE_LIMIT_EXCEEDED`); async
//! uploads hold a file from `/create`; bridges get their own class; the
//! usage endpoint (MSC4034) and `m.upload.size` follow the class.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytesize::ByteSize;
use common::*;
use mxmedia::config::{Limits, UserClass};
use serde_json::Value;

fn limited(c: &mut mxmedia::config::Config) {
    c.quotas.default = Limits {
        max_bytes: Some(ByteSize::b(1000)),
        max_files: Some(50),
        ..Limits::default()
    };
    c.quotas.classes = vec![UserClass {
        name: "bridges".into(),
        users: vec![
            "@bridge_.*:test\\.local".into(),
            "@bridgebot:test\\.local".into(),
        ],
        quota: Limits {
            max_upload_size: Some(ByteSize::kib(64)),
            ..Limits::default()
        },
        rate_limited: false,
    }];
}

async fn usage(t: &TestServer, token: &str) -> Value {
    let resp = t
        .get(
            "/_matrix/client/unstable/org.matrix.msc4034/media/usage",
            Some(token),
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// 40 uploads of 100 bytes at once against a 1000-byte quota: exactly ten
/// are stored, the rest refused as Synapse refuses, and the datastore holds
/// exactly ten objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_never_overshoot_the_quota() {
    let t = TestServer::start_with(limited).await;
    let uploads = (0..40u8).map(|i| {
        let t = &t;
        async move {
            t.upload(ALICE, vec![i; 100], Some("application/octet-stream"), None)
                .await
        }
    });
    let mut stored = 0;
    for resp in futures::future::join_all(uploads).await {
        match resp.status().as_u16() {
            200 => stored += 1,
            _ => {
                let body = assert_matrix_error(resp, 400, "M_RESOURCE_LIMIT_EXCEEDED").await;
                assert_eq!(body["error"], "Media upload limit exceeded");
            }
        }
    }
    println!("40 concurrent uploads of 100 bytes, quota 1000 bytes: {stored} stored");
    assert_eq!(
        stored, 10,
        "zero overshoot, and no refusal while there was room"
    );
    let used = usage(&t, ALICE).await;
    assert_eq!(
        (
            used["m.storage.used"].as_u64(),
            used["m.storage.files"].as_u64()
        ),
        (Some(1000), Some(10))
    );
    assert_eq!(
        t.wait_for_blob_files(10, false).await.len(),
        10,
        "refused uploads leave nothing"
    );
    assert_eq!(
        t.metric("mxmedia_quota_refusals_total", "class=\"default\""),
        30.0
    );
    // Bob's quota is his own.
    assert_eq!(
        t.upload(BOB, vec![1u8; 100], None, None).await.status(),
        200
    );
}

/// The declared size is checked before a byte is read; a body without a
/// declared size is cut off where the quota's room ends; async uploads hold
/// a file from `/create`; the bridge class is unlimited but has its own
/// upload size, which the config endpoint advertises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_checked_early_streamed_and_by_class() {
    let t = TestServer::start_with(|c| {
        limited(c);
        c.quotas.default.max_files = Some(3);
    })
    .await;
    t.upload_ok(ALICE, &[7u8; 600], None, None).await;
    let declared = t.upload(ALICE, vec![1u8; 500], None, None).await;
    assert_matrix_error(declared, 400, "M_RESOURCE_LIMIT_EXCEEDED").await;
    // Chunked, no declared length: cut off after the 400 bytes of room.
    let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![2u8; 100])));
    let streamed = t
        .upload(ALICE, reqwest::Body::wrap_stream(chunks), None, None)
        .await;
    assert_matrix_error(streamed, 400, "M_RESOURCE_LIMIT_EXCEEDED").await;
    assert_eq!(usage(&t, ALICE).await["m.storage.used"], 600);

    // Two reservations fill the three files.
    let create = || {
        t.http
            .post(t.url("/_matrix/media/v1/create"))
            .bearer_auth(ALICE)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(create().await.unwrap().status(), 200);
    }
    let refused = create().await.unwrap();
    assert_matrix_error(refused, 400, "M_RESOURCE_LIMIT_EXCEEDED").await;
    let upload = t.upload(ALICE, vec![3u8; 10], None, None).await;
    assert_matrix_error(upload, 400, "M_RESOURCE_LIMIT_EXCEEDED").await;

    // Bridges: no quota, their own upload size.
    let bridge = |path: &str| format!("{path}?user_id=@bridge_x:test.local");
    for i in 0..5u8 {
        let resp = t
            .http
            .post(t.url(&bridge("/_matrix/media/v3/upload")))
            .bearer_auth(APPSERVICE)
            .body(vec![i; 900])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let big = t
        .http
        .post(t.url(&bridge("/_matrix/media/v3/upload")))
        .bearer_auth(APPSERVICE)
        .body(vec![0u8; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_matrix_error(big, 413, "M_TOO_LARGE").await;
    let config: Value = t
        .http
        .get(t.url(&bridge("/_matrix/client/v1/media/config")))
        .bearer_auth(APPSERVICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["m.upload.size"], 64 * 1024);
    let alice: Value = t
        .get(
            "/_matrix/media/unstable/org.matrix.msc4034/config",
            Some(ALICE),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alice["m.storage.size"], 1000);
    assert_eq!(alice["m.storage.max_files"], 3);
    assert_eq!(alice["m.upload.size"], 100 * 1024 * 1024);
}
