//! Synapse's admin media API served by mxmedia: who may call it, media
//! info, quarantine on every route, protection, and deletion that frees the
//! datastore. Runs on the local datastore here and on S3 through
//! `s3_contract.rs`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;

use common::*;
use serde_json::Value;

fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, shade])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

const ADMIN_MEDIA: &str = "/_synapse/admin/v1/media";

async fn admin_call(
    t: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let post = method == reqwest::Method::POST;
    let mut req = t.http.request(method, t.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if post {
        req = req.json(&serde_json::json!({}));
    }
    req.send().await.unwrap()
}

/// `media_info` of `s`/`id`, as the admin sees it.
async fn media_info(t: &TestServer, s: &str, id: &str) -> Value {
    let path = format!("{ADMIN_MEDIA}/{s}/{id}");
    let resp = admin_call(t, reqwest::Method::GET, &path, Some(ADMIN)).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// A `POST` as the admin, which must succeed with `{}`.
async fn admin_post(t: &TestServer, path: &str) {
    let resp = admin_call(t, reqwest::Method::POST, path, Some(ADMIN)).await;
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({}));
}

/// Every path of the admin media API this server answers, for one media.
fn admin_paths(s: &str, id: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    vec![
        (Method::GET, format!("{ADMIN_MEDIA}/{s}/{id}")),
        (Method::DELETE, format!("{ADMIN_MEDIA}/{s}/{id}")),
        (Method::POST, format!("{ADMIN_MEDIA}/quarantine/{s}/{id}")),
        (Method::POST, format!("{ADMIN_MEDIA}/unquarantine/{s}/{id}")),
        (Method::POST, format!("{ADMIN_MEDIA}/protect/{id}")),
        (Method::POST, format!("{ADMIN_MEDIA}/unprotect/{id}")),
    ]
}

/// Non-admins get 403 `M_FORBIDDEN` on every admin path and change
/// nothing; no token is 401; an unknown one 401 `M_UNKNOWN_TOKEN`. Users
/// named in `admin.users` are admins without the homeserver's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_reach_the_admin_api() {
    let t = TestServer::start_with(|c| {
        c.admin.users = vec!["@bob:test.local".try_into().unwrap()];
    })
    .await;
    let (s, id) = t.upload_ok(ALICE, b"mine", Some("text/plain"), None).await;
    for (method, path) in admin_paths(&s, &id) {
        assert_matrix_error(
            admin_call(&t, method.clone(), &path, Some(ALICE)).await,
            403,
            "M_FORBIDDEN",
        )
        .await;
        assert_matrix_error(
            admin_call(&t, method.clone(), &path, Some(GUEST)).await,
            403,
            "M_FORBIDDEN",
        )
        .await;
        assert_matrix_error(
            admin_call(&t, method.clone(), &path, None).await,
            401,
            "M_MISSING_TOKEN",
        )
        .await;
        assert_matrix_error(
            admin_call(&t, method, &path, Some("nobody")).await,
            401,
            "M_UNKNOWN_TOKEN",
        )
        .await;
    }
    // Nothing changed: still there, not quarantined.
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Bob is an admin by configuration, the admin token by the homeserver.
    for token in [BOB, ADMIN] {
        let resp = admin_call(
            &t,
            reqwest::Method::GET,
            &format!("{ADMIN_MEDIA}/{s}/{id}"),
            Some(token),
        )
        .await;
        assert_eq!(resp.status(), 200, "{token}");
    }
    // The homeserver's verdict is cached: repeated calls do not ask again.
    let asked = t.hs.admin_calls();
    for _ in 0..5 {
        admin_call(
            &t,
            reqwest::Method::GET,
            &format!("{ADMIN_MEDIA}/{s}/{id}"),
            Some(ADMIN),
        )
        .await;
    }
    assert_eq!(t.hs.admin_calls(), asked);
}

