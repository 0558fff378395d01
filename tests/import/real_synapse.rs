//! The real Synapse, on SQLite and on PostgreSQL: uploads through its own
//! media repository, `mxmedia import synapse --verify`, `mxmedia export
//! synapse`, and a fresh Synapse serving the export.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use super::{cli_config, common::*, mxmedia};
use crate::synapse::{Daemon, python, run, synapse_config, wait_until_up};

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

    /// Uploads through Synapse's own media repository; the media id.
    async fn upload(&self, bytes: &[u8], content_type: &str, name: &str) -> String {
        let resp: Value = reqwest::Client::new()
            .post(format!("{}/_matrix/media/v3/upload", self.url))
            .query(&[("filename", name)])
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        split_mxc(resp["content_uri"].as_str().unwrap()).1
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
            Some(Postgres::get().database(name).await)
        } else {
            None
        }
    };
    let source_db = database("synapse_source").await;
    let hs = Synapse::start(&dir.path().join("synapse"), source_db.as_deref()).await;

    // Uploads through Synapse's own media repository.
    let mut files = assorted(50);
    let mut uploaded = Vec::new();
    for (bytes, content_type, name) in &files {
        uploaded.push(hs.upload(bytes, content_type, name).await);
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
    let config = cli_config(&t);
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

    // The catch-up run after more uploads: only those are read and stored.
    let late = assorted(51).split_off(200);
    for (bytes, content_type, name) in &late {
        uploaded.push(hs.upload(bytes, content_type, name).await);
    }
    files.extend(late);
    let again = import().await;
    assert_eq!(
        (again["local"].as_u64(), again["already_here"].as_u64()),
        (Some(4), Some(count)),
        "{again}"
    );
    let count = files.len() as u64;
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
