//! Moving in from Synapse and back out: the real Synapse (from PyPI, on
//! SQLite and on a real PostgreSQL) with its own media repository, the
//! real `mxmedia` binary importing and exporting; an import killed midway
//! that resumes; each kind of media landing in the datastore it is routed to.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/synapse.rs"]
mod synapse;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::*;
use serde_json::{Value, json};
use synapse::{Daemon, python, run, synapse_config, wait_until_up};

/// Uploads of assorted types: (bytes, content type, file name); four
/// kinds, `rounds` of each.
fn assorted(rounds: u8) -> Vec<(Vec<u8>, &'static str, String)> {
    let mut out = Vec::new();
    for i in 0..rounds {
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

/// A running Synapse with an admin user `root` logged in.
struct Synapse {
    url: String,
    token: String,
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
    python: std::path::PathBuf,
    daemon: Option<Daemon>,
}

impl Synapse {
    /// A Synapse in `dir` (media store `dir/media_store`) on SQLite, or on
    /// the PostgreSQL database at `postgres`.
    async fn start(dir: &Path, postgres: Option<&str>) -> Self {
        let python = tokio::task::spawn_blocking(python).await.unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let config = synapse_config(dir, port, SERVER_NAME, true, postgres);
        run(Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config)
            .stdout(Stdio::null()));
        let mut synapse = Synapse {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            dir: dir.to_owned(),
            config,
            python,
            daemon: None,
        };
        synapse.up().await;
        run(Command::new(&synapse.python)
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
            .arg(&synapse.config)
            .arg(&synapse.url)
            .stdout(Stdio::null()));
        let login: Value = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/login", synapse.url))
            .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "root-password-1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        synapse.token = login["access_token"].as_str().unwrap().to_owned();
        synapse
    }

    async fn up(&mut self) {
        let log = self.dir.join("stdout.log");
        let mut daemon = Daemon::spawn(
            "synapse",
            Command::new(&self.python)
                .args(["-m", "synapse.app.homeserver", "-c"])
                .arg(&self.config),
            &log,
        );
        wait_until_up(&format!("{}/health", self.url), &mut daemon, &log).await;
        self.daemon = Some(daemon);
    }

    /// Stops Synapse (its database can then be written), then starts it
    /// again once `between` is done.
    async fn restart_after(&mut self, between: impl std::future::Future<Output = ()>) {
        drop(self.daemon.take());
        between.await;
        self.up().await;
    }

    async fn admin_post(&self, path: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }
}

/// Runs the `mxmedia` binary with `args`; its JSON report.
async fn mxmedia(args: Vec<std::ffi::OsString>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mxmedia"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
}

/// Runs `sql` (a whole script) on a SQLite file or a PostgreSQL URL.
async fn run_sql(database: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let url = if database.contains("://") {
        database.to_owned()
    } else {
        format!("sqlite://{database}")
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_on_sqlite_moves_in_and_back_out() {
    round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_on_postgres_moves_in_and_back_out() {
    round_trip(true).await;
}

/// Synapse (on SQLite or PostgreSQL) takes a few hundred uploads and makes
/// its thumbnails; one is quarantined and one protected. `mxmedia import
/// synapse --verify` (the real binary, while Synapse and mxmedia both run)
/// brings them over: every item downloads from mxmedia byte-identical with
/// its type and name, thumbnails are there without dynamic thumbnailing,
/// and a second run imports nothing again. Then `mxmedia export synapse`
/// writes them back out, a fresh Synapse loads the SQL, and serves every
/// item and a thumbnail again.
async fn round_trip(on_postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let database = |name: &'static str| async move {
        if on_postgres {
            Some(postgres::Postgres::get().database(name).await)
        } else {
            None
        }
    };
    let source_db = database("synapse_source").await;
    let hs = Synapse::start(&dir.path().join("synapse"), source_db.as_deref()).await;

    // Uploads through Synapse's own media repository.
    let files = assorted(50);
    let http = reqwest::Client::new();
    let mut uploaded = Vec::new();
    for (bytes, content_type, name) in &files {
        let resp: Value = http
            .post(format!("{}/_matrix/media/v3/upload", hs.url))
            .query(&[("filename", name)])
            .bearer_auth(&hs.token)
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
    hs.admin_post(&format!(
        "/_synapse/admin/v1/media/quarantine/{SERVER_NAME}/{}",
        uploaded[0]
    ))
    .await;
    hs.admin_post(&format!("/_synapse/admin/v1/media/protect/{}", uploaded[1]))
        .await;
    let source_db = source_db.unwrap_or_else(|| {
        dir.path()
            .join("synapse/homeserver.db")
            .display()
            .to_string()
    });

    // mxmedia, importing with the real binary while Synapse runs.
    let t = TestServer::start_with(|c| {
        c.media.freeze_unauthenticated = true;
        c.thumbnails.dynamic = false;
    })
    .await;
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
        mxmedia(vec![
            "import".into(),
            "synapse".into(),
            "--verify".into(),
            "--config".into(),
            config.clone().into(),
            "--media-store".into(),
            dir.path().join("synapse/media_store").into(),
            "--database".into(),
            source_db.clone().into(),
        ])
    };
    let started = std::time::Instant::now();
    let report = import().await;
    let total: usize = files.iter().map(|f| f.0.len()).sum();
    println!(
        "imported {} items ({total} bytes) in {:?}: {report}",
        files.len(),
        started.elapsed()
    );
    let count = files.len() as u64;
    assert_eq!(report["total"], count, "{report}");
    assert_eq!(report["local"], count, "{report}");
    assert_eq!(report["bytes"], total as u64);
    assert_eq!(report["verified"], count, "{report}");
    assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["verify_failed"].as_array().unwrap().is_empty());
    assert!(
        report["missing_files"].as_array().unwrap().is_empty(),
        "{report}"
    );
    // 100 images, the quarantined one excepted, each at the default sizes.
    assert!(
        report["thumbnails_made"].as_u64().unwrap() >= 99,
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
    // Made by the import: this server makes none on request.
    let resp = t
        .get(
            &format!(
                "/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{}?width=32&height=32&method=crop",
                uploaded[4]
            ),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(image::load_from_memory(&resp.bytes().await.unwrap()).is_ok());
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
        (Some(0), Some(count)),
        "{again}"
    );
    drop(hs);

    // Back out: a fresh Synapse loads the export and serves it all.
    let back = dir.path().join("back");
    let exported = mxmedia(vec![
        "export".into(),
        "synapse".into(),
        "--config".into(),
        config.clone().into(),
        "--media-store".into(),
        back.join("media_store").into(),
        "--sql".into(),
        back.join("media.sql").into(),
    ])
    .await;
    println!("exported: {exported}");
    assert_eq!(exported["local"], count, "{exported}");
    assert!(exported["thumbnails"].as_u64().unwrap() >= 99, "{exported}");
    assert!(exported["skipped"].as_array().unwrap().is_empty());
    let back_db = database("synapse_back").await;
    let mut synapse = Synapse::start(&back, back_db.as_deref()).await;
    let back_db = back_db.unwrap_or_else(|| back.join("homeserver.db").display().to_string());
    let sql = std::fs::read_to_string(back.join("media.sql")).unwrap();
    synapse.restart_after(run_sql(&back_db, &sql)).await;
    for (i, ((bytes, content_type, name), id)) in files.iter().zip(&uploaded).enumerate() {
        let resp = synapse
            .get(&format!(
                "/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"
            ))
            .await;
        if i == 0 {
            assert_eq!(resp.status(), 404, "quarantined in Synapse too");
            continue;
        }
        assert_eq!(resp.status(), 200, "{name}");
        // Synapse adds a charset to text types.
        let served = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(served.starts_with(content_type), "{served}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    let resp = synapse
        .get(&format!(
            "/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{}?width=32&height=32&method=crop",
            uploaded[4]
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(image::load_from_memory(&resp.bytes().await.unwrap()).is_ok());
}

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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
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

fn files_under(dir: &Path) -> usize {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.len()
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
