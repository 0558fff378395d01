//! Synapse-shaped media stores made here (its tables and file layout), for
//! runs too large to upload through Synapse: routing by kind, per-item
//! failures, `kill -9` at random points.

use std::{path::Path, process::Stdio};

use serde_json::{Value, json};

use super::{common::*, files_under, mxmedia, sha256_hex};

/// A media store and database shaped like Synapse's (its table and file
/// layout), with `count` small local files, for runs too large to upload
/// through Synapse itself; the pool stays open for more rows.
async fn synthetic_synapse(dir: &Path, count: usize) -> (sqlx::AnyPool, Vec<(String, Vec<u8>)>) {
    let db = dir.join("homeserver.db");
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE local_media_repository (media_id TEXT, media_type TEXT, media_length INTEGER, created_ts BIGINT, upload_name TEXT, user_id TEXT, quarantined_by TEXT, url_cache TEXT, last_access_ts BIGINT, safe_from_quarantine BOOLEAN DEFAULT 0 NOT NULL, authenticated BOOLEAN DEFAULT 0 NOT NULL, sha256 TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE remote_media_cache (media_origin TEXT, media_id TEXT, media_type TEXT, created_ts BIGINT, upload_name TEXT, media_length INTEGER, filesystem_id TEXT, last_access_ts BIGINT, quarantined_by TEXT, authenticated BOOLEAN DEFAULT 0 NOT NULL, sha256 TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let mut items = Vec::new();
    for i in 0..count {
        let id = format!("synth{i:07}abcdefghijklmno");
        let bytes = format!("synthetic media {i} ")
            .repeat(20 + i % 50)
            .into_bytes();
        add_local(&pool, dir, &id, &bytes, Some(&sha256_hex(&bytes))).await;
        items.push((id, bytes));
    }
    (pool, items)
}

/// One local row and its file (`bytes: None` leaves the file out).
async fn add_local(pool: &sqlx::AnyPool, dir: &Path, id: &str, bytes: &[u8], sha256: Option<&str>) {
    let path = dir
        .join("media_store/local_content")
        .join(&id[0..2])
        .join(&id[2..4]);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(&id[4..]), bytes).unwrap();
    sqlx::query("INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, upload_name, user_id, sha256) VALUES ($1, 'text/plain', $2, $3, $4, '@mover:test.local', $5)")
        .bind(id.to_owned())
        .bind(bytes.len() as i64)
        .bind(1_700_000_000_000i64)
        .bind(format!("{id}.txt"))
        .bind(sha256.map(str::to_owned))
        .execute(pool)
        .await
        .unwrap();
}

/// One cached remote row from `origin` and its file, named by a
/// filesystem id as Synapse does.
async fn add_remote(pool: &sqlx::AnyPool, dir: &Path, origin: &str, id: &str, bytes: &[u8]) {
    let file_id = format!("fs{id}");
    let path = dir
        .join("media_store/remote_content")
        .join(origin)
        .join(&file_id[0..2])
        .join(&file_id[2..4]);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(&file_id[4..]), bytes).unwrap();
    sqlx::query("INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name, media_length, filesystem_id, sha256) VALUES ($1, $2, 'application/octet-stream', $3, NULL, $4, $5, $6)")
        .bind(origin.to_owned())
        .bind(id.to_owned())
        .bind(1_700_000_000_000i64)
        .bind(bytes.len() as i64)
        .bind(file_id)
        .bind(sha256_hex(bytes))
        .execute(pool)
        .await
        .unwrap();
}

/// Each kind goes where the config routes it: local media (and
/// thumbnails) to S3, cached remote media to a local directory, straight
/// from the media store on disk. Past the rows it cannot import (a missing
/// file, bytes that are not what Synapse recorded, a URL-preview entry) it
/// carries on and reports each with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_lands_where_it_is_routed() {
    let source = tempfile::tempdir().unwrap();
    let (pool, local) = synthetic_synapse(source.path(), 20).await;
    let mut remote = Vec::new();
    for i in 0..10 {
        let id = format!("remote{i:03}media");
        let bytes = format!("cached from elsewhere {i} ")
            .repeat(30)
            .into_bytes();
        add_remote(&pool, source.path(), "other.example", &id, &bytes).await;
        remote.push((id, bytes));
    }
    // Not imported, each for its own reason.
    add_local(&pool, source.path(), "missingfile0001", b"gone", None).await;
    std::fs::remove_file(
        source
            .path()
            .join("media_store/local_content/mi/ss/ingfile0001"),
    )
    .unwrap();
    add_local(
        &pool,
        source.path(),
        "tampered000001",
        b"changed bytes",
        Some(&sha256_hex(b"original bytes")),
    )
    .await;
    sqlx::query("INSERT INTO local_media_repository (media_id, media_type, url_cache) VALUES ('previewcache01', 'text/html', 'https://example.org/')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let s3 = S3Server::start().await;
    let hs = FakeHomeserver::start().await;
    let target = tempfile::tempdir().unwrap();
    let remote_dir = target.path().join("remote");
    let config = target.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\ndatastores:\n  - {{type: s3, id: s3, provider: minio, endpoint: '{}', bucket: {S3_BUCKET}, access_key_id: {S3_ACCESS_KEY}, secret_access_key: {S3_SECRET_KEY}, kinds: [local_media, thumbnails]}}\n  - {{type: local, id: remote, path: {}, kinds: [remote_media]}}\n",
            target.path().display(),
            hs.url,
            s3.endpoint(),
            remote_dir.display()
        ),
    )
    .unwrap();
    let report = mxmedia(vec![
        "import".into(),
        "synapse".into(),
        "--verify".into(),
        "--config".into(),
        config.into(),
        "--media-store".into(),
        source.path().join("media_store").into(),
        "--database".into(),
        source.path().join("homeserver.db").into(),
    ])
    .await;
    println!("{report}");
    assert_eq!(report["total"], 33, "{report}");
    assert_eq!(report["local"], 20, "{report}");
    assert_eq!(report["remote"], 10, "{report}");
    assert_eq!(report["verified"], 30, "{report}");
    assert_eq!(report["skipped_url_cache"], 1, "{report}");
    assert_eq!(
        report["missing_files"],
        json!([format!("mxc://{SERVER_NAME}/missingfile0001")]),
        "{report}"
    );
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(
        failed[0].as_str().unwrap().contains("tampered000001")
            && failed[0].as_str().unwrap().contains("SHA-256"),
        "{report}"
    );
    assert_eq!(files_under(&s3.root.path().join(S3_BUCKET)), local.len());
    assert_eq!(files_under(&remote_dir), remote.len());
}

