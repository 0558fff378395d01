//! matrix-media-repo's export archives: gzipped tar parts, one holding
//! `manifest.json` (version 2) that maps each mxc to its file in the parts.
//! Built here in that layout, imported through the running server's
//! control socket, served byte-identical; ids sharing one file, remote
//! origins, a file missing from the parts and a wrong digest included.

use std::path::Path;

use serde_json::{Value, json};

use super::{cli_config, common::*, mxmedia, sha256_hex};

/// One gzipped tar part holding `files` (name, bytes).
fn part(path: &Path, files: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn record(origin: &str, id: &str, file: &str, bytes: &[u8], name: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "file_name": file,
        "size_bytes": bytes.len(),
        "content_type": kind,
        "s3_url": "",
        "sha256": sha256_hex(bytes),
        "origin": origin,
        "media_id": id,
        "created_ts": 1_650_000_000_000i64,
        "uploader": format!("@archived:{origin}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_media_repo_export_moves_in() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut media = serde_json::Map::new();
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut expected = Vec::new();
    for i in 0..6 {
        let id = format!("mmrlocal{i:04}");
        let bytes = format!("archived file {i} ").repeat(100 + i).into_bytes();
        let file = format!("{id}.bin");
        let name = format!("file {i}.txt");
        media.insert(
            format!("mxc://{SERVER_NAME}/{id}"),
            record(SERVER_NAME, &id, &file, &bytes, &name, "text/plain"),
        );
        if i % 2 == 0 { &mut first } else { &mut second }.push((file, bytes.clone()));
        expected.push((format!("{SERVER_NAME}/{id}"), bytes, Some(name)));
    }
    // Two ids, one file in the archive.
    let shared = picture(40, 30, 9, image::ImageFormat::Png);
    for id in ["mmrshared01", "mmrshared02"] {
        media.insert(
            format!("mxc://{SERVER_NAME}/{id}"),
            record(SERVER_NAME, id, "shared.png", &shared, "", "image/png"),
        );
        expected.push((format!("{SERVER_NAME}/{id}"), shared.clone(), None));
    }
    second.push(("shared.png".to_owned(), shared.clone()));
    // Cached from another server.
    let remote = b"media of another server".repeat(20);
    media.insert(
        "mxc://other.example/mmrremote1".to_owned(),
        record(
            "other.example",
            "mmrremote1",
            "remote.bin",
            &remote,
            "r.bin",
            "application/octet-stream",
        ),
    );
    first.push(("remote.bin".to_owned(), remote.clone()));
    expected.push((
        "other.example/mmrremote1".to_owned(),
        remote,
        Some("r.bin".to_owned()),
    ));
    // Named in the manifest, in no part.
    media.insert(
        format!("mxc://{SERVER_NAME}/mmrabsent1"),
        record(
            SERVER_NAME,
            "mmrabsent1",
            "absent.bin",
            b"never",
            "",
            "text/plain",
        ),
    );
    // Not the bytes the manifest recorded.
    let mut tampered = record(
        SERVER_NAME,
        "mmrtamper1",
        "tamper.bin",
        b"original",
        "",
        "text/plain",
    );
    tampered["sha256"] = json!(sha256_hex(b"something else"));
    media.insert(format!("mxc://{SERVER_NAME}/mmrtamper1"), tampered);
    second.push(("tamper.bin".to_owned(), b"original".to_vec()));

    let manifest = json!({
        "version": 2,
        "entity_id": SERVER_NAME,
        "created_ts": 1_700_000_000_000i64,
        "media": media,
    });
    first.insert(
        0,
        (
            "manifest.json".to_owned(),
            serde_json::to_vec(&manifest).unwrap(),
        ),
    );
    first.push(("index.html".to_owned(), b"<html>an index</html>".to_vec()));
    let parts = [
        dir.path().join("export-part1.tgz"),
        dir.path().join("export-part2.tgz"),
    ];
    part(&parts[0], &first);
    part(&parts[1], &second);

    let config = cli_config(&t);
    // The part with the manifest given last: any order works.
    let import = || {
        mxmedia(vec![
            "import".into(),
            "mmr".into(),
            "--config".into(),
            config.clone().into(),
            parts[1].clone().into(),
            parts[0].clone().into(),
        ])
    };
    let report = import().await;
    println!("{report}");
    assert_eq!(report["entity"], SERVER_NAME);
    assert_eq!(report["total"], 11, "{report}");
    assert_eq!(report["local"], 8, "{report}");
    assert_eq!(report["remote"], 1, "{report}");
    assert_eq!(
        report["not_in_archives"],
        json!([format!("mxc://{SERVER_NAME}/mmrabsent1")])
    );
    let failed = report["failed"].as_array().unwrap();
    assert!(
        failed.len() == 1 && failed[0].as_str().unwrap().contains("mmrtamper1"),
        "{report}"
    );

    for (mxc, bytes, name) in &expected {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{mxc}"),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.status(), 200, "{mxc}");
        if let Some(name) = name {
            let disposition = resp.headers()["content-disposition"].to_str().unwrap();
            assert!(
                disposition.contains(&name.replace(' ', "%20")) || disposition.contains(name),
                "{disposition}"
            );
        }
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{mxc}"
        );
    }
    let info = t
        .server()
        .state()
        .media
        .media_info(&mxmedia::ids::MediaKey::parse(SERVER_NAME, "mmrlocal0001").unwrap())
        .await
        .unwrap();
    assert_eq!(
        info.uploader.as_deref(),
        Some(format!("@archived:{SERVER_NAME}").as_str())
    );
    // The shared file is stored once.
    let counts = t.counts().await;
    assert_eq!(counts.media, 9);
    assert_eq!(counts.blobs, 8);

    let again = import().await;
    assert_eq!(
        (again["local"].as_u64(), again["already_here"].as_u64()),
        (Some(0), Some(9)),
        "{again}"
    );
}
