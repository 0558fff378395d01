//! Federation with the real Synapse from PyPI, both ways, over TLS on
//! 127.0.0.1: Synapse (its own media repository on, TLS listener, trusting
//! the test CA) fetches media from an mxmedia deployment, and mxmedia
//! fetches media that Synapse serves. Each side checks the other's
//! `X-Matrix` signature against keys fetched from the other.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/synapse.rs"]
mod synapse;
#[path = "common/tls.rs"]
mod tls;

use std::{path::Path, process::Command};

use common::*;
use synapse::{Daemon, free_port, python, run, wait_until_up};
use tls::{TestCa, TlsFront};
use tokio::net::TcpListener;

fn synapse_config(dir: &Path, port: u16, ca: &TestCa) -> std::path::PathBuf {
    let (cert, key) = ca.leaf_pem(&["127.0.0.1"]);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let ca_path = ca.write(dir);
    let d = dir.display();
    let config = format!(
        r#"server_name: "127.0.0.1:{port}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: true
    resources:
      - names: [client, federation, keys]
        compress: false
tls_certificate_path: "{d}/tls.crt"
tls_private_key_path: "{d}/tls.key"
federation_custom_ca_list: ["{}"]
federation_verify_certificates: true
# IP-literal server names are checked against the blocklist alone.
ip_range_blacklist: []
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
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: "federation-test-macaroon"
form_secret: "federation-test-form"
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
"#,
        ca_path.display()
    );
    std::fs::write(
        dir.join("log.yaml"),
        "version: 1\nformatters:\n  plain:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\nhandlers:\n  console:\n    class: logging.StreamHandler\n    formatter: plain\nroot:\n  level: INFO\n  handlers: [console]\ndisable_existing_loggers: false\n",
    )
    .unwrap();
    let path = dir.join("homeserver.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_mxmedia_fetch_each_others_media() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let ca = TestCa::new();
    let work = tempfile::tempdir().unwrap();

    // Synapse, named after its TLS listener.
    let hs_dir = work.path().join("synapse");
    std::fs::create_dir_all(&hs_dir).unwrap();
    let hs_port = free_port();
    let hs_name = format!("127.0.0.1:{hs_port}");
    let hs_config = synapse_config(&hs_dir, hs_port, &ca);
    run(Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
        .arg(&hs_config)
        .stdout(std::process::Stdio::null()));
    let hs_log = hs_dir.join("stdout.log");
    let mut synapse = Daemon::spawn(
        "synapse",
        Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&hs_config),
        &hs_log,
    );
    wait_until_up(&format!("https://{hs_name}/health"), &mut synapse, &hs_log).await;
    let https = ca.client();
    let hs = format!("https://{hs_name}");
    let registered: serde_json::Value = https
        .post(format!("{hs}/_matrix/client/v3/register"))
        .json(&serde_json::json!({
            "username": "carol", "password": "carol-password-1", "auth": {"type": "m.login.dummy"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let carol = registered["access_token"].as_str().unwrap().to_owned();

    // mxmedia, named after its TLS front.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mx_name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let keys = tempfile::tempdir().unwrap();
    let ca_path = ca.write(keys.path());
    let seed: [u8; 32] = rand::random();
    let key_path = keys.path().join("signing.key");
    std::fs::write(
        &key_path,
        format!(
            "ed25519 mx1 {}\n",
            ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(seed.to_vec()).encode()
        ),
    )
    .unwrap();
    let name = mx_name.clone();
    let t = TestServer::start_with(move |c| {
        c.server_name = name.as_str().try_into().unwrap();
        c.federation.signing_key_path = Some(key_path);
        c.federation.extra_ca_path = Some(ca_path);
        c.federation.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let _front = TlsFront::serve(listener, &ca, &["127.0.0.1"], t.addr());

    // Synapse fetches our media over federation for its user.
    let (_, ours) = t
        .upload_ok(
            ALICE,
            b"served by mxmedia",
            Some("text/plain"),
            Some("ours.txt"),
        )
        .await;
    let resp = https
        .get(format!(
            "{hs}/_matrix/client/v1/media/download/{mx_name}/{ours}"
        ))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "Synapse could not fetch from mxmedia: {}\n{}",
        String::from_utf8_lossy(&body),
        std::fs::read_to_string(&hs_log).unwrap_or_default()
    );
    assert_eq!(&body[..], b"served by mxmedia");

    // mxmedia fetches Synapse's media for our user.
    let uploaded: serde_json::Value = https
        .post(format!("{hs}/_matrix/media/v3/upload?filename=theirs.txt"))
        .bearer_auth(&carol)
        .header("content-type", "text/plain")
        .body("served by synapse")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs = uploaded["content_uri"].as_str().unwrap();
    let (server, id) = split_mxc(theirs);
    assert_eq!(server, hs_name);
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{server}/{id}"),
            Some(ALICE),
        )
        .await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "mxmedia could not fetch from Synapse: {}\n{}",
        String::from_utf8_lossy(&body),
        std::fs::read_to_string(&hs_log).unwrap_or_default()
    );
    assert_eq!(&body[..], b"served by synapse");
    assert_eq!(headers["content-type"], "text/plain");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("theirs.txt")
    );
    drop(synapse);
}
