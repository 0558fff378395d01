//! Datastores routed by kind, end to end: users' media, thumbnails and
//! remote media each land in the datastore whose `kinds` take them; a
//! datastore with `kinds: []` is read-only and still serves what it holds;
//! `storage sync` moves every kind out of it.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
// Only the deployments of the federation peers are used here.
#[allow(dead_code)]
#[path = "common/peers.rs"]
mod peers;
#[path = "common/tls.rs"]
mod tls;

use common::*;
use mxmedia::{
    config::{Config, DatastoreConfig, DatastoreKind, LocalDatastoreConfig},
    media::SyncProgress,
    ops::control,
};
use peers::*;
use tls::TestCa;

fn local(config: &Config, id: &str, kinds: Vec<DatastoreKind>) -> DatastoreConfig {
    DatastoreConfig::Local(LocalDatastoreConfig {
        id: id.to_owned(),
        path: Some(config.data_dir.join(id)),
        kinds,
        ..LocalDatastoreConfig::default()
    })
}

fn every_kind() -> Vec<DatastoreKind> {
    vec![
        DatastoreKind::LocalMedia,
        DatastoreKind::RemoteMedia,
        DatastoreKind::Thumbnails,
    ]
}

/// Blob objects in a local datastore's directory (its ownership marker aside).
fn objects(t: &TestServer, id: &str) -> usize {
    let mut files = Vec::new();
    walk(&t.config.data_dir.join(id), &mut files);
    files
        .iter()
        .filter(|f| !f.ends_with("mxmedia-owner.json"))
        .count()
}

async fn fetch(t: &TestServer, path: &str) -> Vec<u8> {
    let resp = t.get(path, Some(BOB)).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

/// Uploads an image; its download and a thumbnail path.
async fn picture_media(t: &TestServer, shade: u8) -> (Vec<u8>, String, String) {
    let png = picture(400, 300, shade, image::ImageFormat::Png);
    let (server, id) = t.upload_ok(ALICE, &png, Some("image/png"), None).await;
    (
        png,
        format!("/_matrix/client/v1/media/download/{server}/{id}"),
        format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=64&height=64&method=crop"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_lands_in_its_own_datastore() {
    let ca = TestCa::new();
    let remote = deployment(&ca, |_| {}).await;
    let here = deployment(&ca, |c| {
        c.thumbnails.pregenerate = false;
        c.datastores = vec![
            local(c, "users", vec![DatastoreKind::LocalMedia]),
            local(c, "thumbs", vec![DatastoreKind::Thumbnails]),
            local(c, "cached", vec![DatastoreKind::RemoteMedia]),
        ];
    })
    .await;
    let t = &here.t;
    let (png, download, thumbnail) = picture_media(t, 1).await;
    assert_eq!(
        (
            objects(t, "users"),
            objects(t, "thumbs"),
            objects(t, "cached")
        ),
        (1, 0, 0)
    );
    assert_eq!(fetch(t, &download).await, png);
    fetch(t, &thumbnail).await;
    assert_eq!(
        (
            objects(t, "users"),
            objects(t, "thumbs"),
            objects(t, "cached")
        ),
        (1, 1, 0)
    );

    let (_, id) = remote
        .t
        .upload_ok(BOB, b"from afar", Some("text/plain"), None)
        .await;
    let far = fetch(
        t,
        &format!("/_matrix/client/v1/media/download/{}/{id}", remote.name),
    )
    .await;
    assert_eq!(far, b"from afar");
    assert_eq!(
        (
            objects(t, "users"),
            objects(t, "thumbs"),
            objects(t, "cached")
        ),
        (1, 1, 1)
    );
}

async fn sync(t: &TestServer, from: &str, to: &str) -> SyncProgress {
    let mut done = None;
    control::request(
        &t.config.control_socket_path(),
        "/control/storage/sync",
        &serde_json::json!({"from": from, "to": to, "verify": true, "delete_source": true}),
        |line| {
            assert!(line.get("error").is_none(), "{line}");
            if let Some(report) = line.get("done") {
                done = Some(serde_json::from_value(report.clone()).unwrap());
            }
        },
    )
    .await
    .unwrap();
    done.expect("a final report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_datastores_serve_and_sync_moves_every_kind() {
    let ca = TestCa::new();
    let remote = deployment(&ca, |_| {}).await;
    let mut here = deployment(&ca, |c| {
        c.thumbnails.pregenerate = false;
        c.datastores = vec![local(c, "old", every_kind())];
    })
    .await;
    let (png, download, thumbnail) = picture_media(&here.t, 2).await;
    let thumb = fetch(&here.t, &thumbnail).await;
    let (_, id) = remote
        .t
        .upload_ok(BOB, b"remote bytes", Some("text/plain"), None)
        .await;
    let remote_download = format!("/_matrix/client/v1/media/download/{}/{id}", remote.name);
    fetch(&here.t, &remote_download).await;
    assert_eq!(objects(&here.t, "old"), 3);

    // `old` turns read-only; `new` takes every kind from now on.
    here.t.server_stop().await;
    let config = &mut here.t.config;
    config.datastores = vec![
        local(config, "old", Vec::new()),
        local(config, "new", every_kind()),
    ];
    here.t.server_start().await;
    let t = &here.t;
    assert_eq!(fetch(t, &download).await, png);
    assert_eq!(fetch(t, &thumbnail).await, thumb);
    assert_eq!(fetch(t, &remote_download).await, b"remote bytes");
    let (png2, download2, _) = picture_media(t, 3).await;
    assert_eq!((objects(t, "old"), objects(t, "new")), (3, 1));

    // Every kind moves out of `old`, and is still served.
    let report = sync(t, "old", "new").await;
    assert!(report.finished && report.failed == 0, "{report:?}");
    assert_eq!(report.moved, 3, "{report:?}");
    assert_eq!((objects(t, "old"), objects(t, "new")), (0, 4));
    assert_eq!(fetch(t, &download).await, png);
    assert_eq!(fetch(t, &thumbnail).await, thumb);
    assert_eq!(fetch(t, &remote_download).await, b"remote bytes");
    assert_eq!(fetch(t, &download2).await, png2);
}