/// `kill -9` of a standalone import at three random points, then the same
/// command once more: it carries on each time, every item arrives once and
/// byte-identical, and nothing is left over once the sweep has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_at_random_points_resumes() {
    const COUNT: usize = 3000;
    let source = tempfile::tempdir().unwrap();
    let (pool, items) = synthetic_synapse(source.path(), COUNT).await;
    pool.close().await;
    let target = tempfile::tempdir().unwrap();
    let media = target.path().join("media");
    let hs = FakeHomeserver::start().await;
    let config = target.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\nmedia: {{orphan_grace: 0s}}\ndatastores:\n  - {{type: local, id: local, path: {}}}\n",
            target.path().display(),
            hs.url,
            media.display()
        ),
    )
    .unwrap();
    let command = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"));
        command
            .args(["import", "synapse", "--config"])
            .arg(&config)
            .arg("--media-store")
            .arg(source.path().join("media_store"))
            .arg("--database")
            .arg(source.path().join("homeserver.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let mut points: Vec<usize> = (0..3)
        .map(|_| rand::random_range(COUNT / 10..COUNT * 9 / 10))
        .collect();
    points.sort_unstable();
    for point in points {
        let mut run = command().spawn().unwrap();
        let mut waited = 0;
        while files_under(&media) < point {
            std::thread::sleep(std::time::Duration::from_millis(5));
            waited += 1;
            assert!(waited < 60_000, "the import never got going");
            assert!(
                run.try_wait().unwrap().is_none(),
                "the import finished before the kill at {point}"
            );
        }
        run.kill().unwrap(); // SIGKILL
        run.wait().unwrap();
        println!(
            "killed at {} of {COUNT} objects written",
            files_under(&media)
        );
    }

    let started = std::time::Instant::now();
    let out = command().output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let report: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    println!("resumed in {:?}: {report}", started.elapsed());
    let done = report["local"].as_u64().unwrap() + report["already_here"].as_u64().unwrap();
    assert_eq!(done, COUNT as u64, "{report}");
    assert!(
        report["already_here"].as_u64().unwrap() > 0,
        "the last run carried on: {report}"
    );

    // Served byte-identical, each once; nothing orphaned once swept.
    let (data, store) = (target.path().to_owned(), media.clone());
    let server = TestServer::start_with(move |c| {
        c.data_dir = data;
        c.media.orphan_grace = std::time::Duration::ZERO;
        c.datastores = vec![mxmedia::config::DatastoreConfig::Local(
            mxmedia::config::LocalDatastoreConfig {
                id: "local".into(),
                path: Some(store),
                ..Default::default()
            },
        )];
    })
    .await;
    for (id, bytes) in items.iter().step_by(97) {
        let resp = server
            .http
            .get(server.url(&format!(
                "/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"
            )))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{id}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    let state = server.counts().await;
    assert_eq!(state.media, COUNT as u64);
    // A kill may have left an object or a staging file of the write it
    // interrupted: the sweep removes them, and then there is nothing more.
    let media_service = &server.server().state().media;
    media_service.sweep().await.unwrap();
    let again = media_service.sweep().await.unwrap();
    assert_eq!(again.orphan_blobs + again.staging_files, 0, "{again:?}");
    let fsck = media_service
        .fsck(&mxmedia::media::FsckRequest { repair: false })
        .await
        .unwrap();
    assert!(
        fsck.missing.is_empty() && fsck.orphans.is_empty(),
        "{fsck:?}"
    );
    assert_eq!(
        files_under(&media),
        COUNT,
        "one object per item, nothing left over"
    );
    assert_eq!(server.counts().await.blobs, COUNT as u64);
}
