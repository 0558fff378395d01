//! Federation between real mxmedia deployments over TLS on 127.0.0.1: each
//! is a server named `127.0.0.1:<port>` behind its own TLS front, with its
//! own signing key, trusting a test CA through `federation.extra_ca_path`
//! and allowing loopback through `federation.allowed_private_ranges`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::collections::BTreeMap;

use common::*;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::Ed25519KeyPair,
};
use tls::{TestCa, TlsFront};
use tokio::net::TcpListener;

/// One deployment: mxmedia named after the address of its TLS front.
struct Deployment {
    name: String,
    front: TlsFront,
    t: TestServer,
}

fn key_file(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let seed: [u8; 32] = rand::random();
    let path = dir.join(format!("{version}.key"));
    std::fs::write(
        &path,
        format!(
            "ed25519 {version} {}\n",
            Base64::<ruma::serde::base64::Standard, _>::new(seed.to_vec()).encode()
        ),
    )
    .unwrap();
    path
}

async fn deployment(ca: &TestCa, tweak: impl FnOnce(&mut mxmedia::config::Config)) -> Deployment {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let keys = tempfile::tempdir().unwrap().keep();
    let ca_path = ca.write(&keys);
    let key = key_file(&keys, "k1");
    let server_name = name.clone();
    let t = TestServer::start_with(move |c| {
        c.server_name = server_name.as_str().try_into().unwrap();
        c.federation.signing_key_path = Some(key);
        c.federation.extra_ca_path = Some(ca_path);
        c.federation.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
        tweak(c);
    })
    .await;
    let front = TlsFront::serve(listener, ca, &["127.0.0.1"], t.addr());
    Deployment { name, front, t }
}

impl Deployment {
    fn server_name(&self) -> &ServerName {
        <&ServerName>::try_from(self.name.as_str()).unwrap()
    }

    /// A request from this deployment to `to`, signed by it.
    async fn signed_get(&self, ca: &TestCa, to: &Deployment, path: &str) -> reqwest::Response {
        let auth = self
            .t
            .server()
            .state()
            .federation
            .sign(to.server_name(), &http::Method::GET, path)
            .unwrap();
        ca.client()
            .get(format!("https://{}{path}", to.front.addr))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
    }
}

