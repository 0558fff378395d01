//! Moderation on every route: each serving route (v1 and legacy download
//! and thumbnail, HEAD, Range, a conditional request with the ETag seen
//! before, federation download and thumbnail, and a peer's clients whose
//! server fetches over federation) for media that is quarantined, protected
//! (after a bulk quarantine tried to take it) or deleted, asked by a user,
//! an admin and a federation peer. Also the purge of cached remote media.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
// Only the deployments and signing of the federation peers are used here.
#[allow(dead_code)]
#[path = "common/peers.rs"]
mod peers;
#[path = "common/tls.rs"]
mod tls;

use common::*;
use peers::*;
use reqwest::Method;
use serde_json::json;
use tls::TestCa;

const A: &str = "/_synapse/admin/v1";

fn jpeg(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, shade]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

async fn admin(t: &TestServer, method: Method, path: &str) -> serde_json::Value {
    let resp = t
        .http
        .request(method, t.url(path))
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// One request and the status it must get.
struct Probe {
    what: String,
    status: u16,
}

/// Every way media `id` of deployment `a` is reached, by a user and an
/// admin of `a`, a federation peer `b` directly, and a user of `b`.
async fn probe_all(
    ca: &TestCa,
    a: &Deployment,
    b: &Deployment,
    id: &str,
    etag: &str,
) -> Vec<Probe> {
    let s = &a.name;
    let mut out = Vec::new();
    let client_routes = [
        format!("/_matrix/client/v1/media/download/{s}/{id}"),
        format!("/_matrix/client/v1/media/download/{s}/{id}/name.jpg"),
        format!("/_matrix/media/v3/download/{s}/{id}"),
        format!("/_matrix/media/r0/download/{s}/{id}"),
        format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width=96&height=96&method=crop"),
        format!("/_matrix/media/v3/thumbnail/{s}/{id}?width=96&height=96"),
    ];
    for token in [ALICE, ADMIN] {
        for path in &client_routes {
            let status = a.t.get(path, Some(token)).await.status().as_u16();
            out.push(Probe {
                what: format!("{token} GET {path}"),
                status,
            });
        }
        let download = a.t.url(&client_routes[0]);
        let head =
            a.t.http
                .head(&download)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        out.push(Probe {
            what: format!("{token} HEAD"),
            status: head.status().as_u16(),
        });
        let ranged =
            a.t.http
                .get(&download)
                .bearer_auth(token)
                .header("Range", "bytes=0-9")
                .send()
                .await
                .unwrap();
        out.push(Probe {
            what: format!("{token} Range"),
            status: ranged.status().as_u16(),
        });
        let conditional =
            a.t.http
                .get(&download)
                .bearer_auth(token)
                .header("If-None-Match", etag)
                .send()
                .await
                .unwrap();
        out.push(Probe {
            what: format!("{token} If-None-Match"),
            status: conditional.status().as_u16(),
        });
    }
    for path in [
        format!("/_matrix/federation/v1/media/download/{id}"),
        format!("/_matrix/federation/v1/media/thumbnail/{id}?width=96&height=96&method=scale"),
    ] {
        let status = b.signed_get(ca, a, &path).await.status().as_u16();
        out.push(Probe {
            what: format!("peer {path}"),
            status,
        });
    }
    let via_peer = format!("/_matrix/client/v1/media/download/{s}/{id}");
    let status = b.t.get(&via_peer, Some(BOB)).await.status().as_u16();
    out.push(Probe {
        what: format!("peer's user GET {via_peer}"),
        status,
    });
    out
}

fn expect(probes: &[Probe], served: bool, state: &str) {
    for p in probes {
        let ok = if served {
            match p.what.as_str() {
                w if w.ends_with("Range") => p.status == 206,
                w if w.ends_with("If-None-Match") => p.status == 304,
                _ => p.status == 200,
            }
        } else {
            p.status == 404
        };
        assert!(ok, "{state}: {} answered {}", p.what, p.status);
    }
}

/// Quarantined and deleted media is 404 on every route for everyone (the
/// admin too, without the explicit bypass; the peer too); protected media
/// survives a quarantine of its uploader's media and is served everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_obeys_every_moderation_state() {
    let ca = TestCa::new();
    let open = |c: &mut mxmedia::config::Config| c.media.freeze_unauthenticated = false;
    let a = deployment(&ca, open).await;
    let b = deployment(&ca, open).await;
    let mut ids = Vec::new();
    for shade in [1, 2, 3] {
        let (_, id) =
            a.t.upload_ok(ALICE, &jpeg(shade), Some("image/jpeg"), Some("p.jpg"))
                .await;
        ids.push(id);
    }
    let [quarantined, protected, deleted] = [&ids[0], &ids[1], &ids[2]];
    let mut etags = Vec::new();
    for id in &ids {
        let resp =
            a.t.get(
                &format!("/_matrix/client/v1/media/download/{}/{id}", a.name),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.status(), 200);
        etags.push(resp.headers()["etag"].to_str().unwrap().to_owned());
    }

    admin(
        &a.t,
        Method::POST,
        &format!("{A}/media/protect/{protected}"),
    )
    .await;
    admin(
        &a.t,
        Method::POST,
        &format!("{A}/user/@alice:test.local/media/quarantine"),
    )
    .await;
    admin(
        &a.t,
        Method::POST,
        &format!("{A}/media/unquarantine/{}/{deleted}", a.name),
    )
    .await;
    admin(
        &a.t,
        Method::DELETE,
        &format!("{A}/media/{}/{deleted}", a.name),
    )
    .await;

    expect(
        &probe_all(&ca, &a, &b, quarantined, &etags[0]).await,
        false,
        "quarantined",
    );
    expect(
        &probe_all(&ca, &a, &b, protected, &etags[1]).await,
        true,
        "protected",
    );
    expect(
        &probe_all(&ca, &a, &b, deleted, &etags[2]).await,
        false,
        "deleted",
    );
}

