//! Federation between real mxmedia deployments over TLS on 127.0.0.1: each
//! is a server named `127.0.0.1:<port>` behind its own TLS front, with its
//! own signing key, trusting a test CA through `federation.extra_ca_path`
//! and allowing loopback through `federation.allowed_private_ranges`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/tls.rs"]
mod tls;

use common::*;
use peers::*;
use ruma::{
    ServerName, api::federation::authentication::XMatrix, serde::Base64, signatures::Ed25519KeyPair,
};
use tls::{TestCa, TlsFront};
use tokio::net::TcpListener;

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
        let (name, _front, _task, _) = key_server(&ca, |name| {
            key_document(name, &pair, valid_until, self_signed)
        })
        .await;
        let resp = get_signed_by(&ca.client(), &pair, &name, &a, &path).await;
        if accepted {
            assert_eq!(resp.status(), 200);
        } else {
            assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_fetched_once_signed_and_cached() {
    let ca = TestCa::new();
    let metrics = |c: &mut mxmedia::config::Config| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    };
    let a = deployment(&ca, metrics).await;
    let b = deployment(&ca, metrics).await;
    let (_, id) =
        b.t.upload_ok(BOB, b"bytes from b", Some("text/plain"), Some("b.txt"))
            .await;

    // 50 clients of A ask for B's media at once: one signed fetch.
    let path = format!("/_matrix/client/v1/media/download/{}/{id}", b.name);
    let requests = (0..50).map(|_| a.t.get(&path, Some(ALICE)));
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert!(
            resp.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains("b.txt")
        );
        assert_eq!(resp.bytes().await.unwrap(), &b"bytes from b"[..]);
    }
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        1.0
    );
    // Cached: later requests, and thumbnails' sources, are local reads.
    assert_eq!(a.t.get(&path, Some(ALICE)).await.status(), 200);
    // Cached media is new media for the freeze: not on the legacy routes.
    let legacy = format!("/_matrix/media/v3/download/{}/{id}", b.name);
    assert_matrix_error(a.t.get(&legacy, None).await, 404, "M_NOT_FOUND").await;
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        1.0
    );

    // Thumbnails of remote media are made here from the fetched original.
    let photo = {
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 3]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    let (_, photo_id) = b.t.upload_ok(BOB, &photo, Some("image/jpeg"), None).await;
    let resp =
        a.t.get(
            &format!(
                "/_matrix/client/v1/media/thumbnail/{}/{photo_id}?width=320&height=240",
                b.name
            ),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let thumb = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 240));

    // Missing on B: 404 here, and B fetched nothing from anyone (no loop).
    let resp =
        a.t.get(
            &format!(
                "/_matrix/client/v1/media/download/{}/abcdefghijklmnopqrstuvwx",
                b.name
            ),
            Some(ALICE),
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    assert_eq!(b.t.counts().await.media, 2, "B holds only its own uploads");
    // allow_remote=false never fetches.
    let resp =
        a.t.get(
            &format!(
                "/_matrix/client/v1/media/download/{}/{photo_id}?allow_remote=false",
                b.name
            ),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200, "already cached, so served");
    let (_, fresh) = b.t.upload_ok(BOB, b"never fetched", None, None).await;
    let resp =
        a.t.get(
            &format!(
                "/_matrix/client/v1/media/download/{}/{fresh}?allow_remote=false",
                b.name
            ),
            Some(ALICE),
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_servers_are_not_fetched_from() {
    let ca = TestCa::new();
    let b = deployment(&ca, |_| {}).await;
    let blocked = b.name.clone();
    let a = deployment(&ca, move |c| c.federation.blocked_servers = vec![blocked]).await;
    let (_, id) = b.t.upload_ok(BOB, b"x", None, None).await;
    let resp =
        a.t.get(
            &format!("/_matrix/client/v1/media/download/{}/{id}", b.name),
            Some(ALICE),
        )
        .await;
    assert_matrix_error(resp, 403, "M_FORBIDDEN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_remotes_are_contained() {
    let ca = TestCa::new();
    let a = deployment(&ca, |c| {
        // Only the test peers' own address, not the rest of loopback.
        c.federation.allowed_private_ranges = vec!["127.0.0.1/32".parse().unwrap()];
        c.federation.max_remote_size = Some(bytesize::ByteSize::mib(1));
        c.federation.total_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    // An internal service on 127.0.0.2 (outside the allowed 127.0.0.1/32):
    // reaching it would make a case succeed.
    let inside = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let inside_addr = inside.local_addr().unwrap();
    let secret = axum::Router::new().fallback(|| async { "internal secret" });
    tokio::spawn(async move { axum::serve(inside, secret).await.unwrap() });
    let inside_tls = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let internal_url = format!("https://{}/x", inside_tls.local_addr().unwrap());
    let _inside_front = TlsFront::serve(inside_tls, &ca, &["127.0.0.2"], inside_addr);
    // Each case asks its own hostile server, so no case is answered by the
    // backoff a previous failure earned.
    let get = |id: &'static str| {
        let (ca, t, internal) = (&ca, &a.t, internal_url.as_str());
        async move {
            let (evil, front, task) = hostile_server(ca, internal).await;
            let resp = t
                .get(
                    &format!("/_matrix/client/v1/media/download/{evil}/{id}"),
                    Some(ALICE),
                )
                .await;
            (resp, front, task)
        }
    };

    let started = std::time::Instant::now();
    assert_matrix_error(get("hugehugehugehugehugehuge").await.0, 502, "M_TOO_LARGE").await;
    let (slow, _front, _task) = get("slowslowslowslowslowslow").await;
    assert_matrix_error(slow, 502, "M_UNKNOWN").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // The deadline stopped the transfer itself, not just the answer: the
    // peer's never-ending body (a chunk every 200 ms while it is read)
    // stops being read. How soon the close reaches the peer depends on the
    // machine's load, so the count is watched until it stands still for a
    // second; a transfer that went on would never stand still.
    let chunks = || SLOW_CHUNKS.load(std::sync::atomic::Ordering::SeqCst);
    let mut last = chunks();
    let stopped = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = chunks();
            if now == last {
                return;
            }
            last = now;
        }
    };
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(30), stopped)
            .await
            .is_ok(),
        "the remote transfer went on after the deadline"
    );
    for id in [
        "nestednestednestednested",
        "metadatametadatametadata",
        "privateprivateprivatepri",
        "mappedmappedmappedmapped",
        "loopbackloopbackloopback",
        "redirectredirectredirect",
        // Six redirects: one more than followed.
        "hops6aaaaaaaaaaaaaaaaaaa",
    ] {
        assert_matrix_error(get(id).await.0, 502, "M_UNKNOWN").await;
    }
    let (resp, _front, _task) = get("htmlhtmlhtmlhtmlhtmlhtml").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.headers().get("x-frame-options").is_none());
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
        "HTML is never inline"
    );
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(
        resp.bytes().await.unwrap(),
        &b"<script>alert(1)</script>"[..]
    );
    // Five redirects are followed.
    let (resp, _front, _task) = get("hops5aaaaaaaaaaaaaaaaaaa").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), &b"after the hops"[..]);
    // A peer without the federation endpoint is asked on the legacy one.
    let (resp, _front, _task) = get("legacylegacylegacylegacy").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap(),
        &b"from the legacy endpoint"[..]
    );
    // Nothing half-fetched was kept.
    assert_eq!(a.t.counts().await.media, 3);

    // Discovery straight at private addresses: refused before connecting.
    for name in [
        "10.0.0.1:8448",
        "169.254.169.254",
        "[::ffff:10.0.0.1]:8448",
        "127.0.0.2:8448",
    ] {
        let resp =
            a.t.get(
                &format!("/_matrix/client/v1/media/download/{name}/abcdefghijklmnopqrstuvwx"),
                Some(ALICE),
            )
            .await;
        assert_matrix_error(resp, 502, "M_UNKNOWN").await;
    }
}

