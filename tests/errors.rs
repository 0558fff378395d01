//! Error contract: every failure is a Matrix error with the spec's status,
//! unknown routes and wrong methods speak M_UNRECOGNIZED, OPTIONS runs no
//! logic, and every route in the spec's OpenAPI files is routed.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

/// Spec 4.8 #54: unknown paths under every media prefix -> 404 M_UNRECOGNIZED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_unrecognized() {
    let t = TestServer::start().await;
    for path in [
        "/_matrix/media/v3/nope",
        "/_matrix/media/v9/upload",
        "/_matrix/client/v1/media/nope",
        "/_matrix/federation/v1/media/nope/x",
        "/_matrix/client/v1/media/download/test.local",
        "/",
    ] {
        assert_matrix_error(t.get(path, Some(ALICE)).await, 404, "M_UNRECOGNIZED").await;
    }
}

/// Spec 4.8 #54: a known path with the wrong method -> 405 M_UNRECOGNIZED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_unrecognized() {
    let t = TestServer::start().await;
    let cases = [
        (reqwest::Method::GET, "/_matrix/media/v3/upload"),
        (reqwest::Method::PUT, "/_matrix/media/v3/upload"),
        (reqwest::Method::GET, "/_matrix/media/v1/create"),
        (
            reqwest::Method::POST,
            "/_matrix/media/v3/upload/test.local/abc",
        ),
        (
            reqwest::Method::DELETE,
            "/_matrix/client/v1/media/download/test.local/abc",
        ),
        (
            reqwest::Method::POST,
            "/_matrix/media/v3/download/test.local/abc",
        ),
        (reqwest::Method::POST, "/_matrix/client/v1/media/config"),
    ];
    for (method, path) in cases {
        let resp = t
            .http
            .request(method, t.url(path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_matrix_error(resp, 405, "M_UNRECOGNIZED").await;
    }
}

/// Spec 1.4 / 4.8 #50-51: OPTIONS answers 2xx with CORS and runs no endpoint logic (no auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_answers_cors_without_logic() {
    let t = TestServer::start().await;
    for path in [
        "/_matrix/media/v3/upload",
        "/_matrix/client/v1/media/download/test.local/abc",
        "/_matrix/media/v1/create",
        "/anything",
    ] {
        let resp = t
            .http
            .request(reqwest::Method::OPTIONS, t.url(path))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        assert!(
            resp.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
        assert!(
            resp.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("OPTIONS")
        );
    }
    assert_eq!(t.hs.calls(), 0, "OPTIONS must not check tokens");
    // CORS on errors too.
    let resp = t.get("/_matrix/media/v3/nope", None).await;
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

/// Spec 4.2 #8: a declared length over the limit is 413 before any byte is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_oversized_upload_is_refused() {
    let t = TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::kib(1)).await;
    let resp = t.upload(ALICE, vec![0u8; 1025], None, None).await;
    assert_matrix_error(resp, 413, "M_TOO_LARGE").await;
    let resp = t.upload(ALICE, vec![0u8; 1024], None, None).await;
    assert_eq!(resp.status(), 200);
}