/// Cached remote media is purged by age (quarantined media is kept) and
/// fetched again on the next request; quarantining it here hides it here
/// only, for every copy of its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cache_is_purged_and_quarantined_locally() {
    let ca = TestCa::new();
    let metrics = |c: &mut mxmedia::config::Config| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    };
    let a = deployment(&ca, metrics).await;
    let b = deployment(&ca, metrics).await;
    let (_, kept) = b.t.upload_ok(BOB, b"remote and bad", None, None).await;
    let (_, old) = b.t.upload_ok(BOB, b"remote and old", None, None).await;
    let path = |id: &str| format!("/_matrix/client/v1/media/download/{}/{id}", b.name);
    for id in [&kept, &old] {
        assert_eq!(a.t.get(&path(id), Some(ALICE)).await.status(), 200);
    }
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        2.0
    );
    admin(
        &a.t,
        Method::POST,
        &format!("{A}/media/quarantine/{}/{kept}", b.name),
    )
    .await;
    assert_matrix_error(a.t.get(&path(&kept), Some(ALICE)).await, 404, "M_NOT_FOUND").await;
    assert_eq!(
        b.t.get(&path(&kept), Some(BOB)).await.status(),
        200,
        "the origin still serves it"
    );
    let info = admin(&a.t, Method::GET, &format!("{A}/media/{}/{old}", b.name)).await;
    assert_eq!(info["media_info"]["media_origin"], b.name.as_str());

    let now = now_ms();
    let purged = admin(
        &a.t,
        Method::POST,
        &format!("{A}/purge_media_cache?before_ts={}", now + 1000),
    )
    .await;
    assert_eq!(
        purged,
        json!({"deleted": 1}),
        "the quarantined copy is kept"
    );
    assert_eq!(a.t.counts().await.media, 1);
    let again = a.t.get(&path(&old), Some(ALICE)).await;
    assert_eq!(again.status(), 200, "{:?}", again.text().await);
    assert_eq!(
        metric(&b, "mxmedia_http_requests_total", FED_DOWNLOAD).await,
        3.0,
        "fetched again"
    );
    assert_matrix_error(a.t.get(&path(&kept), Some(ALICE)).await, 404, "M_NOT_FOUND").await;
}