/// A server name without a port is found through its `_matrix-fed._tcp`
/// SRV record: the connection goes to the target and port, TLS checks the
/// certificate for the server name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_are_followed() {
    let ca = TestCa::new();
    // B is "srv.test", reachable only through SRV -> localhost:<port>.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dns = srv_dns("_matrix-fed._tcp.srv.test.", port, "localhost.").await;
    let keys = tempfile::tempdir().unwrap().keep();
    let ca_path = ca.write(&keys);
    let key = key_file(&keys, "srv1");
    let (ca_b, key_b) = (ca_path.clone(), key.clone());
    let b = TestServer::start_with(move |c| {
        c.server_name = "srv.test".try_into().unwrap();
        c.federation.signing_key_path = Some(key_b);
        c.federation.extra_ca_path = Some(ca_b);
        c.federation.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let _front = TlsFront::serve(listener, &ca, &["srv.test"], b.addr());
    let a = deployment(&ca, move |c| c.federation.dns_servers = vec![dns]).await;

    let (_, id) = b.upload_ok(BOB, b"found through SRV", None, None).await;
    let resp =
        a.t.get(
            &format!("/_matrix/client/v1/media/download/srv.test/{id}"),
            Some(ALICE),
        )
        .await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"found through SRV");
}

/// Requests naming key ids the origin does not publish cannot make us ask
/// the origin again and again: one key fetch per origin per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_do_not_amplify_key_fetches() {
    let ca = TestCa::new();
    let a = deployment(&ca, |_| {}).await;
    let (_, id) = a.t.upload_ok(ALICE, b"x", None, None).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");
    let published = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k1".into()).unwrap();
    let far_future = 4_000_000_000_000; // year 2096, in ms
    let (name, _front, _task, asked) =
        key_server(&ca, |name| key_document(name, &published, far_future, true)).await;
    let client = ca.client();
    for i in 0..20 {
        let unknown =
            Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), format!("x{i}")).unwrap();
        let resp = get_signed_by(&client, &unknown, &name, &a, &path).await;
        assert_matrix_error(resp, 401, "M_UNAUTHORIZED").await;
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Rule 10 for remote media: unauthenticated legacy requests never start a
/// fetch while the freeze is on; a user past their byte budget gets 429
/// (others, and media already cached, are unaffected); with every fetch slot
/// taken, a request gets 429 after the queue wait instead of piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_fetches_are_budgeted() {
    let ca = TestCa::new();
    let a = deployment(&ca, |c| {
        c.federation.allowed_private_ranges = vec!["127.0.0.1/32".parse().unwrap()];
        c.federation.user_budget = bytesize::ByteSize::b(150);
        c.federation.max_concurrent_fetches = 1;
        c.federation.fetch_queue_timeout = std::time::Duration::from_millis(500);
        c.federation.total_timeout = std::time::Duration::from_secs(3);
    })
    .await;
    let b = deployment(&ca, |c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4u8 {
        let (_, id) = b.t.upload_ok(BOB, &[i; 100], None, None).await;
        ids.push(id);
    }
    let client = |id: &str| format!("/_matrix/client/v1/media/download/{}/{id}", b.name);

    // Anonymous, on the legacy route: nothing is fetched.
    for version in ["v3", "r0", "v1"] {
        let legacy = format!("/_matrix/media/{version}/download/{}/{}", b.name, ids[0]);
        assert_matrix_error(a.t.get(&legacy, None).await, 404, "M_NOT_FOUND").await;
        let thumb = format!(
            "/_matrix/media/{version}/thumbnail/{}/{}?width=32&height=32",
            b.name, ids[0]
        );
        assert_matrix_error(a.t.get(&thumb, None).await, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        0.0,
        "an anonymous legacy request made a federation fetch"
    );

    // Alice's budget is 150 bytes: two 100-byte files, then 429.
    assert_eq!(a.t.get(&client(&ids[0]), Some(ALICE)).await.status(), 200);
    assert_eq!(a.t.get(&client(&ids[1]), Some(ALICE)).await.status(), 200);
    let body = assert_matrix_error(
        a.t.get(&client(&ids[2]), Some(ALICE)).await,
        429,
        "M_LIMIT_EXCEEDED",
    )
    .await;
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // Bob's own budget is untouched; what he fetched, Alice may read.
    assert_eq!(a.t.get(&client(&ids[2]), Some(BOB)).await.status(), 200);
    assert_eq!(a.t.get(&client(&ids[2]), Some(ALICE)).await.status(), 200);
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        3.0
    );

    // One slot: a never-ending transfer holds it; the next fetch waits for
    // the queue timeout, then gets 429 rather than queueing without bound.
    let (evil, _front, _task) = hostile_server(&ca, "https://127.0.0.2/").await;
    let before = SLOW_CHUNKS.load(std::sync::atomic::Ordering::SeqCst);
    let slow = {
        let http = a.t.http.clone();
        let url = a.t.url(&format!(
            "/_matrix/client/v1/media/download/{evil}/slowslowslowslowslowslow"
        ));
        tokio::spawn(async move { http.get(url).bearer_auth(BOB).send().await.unwrap() })
    };
    // The slow transfer is under way (it holds the slot) once bytes flow.
    while SLOW_CHUNKS.load(std::sync::atomic::Ordering::SeqCst) == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_matrix_error(
        a.t.get(&client(&ids[3]), Some(BOB)).await,
        429,
        "M_LIMIT_EXCEEDED",
    )
    .await;
    assert_eq!(slow.await.unwrap().status(), 502);
    // The slot is free again, and the refusal was not remembered as the
    // media's failure.
    assert_eq!(a.t.get(&client(&ids[3]), Some(BOB)).await.status(), 200);
}

/// Remote fetches spend their own rate limit: a second fetch right after
/// the first is refused with 429, while media already cached is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_fetches_are_rate_limited() {
    let ca = TestCa::new();
    let a = deployment(&ca, |c| {
        c.rate_limits.remote_fetches = Some(mxmedia::config::Rate {
            per_second: 0.01,
            burst: 1,
        });
    })
    .await;
    let b = deployment(&ca, |_| {}).await;
    let (_, first) = b.t.upload_ok(BOB, b"first remote", None, None).await;
    let (_, second) = b.t.upload_ok(BOB, b"second remote", None, None).await;
    let path = |id: &str| format!("/_matrix/client/v1/media/download/{}/{id}", b.name);
    assert_eq!(a.t.get(&path(&first), Some(ALICE)).await.status(), 200);
    let limited = a.t.get(&path(&second), Some(ALICE)).await;
    let body = assert_matrix_error(limited, 429, "M_LIMIT_EXCEEDED").await;
    assert!(body["retry_after_ms"].as_u64().is_some());
    assert_eq!(
        a.t.get(&path(&first), Some(ALICE)).await.status(),
        200,
        "cached: no fetch"
    );
}
