//! Moving in from Synapse: the real Synapse (from PyPI, SQLite) with its
//! own media repository takes uploads of assorted types, quarantines one
//! and protects one; `mxmedia import synapse` (the real binary, while
//! Synapse still runs) brings them over, and every item downloads from
//! mxmedia byte-identical with the same type and name; a second run imports
//! nothing again.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/synapse.rs"]
mod synapse;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::*;
use serde_json::{Value, json};
use synapse::{Daemon, python, run, synapse_config, wait_until_up};

/// Uploads of assorted types: (bytes, content type, file name).
fn assorted() -> Vec<(Vec<u8>, &'static str, String)> {
    let mut out = Vec::new();
    for i in 0..8u8 {
        out.push((
            picture(64 + u32::from(i), 48, i, image::ImageFormat::Png),
            "image/png",
            format!("pic{i}.png"),
        ));
        out.push((
            picture(80, 60 + u32::from(i), i, image::ImageFormat::Jpeg),
            "image/jpeg",
            format!("photo {i}.jpg"),
        ));
        out.push((
            format!("note number {i}\n").repeat(50).into_bytes(),
            "text/plain",
            format!("note{i}.txt"),
        ));
        out.push((
            (0..40_000u32)
                .map(|j| (j * 7 + u32::from(i)) as u8)
                .collect(),
            "application/octet-stream",
            format!("blob{i}.bin"),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_media_moves_in_verified_and_resumable() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hs_dir = dir.path().join("synapse");
    std::fs::create_dir_all(&hs_dir).unwrap();
    let hs_port = free_port();
    let hs_config = synapse_config(&hs_dir, hs_port, SERVER_NAME, true);
    run(Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
        .arg(&hs_config)
        .stdout(Stdio::null()));
    let hs_log = hs_dir.join("stdout.log");
    let mut synapse_daemon = Daemon::spawn(
        "synapse",
        Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&hs_config),
        &hs_log,
    );
    let hs = format!("http://127.0.0.1:{hs_port}");
    wait_until_up(&format!("{hs}/health"), &mut synapse_daemon, &hs_log).await;
    run(Command::new(&python)
        .args([
            "-m",
            "synapse._scripts.register_new_matrix_user",
            "--admin",
            "-u",
            "root",
            "-p",
            "root-password-1",
            "-c",
        ])
        .arg(&hs_config)
        .arg(&hs)
        .stdout(Stdio::null()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login: Value = http
        .post(format!("{hs}/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "root-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();

    // Uploads through Synapse's own media repository.
    let files = assorted();
    let mut uploaded = Vec::new();
    for (bytes, content_type, name) in &files {
        let resp: Value = http
            .post(format!("{hs}/_matrix/media/v3/upload"))
            .query(&[("filename", name)])
            .bearer_auth(&token)
            .header("content-type", *content_type)
            .body(bytes.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mxc = resp["content_uri"].as_str().unwrap().to_owned();
        uploaded.push(split_mxc(&mxc).1);
    }
    let admin = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let resp = http
                .post(path)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    admin(format!(
        "{hs}/_synapse/admin/v1/media/quarantine/{SERVER_NAME}/{}",
        uploaded[0]
    ))
    .await;
    admin(format!(
        "{hs}/_synapse/admin/v1/media/protect/{}",
        uploaded[1]
    ))
    .await;

    // mxmedia, importing with the real binary while Synapse runs.
    let t = TestServer::start_with(|c| c.media.freeze_unauthenticated = true).await;
    let config = t.dir.path().join("import.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nhomeserver: {{url: '{}'}}\nselfcheck_on_start: false\n{}",
            t.dir.path().display(),
            t.hs.url,
            datastores_yaml(backend(), t.s3.as_ref())
        ),
    )
    .unwrap();
    let import = || {
        let (config, store, db) = (
            config.clone(),
            hs_dir.join("media_store"),
            hs_dir.join("homeserver.db"),
        );
        async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_mxmedia"))
                    .args(["import", "synapse", "--config"])
                    .arg(&config)
                    .arg("--media-store")
                    .arg(&store)
                    .arg("--database")
                    .arg(&db)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            let json = &text[text.find('{').unwrap()..];
            serde_json::from_str::<Value>(json).unwrap()
        }
    };
    let started = std::time::Instant::now();
    let report = import().await;
    let total: usize = files.iter().map(|f| f.0.len()).sum();
    println!(
        "imported {} items ({total} bytes) in {:?}: {report}",
        files.len(),
        started.elapsed()
    );
    assert_eq!(report["local"], files.len() as u64, "{report}");
    assert_eq!(report["bytes"], total as u64);
    assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
    assert!(
        report["missing_files"].as_array().unwrap().is_empty(),
        "{report}"
    );

    for (i, ((bytes, content_type, name), id)) in files.iter().zip(&uploaded).enumerate() {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"),
                Some(ALICE),
            )
            .await;
        if i == 0 {
            assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
            continue;
        }
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["content-type"], *content_type);
        let disposition = resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            disposition.contains(&name.replace(' ', "%20")) || disposition.contains(name.as_str()),
            "{disposition}"
        );
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{name}"
        );
    }
    let media = &t.server().state().media;
    let key = |id: &str| mxmedia::ids::MediaKey::parse(SERVER_NAME, id).unwrap();
    let quarantined = media.media_info(&key(&uploaded[0])).await.unwrap();
    assert_eq!(
        quarantined.quarantined_by.as_deref(),
        Some(format!("@root:{SERVER_NAME}").as_str())
    );
    assert!(
        media
            .media_info(&key(&uploaded[1]))
            .await
            .unwrap()
            .protected
    );
    assert_eq!(
        media
            .media_info(&key(&uploaded[2]))
            .await
            .unwrap()
            .uploader
            .as_deref(),
        Some(format!("@root:{SERVER_NAME}").as_str())
    );

    // Again: nothing is read or stored twice.
    let again = import().await;
    assert_eq!(
        (again["local"].as_u64(), again["already_here"].as_u64()),
        (Some(0), Some(files.len() as u64)),
        "{again}"
    );
    drop(synapse_daemon);
}

/// A media store and database shaped like Synapse's (its table and file
/// layout), with `count` small files, for runs too large to upload through
/// Synapse itself.
async fn synthetic_synapse(dir: &Path, count: usize) -> Vec<(String, Vec<u8>)> {
    use sha2::Digest;
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
        let path = dir
            .join("media_store/local_content")
            .join(&id[0..2])
            .join(&id[2..4]);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(&id[4..]), &bytes).unwrap();
        sqlx::query("INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, upload_name, user_id, sha256) VALUES ($1, 'text/plain', $2, $3, $4, '@mover:test.local', $5)")
            .bind(id.clone())
            .bind(bytes.len() as i64)
            .bind(1_700_000_000_000i64 + i as i64)
            .bind(format!("file{i}.txt"))
            .bind(hex::encode(sha2::Sha256::digest(&bytes)))
            .execute(&pool)
            .await
            .unwrap();
        items.push((id, bytes));
    }
    pool.close().await;
    items
}