/// The two parts of a federation media body.
fn split_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    // Skip to the first delimiter.
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delimiter.as_bytes()).unwrap();
    rest = &rest[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").unwrap();
        let end = find(rest, format!("\r\n{delimiter}").as_bytes()).unwrap();
        let part = &rest[..end];
        let split = find(part, b"\r\n\r\n").unwrap();
        let headers = String::from_utf8(part[..split].to_vec()).unwrap();
        out.push((headers, part[split + 4..].to_vec()));
        rest = &rest[end + 2 + delimiter.len()..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_get_our_media_as_multipart() {
    let ca = TestCa::new();
    let a = deployment(&ca, |_| {}).await;
    let b = deployment(&ca, |_| {}).await;
    let (_, id) =
        a.t.upload_ok(
            ALICE,
            b"federated bytes",
            Some("text/plain"),
            Some("notes.txt"),
        )
        .await;

    let resp = b
        .signed_get(
            &ca,
            &a,
            &format!("/_matrix/federation/v1/media/download/{id}"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/mixed; boundary="));
    let body = resp.bytes().await.unwrap();
    let got = split_parts(&content_type, &body);
    assert_eq!(got.len(), 2);
    assert!(
        got[0]
            .0
            .to_lowercase()
            .contains("content-type: application/json")
    );
    assert_eq!(got[0].1, b"{}");
    assert!(
        got[1].0.contains("Content-Type: text/plain"),
        "{}",
        got[1].0
    );
    assert!(got[1].0.contains("notes.txt"), "{}", got[1].0);
    assert_eq!(got[1].1, b"federated bytes");

    // Thumbnails too.
    let photo = {
        let img = image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    let (_, photo_id) = a.t.upload_ok(ALICE, &photo, Some("image/jpeg"), None).await;
    let resp = b
        .signed_get(
            &ca,
            &a,
            &format!(
                "/_matrix/federation/v1/media/thumbnail/{photo_id}?width=96&height=96&method=crop"
            ),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    let got = split_parts(&content_type, &body);
    assert!(got[1].0.contains("Content-Type: image/jpeg"));
    let thumb = image::load_from_memory(&got[1].1).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (96, 96));

    // Unknown media is the spec's 404.
    let resp = b
        .signed_get(
            &ca,
            &a,
            "/_matrix/federation/v1/media/download/abcdefghijklmnopqrstuvwx",
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_are_refused() {
    let ca = TestCa::new();
    let a = deployment(&ca, |_| {}).await;
    let b = deployment(&ca, |_| {}).await;
    let (_, id) = a.t.upload_ok(ALICE, b"secret", None, None).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");
    let url = format!("https://{}{path}", a.front.addr);
    let client = ca.client();

    // No Authorization at all, or a client token instead of X-Matrix.
    let resp = client.get(&url).send().await.unwrap();
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;
    let resp = client.get(&url).bearer_auth(ALICE).send().await.unwrap();
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;

    // Addressed to another server.
    let fed = &b.t.server().state().federation;
    let other = fed
        .sign(
            <&ServerName>::try_from("elsewhere.test").unwrap(),
            &http::Method::GET,
            &path,
        )
        .unwrap();
    let resp = client
        .get(&url)
        .header("authorization", other)
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;

    // Signed for another path.
    let wrong_path = fed
        .sign(
            a.server_name(),
            &http::Method::GET,
            "/_matrix/federation/v1/media/download/other",
        )
        .unwrap();
    let resp = client
        .get(&url)
        .header("authorization", wrong_path)
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;

    // A flipped signature byte.
    let good = fed
        .sign(a.server_name(), &http::Method::GET, &path)
        .unwrap();
    let mut x = XMatrix::parse(&good).unwrap();
    let mut sig = x.sig.as_bytes().to_vec();
    sig[0] ^= 1;
    x.sig = Base64::new(sig);
    let resp = client
        .get(&url)
        .header("authorization", x.to_string())
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;

    // The good one passes.
    let resp = client
        .get(&url)
        .header("authorization", good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_servers_are_forbidden() {
    let ca = TestCa::new();
    let b = deployment(&ca, |_| {}).await;
    let blocked = b.name.clone();
    let a = deployment(&ca, move |c| c.federation.blocked_servers = vec![blocked]).await;
    let (_, id) = a.t.upload_ok(ALICE, b"not for b", None, None).await;
    let resp = b
        .signed_get(
            &ca,
            &a,
            &format!("/_matrix/federation/v1/media/download/{id}"),
        )
        .await;
    assert_matrix_error(resp, 403, "M_FORBIDDEN").await;
}

/// A key server behind TLS: `doc` gets its server name and returns the
/// key document it publishes.
async fn key_server(
    ca: &TestCa,
    doc: impl FnOnce(&str) -> serde_json::Value,
) -> (String, TlsFront, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let doc = doc(&name);
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = plain.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/_matrix/key/v2/server",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(plain, app).await.unwrap();
    });
    (
        name,
        TlsFront::serve(listener, ca, &["127.0.0.1"], backend),
        task,
    )
}

/// A key document for `name` publishing `pair`, valid until `valid_until`.
fn key_document(
    name: &str,
    pair: &Ed25519KeyPair,
    valid_until: i64,
    self_signed: bool,
) -> serde_json::Value {
    let mut key = CanonicalJsonObject::new();
    key.insert(
        "key".into(),
        CanonicalJsonValue::String(
            Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode(),
        ),
    );
    let mut doc = CanonicalJsonObject::new();
    doc.insert(
        "server_name".into(),
        CanonicalJsonValue::String(name.to_owned()),
    );
    doc.insert(
        "valid_until_ts".into(),
        CanonicalJsonValue::Integer(valid_until.try_into().unwrap()),
    );
    doc.insert(
        "verify_keys".into(),
        CanonicalJsonValue::Object(BTreeMap::from([(
            format!("ed25519:{}", pair.version()),
            CanonicalJsonValue::Object(key),
        )])),
    );
    doc.insert(
        "old_verify_keys".into(),
        CanonicalJsonValue::Object(BTreeMap::new()),
    );
    if self_signed {
        ruma::signatures::sign_json(name, pair, &mut doc).unwrap();
    }
    serde_json::to_value(&doc).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_unsigned_keys_are_refused() {
    let ca = TestCa::new();
    let a = deployment(&ca, |_| {}).await;
    let (_, id) = a.t.upload_ok(ALICE, b"fresh keys only", None, None).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // (valid until, self-signed, accepted)
    for (valid_until, self_signed, accepted) in [
        (now_ms - 60_000, true, false),
        (now_ms + 3_600_000, false, false),
        (now_ms + 3_600_000, true, true),
    ] {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k1".into()).unwrap();
        let (name, _front, _task) = key_server(&ca, |name| {
            key_document(name, &pair, valid_until, self_signed)
        })
        .await;
        let mut request = http::Request::new(Vec::<u8>::new());
        *request.uri_mut() = path.parse().unwrap();
        let x = XMatrix::sign_http_request(
            &request,
            XMatrixSigningInput::new(
                name.as_str().try_into().unwrap(),
                a.name.as_str().try_into().unwrap(),
                &pair,
            ),
        )
        .unwrap();
        let resp = ca
            .client()
            .get(format!("https://{}{path}", a.front.addr))
            .header("authorization", x.to_string())
            .send()
            .await
            .unwrap();
        if accepted {
            assert_eq!(resp.status(), 200);
        } else {
            assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;
        }
    }
}