/// Media info answers Synapse's `media_info` fields; unknown media is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_info_has_synapses_fields() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"hello admin", Some("text/plain"), Some("note.txt"))
        .await;
    let resp = admin_call(
        &t,
        reqwest::Method::GET,
        &format!("{ADMIN_MEDIA}/{s}/{id}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let info = &body["media_info"];
    assert_eq!(info["media_id"], id.as_str());
    assert_eq!(info["media_type"], "text/plain");
    assert_eq!(info["media_length"], 11);
    assert_eq!(info["upload_name"], "note.txt");
    assert_eq!(info["user_id"], "@alice:test.local");
    assert_eq!(info["quarantined_by"], Value::Null);
    assert_eq!(info["safe_from_quarantine"], false);
    assert_eq!(info["sha256"], hex_sha256(b"hello admin"));
    assert!(info["created_ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(info["authenticated"].is_boolean());
    let missing = admin_call(
        &t,
        reqwest::Method::GET,
        &format!("{ADMIN_MEDIA}/{s}/nosuchmedia"),
        Some(ADMIN),
    )
    .await;
    assert_matrix_error(missing, 404, "M_NOT_FOUND").await;
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Quarantined media is 404 on every route that serves it (v1 and legacy
/// download and thumbnail, HEAD and Range too) for every user, the
/// uploader included; unquarantine brings it back. Info shows who did it;
/// protecting and unprotecting show in `safe_from_quarantine`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_hides_media_on_every_route() {
    let t = TestServer::start_with(|c| c.media.freeze_unauthenticated = false).await;
    let picture = jpeg(640, 480, 10);
    let (s, id) = t
        .upload_ok(ALICE, &picture, Some("image/jpeg"), Some("p.jpg"))
        .await;
    let routes = [
        (
            format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        ),
        (
            format!("/_matrix/client/v1/media/download/{s}/{id}/x.jpg"),
            Some(BOB),
        ),
        (format!("/_matrix/media/v3/download/{s}/{id}"), None),
        (format!("/_matrix/media/r0/download/{s}/{id}"), None),
        (
            format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width=96&height=96&method=crop"),
            Some(ALICE),
        ),
        (
            format!("/_matrix/media/v3/thumbnail/{s}/{id}?width=96&height=96"),
            None,
        ),
    ];
    for (path, token) in &routes {
        assert_eq!(
            t.get(path, *token).await.status(),
            200,
            "{path} before quarantine"
        );
    }
    let resp = admin_call(
        &t,
        reqwest::Method::POST,
        &format!("{ADMIN_MEDIA}/quarantine/{s}/{id}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({}));
    for (path, token) in &routes {
        assert_matrix_error(t.get(path, *token).await, 404, "M_NOT_FOUND").await;
    }
    let download = format!("/_matrix/client/v1/media/download/{s}/{id}");
    let head = t
        .http
        .head(t.url(&download))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    let ranged = t
        .http
        .get(t.url(&download))
        .bearer_auth(ALICE)
        .header("Range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 404);
    let info = media_info(&t, &s, &id).await;
    assert_eq!(info["media_info"]["quarantined_by"], "@admin:test.local");
    // Synapse's bypass: for admins only, and only when asked.
    let bypass = format!("{download}?admin_unsafely_bypass_quarantine=true");
    assert_matrix_error(t.get(&bypass, Some(ALICE)).await, 404, "M_NOT_FOUND").await;
    assert_matrix_error(t.get(&download, Some(ADMIN)).await, 404, "M_NOT_FOUND").await;
    let resp = t.get(&bypass, Some(ADMIN)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), picture.as_slice());

    admin_post(&t, &format!("{ADMIN_MEDIA}/unquarantine/{s}/{id}")).await;
    for (path, token) in &routes {
        assert_eq!(
            t.get(path, *token).await.status(),
            200,
            "{path} after unquarantine"
        );
    }
    admin_post(&t, &format!("{ADMIN_MEDIA}/protect/{id}")).await;
    let info = media_info(&t, &s, &id).await;
    assert_eq!(info["media_info"]["safe_from_quarantine"], true);
    assert_eq!(info["media_info"]["quarantined_by"], Value::Null);
    admin_post(&t, &format!("{ADMIN_MEDIA}/unprotect/{id}")).await;
    let info = media_info(&t, &s, &id).await;
    assert_eq!(info["media_info"]["safe_from_quarantine"], false);
    assert!(
        t.metric(
            "mxmedia_moderation_actions_total",
            "action=\"quarantine\",found=\"true\""
        ) >= 1.0
    );
}

/// Deleting media removes its record and thumbnails, and its object once no
/// other media shares it; the id stays dead; only local media is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_frees_the_datastore() {
    let t = TestServer::start().await;
    let picture = jpeg(800, 600, 20);
    let (s, first) = t.upload_ok(ALICE, &picture, Some("image/jpeg"), None).await;
    let (_, copy) = t.upload_ok(BOB, &picture, Some("image/jpeg"), None).await;
    // A thumbnail of the first, made on request, has an object of its own.
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{s}/{first}?width=96&height=96&method=crop");
    assert_eq!(t.get(&thumb, Some(ALICE)).await.status(), 200);
    let before = t.wait_for_blob_files(2, true).await.len();

    let resp = admin_call(
        &t,
        reqwest::Method::DELETE,
        &format!("{ADMIN_MEDIA}/{s}/{first}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"deleted_media": [first.as_str()], "total": 1})
    );
    // Gone on every route; the copy with the same bytes is untouched.
    assert_matrix_error(
        t.get(
            &format!("/_matrix/client/v1/media/download/{s}/{first}"),
            Some(ALICE),
        )
        .await,
        404,
        "M_NOT_FOUND",
    )
    .await;
    assert_matrix_error(t.get(&thumb, Some(ALICE)).await, 404, "M_NOT_FOUND").await;
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{copy}"),
            Some(BOB),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), picture.as_slice());
    // Only the thumbnail's object was freed: the picture is still referenced.
    assert_eq!(
        t.wait_for_blob_files(before - 1, false).await.len(),
        before - 1
    );

    // The last reference goes: so does the object.
    let resp = admin_call(
        &t,
        reqwest::Method::DELETE,
        &format!("{ADMIN_MEDIA}/{s}/{copy}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        t.wait_for_blob_files(before - 2, false).await.len(),
        before - 2
    );
    assert_eq!(t.counts().await.media, 0);
    assert_eq!(t.counts().await.blobs, 0);

    // Deleting again, or unknown media, is 404; remote media is refused.
    let again = admin_call(
        &t,
        reqwest::Method::DELETE,
        &format!("{ADMIN_MEDIA}/{s}/{first}"),
        Some(ADMIN),
    )
    .await;
    assert_matrix_error(again, 404, "M_NOT_FOUND").await;
    let remote = admin_call(
        &t,
        reqwest::Method::DELETE,
        &format!("{ADMIN_MEDIA}/elsewhere.example/abcdefgh"),
        Some(ADMIN),
    )
    .await;
    let body = assert_matrix_error(remote, 400, "M_UNKNOWN").await;
    assert_eq!(body["error"], "Can only delete local media");
    // The sweep has nothing left to do.
    let report = t.server().state().media.sweep().await.unwrap();
    assert_eq!(report.unlinked_objects, 0);
}