/// `kill -9` of a standalone import midway, then the same command again:
/// it carries on, every item arrives once and byte-identical, and nothing
/// is left over once the sweep has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_resumes() {
    const COUNT: usize = 3000;
    let source = tempfile::tempdir().unwrap();
    let items = synthetic_synapse(source.path(), COUNT).await;
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
    let mut first = command().spawn().unwrap();
    let files = |dir: &Path| {
        let mut out = Vec::new();
        walk(dir, &mut out);
        out.len()
    };
    let mut waited = 0;
    while files(&media) < COUNT / 4 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        waited += 1;
        assert!(waited < 60_000, "the import never got going");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the import finished before the kill"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = files(&media);
    println!("killed with {at_kill} of {COUNT} objects written");
    assert!(
        at_kill < COUNT + 1,
        "the kill came too late to test anything"
    );

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
        "the second run carried on: {report}"
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
    // The kill may have left an object or a staging file of the write it
    // interrupted: the sweep removes it, and then there is nothing more.
    let media_service = &server.server().state().media;
    media_service.sweep().await.unwrap();
    let again = media_service.sweep().await.unwrap();
    assert_eq!(again.orphan_blobs + again.staging_files, 0, "{again:?}");
    let fsck = server
        .server()
        .state()
        .media
        .fsck(&mxmedia::media::FsckRequest { repair: false })
        .await
        .unwrap();
    assert!(
        fsck.missing.is_empty() && fsck.orphans.is_empty(),
        "{fsck:?}"
    );
    assert_eq!(
        files(&media),
        COUNT,
        "one object per item, nothing left over"
    );
    assert_eq!(server.counts().await.blobs, COUNT as u64);
}
