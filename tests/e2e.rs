//! End to end with the real pieces: Synapse from PyPI (pinned) as the
//! homeserver, nginx with exactly the configuration `docs/reverse-proxy.md`
//! gives admins, mxmedia behind it with its datastores routed by kind (users'
//! media in an S3 bucket, thumbnails and remote media on disk), and
//! matrix-nio and mautrix (for direct uploads, MSC3870) as the clients, all
//! on 127.0.0.1. The clients only ever talk to the proxy, except for a
//! direct upload's PUT, which goes straight to the bucket.
//!
//! The Python packages go into a virtualenv under `target/` that is made on
//! first use and kept; nginx comes from the system (`.ci/run` installs
//! Debian's when it is missing).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mxmedia::{app::Server, config::Config};
use synapse::{Daemon, free_port, python, root, run, synapse_config, wait_until_up};

mod common;
#[path = "common/synapse.rs"]
mod synapse;

const SERVER_NAME: &str = "e2e.test";
const MAX_UPLOAD: u64 = 8 * 1024 * 1024;

fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "nginx is needed for the end-to-end tests: apt-get install nginx-light (.ci/run does)",
        )
}

/// The tested nginx block from the docs, with only the certificate paths,
/// the log path and the addresses replaced.
fn nginx_config(dir: &Path, port: u16, synapse: u16, mxmedia: u16) -> PathBuf {
    let doc = std::fs::read_to_string(root().join("docs/reverse-proxy.md")).unwrap();
    let block = doc
        .split("<!-- e2e:nginx:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- e2e:nginx:end -->").next())
        .expect("docs/reverse-proxy.md marks its tested nginx block");
    let block = block
        .trim()
        .strip_prefix("```nginx")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the tested block is one nginx code fence");
    let d = dir.display();
    let mut site = block.to_owned();
    for (from, to) in [
        (
            "listen 443 ssl http2;",
            format!("listen 127.0.0.1:{port} ssl http2;"),
        ),
        (
            "/etc/letsencrypt/live/matrix.example.org/fullchain.pem",
            format!("{d}/cert.pem"),
        ),
        (
            "/etc/letsencrypt/live/matrix.example.org/privkey.pem",
            format!("{d}/key.pem"),
        ),
        (
            "/var/log/nginx/matrix.access.log",
            format!("{d}/access.log"),
        ),
        ("127.0.0.1:8008", format!("127.0.0.1:{synapse}")),
        ("127.0.0.1:8009", format!("127.0.0.1:{mxmedia}")),
    ] {
        assert!(site.contains(from), "the documented block has `{from}`");
        site = site.replace(from, &to);
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let main = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  access_log off;\n  include {d}/site.conf;\n}}\n"
    );
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).unwrap();
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=matrix.example.org",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null()));
    path
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_clients_use_mxmedia_through_nginx_next_to_synapse() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hs_dir = dir.path().join("synapse");
    let proxy_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&hs_dir).unwrap();
    std::fs::create_dir_all(&proxy_dir).unwrap();

    // Synapse.
    let hs_port = free_port();
    // Configured as `docs/synapse.md` says: its media repository off.
    let hs_config = synapse_config(&hs_dir, hs_port, SERVER_NAME, false, None);
    run(Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
        .arg(&hs_config)
        .stdout(Stdio::null()));
    let hs_log = hs_dir.join("stdout.log");
    let mut synapse = Daemon::spawn(
        "synapse",
        Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&hs_config),
        &hs_log,
    );
    wait_until_up(
        &format!("http://127.0.0.1:{hs_port}/health"),
        &mut synapse,
        &hs_log,
    )
    .await;

    // A server admin, made the way admins make one.
    run(Command::new(&python)
        .args([
            "-m",
            "synapse._scripts.register_new_matrix_user",
            "--admin",
            "-u",
            "moderator",
            "-p",
            "pw-moderator-e2e",
            "-c",
        ])
        .arg(&hs_config)
        .arg(format!("http://127.0.0.1:{hs_port}"))
        .stdout(Stdio::null()));

    // mxmedia, checking tokens with Synapse directly. Datastores routed by
    // kind: users' media in a bucket that clients may upload to straight
    // (MSC3870), thumbnails and remote media on local disk.
    let bucket = common::S3Server::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mx_port = listener.local_addr().unwrap().port();
    let config = Config::from_yaml(
        &format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nhomeserver:\n  url: http://127.0.0.1:{hs_port}\n  token_cache_ttl: 1s\n  token_negative_cache_ttl: 1s\nmedia:\n  max_upload_size: {MAX_UPLOAD}\ntrusted_proxies: ['127.0.0.1/32']\nmetrics:\n  listen: 127.0.0.1:0\ndatastores:\n  - {{type: local, id: local, kinds: [thumbnails, remote_media]}}\n  - {{type: s3, id: bucket, provider: minio, endpoint: '{}', bucket: {}, access_key_id: {}, secret_access_key: {}, kinds: [local_media], direct_uploads: {{enabled: true}}}}\n",
            dir.path().join("mxmedia").display(),
            bucket.endpoint(),
            common::S3_BUCKET,
            common::S3_ACCESS_KEY,
            common::S3_SECRET_KEY,
        ),
        std::iter::empty(),
    )
    .unwrap();
    let server = Server::start_on(listener, &config).await.unwrap();

    // nginx with the documented configuration.
    let proxy_port = free_port();
    let nginx_conf = nginx_config(&proxy_dir, proxy_port, hs_port, mx_port);
    let nginx_log = proxy_dir.join("stdout.log");
    let mut proxy = Daemon::spawn(
        "nginx",
        Command::new(nginx())
            .arg("-p")
            .arg(&proxy_dir)
            .arg("-c")
            .arg(&nginx_conf)
            .args(["-g", "daemon off;"]),
        &nginx_log,
    );
    wait_until_up(
        &format!("https://127.0.0.1:{proxy_port}/_matrix/client/versions"),
        &mut proxy,
        &nginx_log,
    )
    .await;

    // The client, through the proxy only.
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(root().join("tests/e2e/client.py"))
            .env("E2E_BASE", format!("https://127.0.0.1:{proxy_port}"))
            .env("E2E_MAX_UPLOAD", MAX_UPLOAD.to_string())
            .env("E2E_TOKEN_TTL", "1")
            .env("E2E_ADMIN", "moderator:pw-moderator-e2e")
            .env("E2E_BUCKET", bucket.endpoint())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout}\n{}\nsynapse log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&hs_log).unwrap_or_default()
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    eprintln!("client report: {report}");
    assert_eq!(report["ok"], true, "{stdout}");
    assert!(
        report["seen"]["mxc"]
            .as_str()
            .unwrap()
            .starts_with(&format!("mxc://{SERVER_NAME}/"))
    );

    // The media is mxmedia's: four uploads recorded (one of them straight
    // into the bucket; a fifth, posted in a room, quarantined and deleted
    // by the admin), none in Synapse's store.
    let counts = server.state().media.counts().await.unwrap();
    assert_eq!(counts.media, 4, "{counts:?}");
    assert_eq!(files_under(&hs_dir.join("media_store")), 0);
    // Each kind where it was routed: the users' media in the bucket, the
    // thumbnails on disk. The deleted item's object left the bucket: every
    // object, the ownership markers aside, is a blob a record still needs.
    let evidence = report["seen"]["evidence"].as_str().unwrap();
    let (s, id) = common::split_mxc(evidence);
    let key = mxmedia::ids::MediaKey::parse(&s, &id).unwrap();
    assert!(server.state().media.media_info(&key).await.is_err());
    let in_bucket = bucket
        .leftovers()
        .iter()
        .filter(|p| !p.ends_with("mxmedia-owner.json"))
        .count();
    let on_disk = files_under(&dir.path().join("mxmedia/media")) - 1;
    assert_eq!(in_bucket, 4, "the four uploads' distinct bytes");
    assert!(on_disk >= 2, "the two thumbnails asked for: {on_disk}");
    assert_eq!(
        (in_bucket + on_disk) as u64,
        counts.blobs,
        "no object outlives its records"
    );
    // The direct upload was completed through the proxy.
    let metrics_addr = server.metrics_addr().unwrap();
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("com.beeper.msc3870")
            && l.contains("status=\"200\"")
            && l.ends_with(" 1")),
        "one completed direct upload"
    );
    // The proxy's access log has the requests, and never a token.
    let access = std::fs::read_to_string(proxy_dir.join("access.log")).unwrap();
    assert!(access.contains("/_matrix/client/v1/media/download/"));
    assert!(!access.contains("access_token"), "tokens stay out of logs");

    drop(proxy);
    server.stop().await;
    drop(synapse);
}
