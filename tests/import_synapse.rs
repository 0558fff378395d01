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
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;
use serde_json::{Value, json};
use synapse::{Daemon, python, run, wait_until_up};

fn synapse_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    let config = format!(
        r#"server_name: "{SERVER_NAME}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.yaml"
media_store_path: "{d}/media_store"
signing_key_path: "{d}/signing.key"
enable_media_repo: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "import-registration-secret"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: "import-macaroon-secret"
form_secret: "import-form-secret"
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_media_create: {{per_second: 1000, burst_count: 1000}}
"#
    );
    let log = "version: 1\nformatters:\n  plain:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\nhandlers:\n  console:\n    class: logging.StreamHandler\n    formatter: plain\nroot:\n  level: WARNING\n  handlers: [console]\ndisable_existing_loggers: false\n";
    std::fs::write(dir.join("log.yaml"), log).unwrap();
    let path = dir.join("homeserver.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

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
    let hs_config = synapse_config(&hs_dir, hs_port);
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