/// Spec 4.2 #8: a chunked upload that grows past the limit is cut off with 413; nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_oversized_upload_is_cut_off() {
    let t = TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::kib(64)).await;
    let (text, _) = raw_chunked_upload(
        t.addr(),
        "POST /_matrix/media/v3/upload",
        ALICE,
        1024 * 1024,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"errcode\":\"M_TOO_LARGE\""), "{text}");
    let resp = t
        .http
        .post(t.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let (s, id) = split_mxc(body["content_uri"].as_str().unwrap());
    let (text, _) = raw_chunked_upload(
        t.addr(),
        &format!("PUT /_matrix/media/v3/upload/{s}/{id}"),
        ALICE,
        1024 * 1024,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(t.counts().await.media, 0);
    let left = t.wait_for_blob_files(0, false).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Query parameters of the wrong type are 400 M_INVALID_PARAM, not a plain-text rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_invalid_param() {
    let t = TestServer::start().await;
    for query in ["timeout_ms=soon", "allow_remote=maybe", "allow_redirect=2"] {
        let resp = t
            .get(
                &format!("/_matrix/media/v3/download/test.local/abc?{query}"),
                None,
            )
            .await;
        assert_matrix_error(resp, 400, "M_INVALID_PARAM").await;
    }
}

/// Health endpoints answer without auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer() {
    let t = TestServer::start().await;
    assert_eq!(t.get("/healthz", None).await.status(), 200);
    let resp = t.get("/readyz", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ready");
}

/// Routes the spec lists that later work items serve; until then they must
/// answer M_UNRECOGNIZED (so peers fall back), and this list must shrink.
const NOT_YET_SERVED: &[(&str, &str)] = &[
    // URL previews: not scheduled yet.
    ("GET", "/_matrix/client/v1/media/preview_url"),
    ("GET", "/_matrix/media/v3/preview_url"),
];

/// Every media operation of the spec (v1.11+: client, legacy and
/// federation), kept here so a fresh clone needs nothing outside the
/// repository; cross-checked against the spec's OpenAPI files when a
/// checkout has them beside it.
const SPEC_OPERATIONS: &[(&str, &str)] = &[
    (
        "GET",
        "/_matrix/client/v1/media/download/{serverName}/{mediaId}",
    ),
    (
        "GET",
        "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}",
    ),
    (
        "GET",
        "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}",
    ),
    ("GET", "/_matrix/client/v1/media/preview_url"),
    ("GET", "/_matrix/client/v1/media/config"),
    ("POST", "/_matrix/media/v3/upload"),
    ("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}"),
    ("POST", "/_matrix/media/v1/create"),
    ("GET", "/_matrix/media/v3/download/{serverName}/{mediaId}"),
    (
        "GET",
        "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
    ),
    ("GET", "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}"),
    ("GET", "/_matrix/media/v3/preview_url"),
    ("GET", "/_matrix/media/v3/config"),
    ("GET", "/_matrix/federation/v1/media/download/{mediaId}"),
    ("GET", "/_matrix/federation/v1/media/thumbnail/{mediaId}"),
];

/// Every spec media operation is routed (or explicitly listed as not yet served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_route_is_routed() {
    let t = TestServer::start().await;
    for &(method, template) in SPEC_OPERATIONS {
        let concrete = template
            .replace("{serverName}", SERVER_NAME)
            .replace("{mediaId}", "abcdefghijklmnopqrstuvwx")
            .replace("{fileName}", "f.txt");
        let resp = t
            .http
            .request(method.parse().unwrap(), t.url(&concrete))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let unrecognized = body["errcode"] == "M_UNRECOGNIZED";
        if NOT_YET_SERVED.contains(&(method, template)) {
            assert!(
                unrecognized && status == 404,
                "{method} {template} is served now: update NOT_YET_SERVED"
            );
        } else {
            assert!(
                !unrecognized,
                "{method} {template} is not routed ({status} {body})"
            );
        }
    }
}

/// The list above is the spec's: when the spec's OpenAPI files sit beside
/// this checkout, every operation in them is in the list.
#[test]
fn spec_operation_list_matches_the_openapi_files_when_present() {
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec");
    if !spec.is_dir() {
        println!("no spec files beside the checkout; the list is checked by the test above");
        return;
    }
    let files = [
        "client-server/content-repo.yaml",
        "client-server/authed-content-repo.yaml",
        "server-server/content_repository.yaml",
    ];
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(spec.join(file)) else {
            continue;
        };
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let base = doc["servers"][0]["variables"]["basePath"]["default"]
            .as_str()
            .unwrap();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                found.push((method.to_uppercase(), format!("{base}{path}")));
            }
        }
    }
    for (method, template) in &found {
        assert!(
            SPEC_OPERATIONS.contains(&(method.as_str(), template.as_str())),
            "the spec has {method} {template}; add it to SPEC_OPERATIONS"
        );
    }
}

/// Rejections anywhere in a request (path, query, header, method, route)
/// are Matrix error bodies, never axum's plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_a_matrix_error() {
    let t = TestServer::start().await;
    let auth = "\r\nAuthorization: Bearer alice_token";
    // Raw requests, so nothing is normalised on the way.
    let cases = [
        // Path segments that are not UTF-8.
        (
            "GET /_matrix/federation/v1/media/download/%FF%FE HTTP/1.1".to_owned(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("GET /_matrix/client/v1/media/download/test.local/%FF HTTP/1.1{auth}"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("PUT /_matrix/media/v3/upload/%C0/abc HTTP/1.1{auth}\r\nContent-Length: 0"),
            400,
            "M_INVALID_PARAM",
        ),
        // A query that does not parse.
        (
            format!(
                "GET /_matrix/client/v1/media/thumbnail/test.local/abc?width=-1&height=x HTTP/1.1{auth}"
            ),
            400,
            "M_INVALID_PARAM",
        ),
        // An Authorization header that is not a bearer token.
        (
            "GET /_matrix/client/v1/media/config HTTP/1.1\r\nAuthorization: Basic abc".to_owned(),
            401,
            "M_MISSING_TOKEN",
        ),
        // An unknown method on a known route, and an unknown route.
        (
            "DELETE /_matrix/media/v3/config HTTP/1.1".to_owned(),
            405,
            "M_UNRECOGNIZED",
        ),
        (
            "GET /_matrix/media/v3/nothing HTTP/1.1".to_owned(),
            404,
            "M_UNRECOGNIZED",
        ),
    ];
    for (head, status, errcode) in cases {
        let (got, text) = raw_request(t.addr(), &head).await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{head:?}: not a JSON body: {text}"));
        assert_eq!(
            (got, json["errcode"].as_str()),
            (status, Some(errcode)),
            "{head:?}: {text}"
        );
        assert!(json["error"].is_string(), "{text}");
    }
}
