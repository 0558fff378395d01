//! End to end with the real pieces: Synapse from PyPI (pinned) as the
//! homeserver, nginx with exactly the configuration `docs/reverse-proxy.md`
//! gives admins, mxmedia behind it with its datastores routed by kind (users'
//! media in an S3 bucket, thumbnails and remote media on disk), and
//! matrix-nio and mautrix (for direct uploads, MSC3870) as the clients, all
//! on 127.0.0.1. The clients only ever talk to the proxy, except for a
//! direct upload's PUT, which goes straight to the bucket. Then the same
//! deployment behind each other recipe of the doc (Caddy, HAProxy, Apache):
//! the flows every proxy must carry, and `mxmedia selfcheck --public-url`
//! through each, all checks passing.
//!
//! The Python packages go into a virtualenv under `target/` that is made on
//! first use and kept; nginx comes from the system (`.ci/run` installs
//! Debian's when it is missing).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use mxmedia::{app::Server, config::Config};
use proxies::{Recipe, Upstreams};
use synapse::{Daemon, free_port, python, root, run, synapse_config, wait_until_up};

mod common;
#[path = "common/proxies.rs"]
mod proxies;
#[path = "common/synapse.rs"]
mod synapse;

const SERVER_NAME: &str = "e2e.test";
const MAX_UPLOAD: u64 = 8 * 1024 * 1024;

/// Starts recipe `name` in front of `up`; `None` when the proxy is not
/// installed (CI installs them all).
async fn start_proxy(name: &'static str, dir: &Path, up: Upstreams) -> Option<(Recipe, Daemon)> {
    start_edited(name, dir, up, |_| {}).await
}

/// [`start_proxy`], with `edit` changing the written config first.
async fn start_edited(
    name: &'static str,
    dir: &Path,
    up: Upstreams,
    edit: impl FnOnce(&Path),
) -> Option<(Recipe, Daemon)> {
    let mut recipe = proxies::recipe(name, dir, up, free_port(), free_port())?;
    edit(dir);
    let log = dir.join("stdout.log");
    let mut daemon = Daemon::spawn(name, &mut recipe.command, &log);
    wait_until_up(
        &format!("https://127.0.0.1:{}/_matrix/client/versions", recipe.port),
        &mut daemon,
        &log,
    )
    .await;
    Some((recipe, daemon))
}

/// `mxmedia --json selfcheck --public-url` through `recipe`: whether it
/// succeeded, and its verdicts.
async fn selfcheck(recipe: &Recipe, token: &str) -> (bool, Vec<serde_json::Value>) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"));
    command
        .args(["--json", "selfcheck", "--public-url"])
        .arg(format!("https://127.0.0.1:{}", recipe.port))
        .arg("--federation-url")
        .arg(format!("https://127.0.0.1:{}", recipe.federation))
        .arg("--ca-file")
        .arg(&recipe.cert)
        .env("MXMEDIA_SELFCHECK_TOKEN", token);
    if let Some(log) = &recipe.access_log {
        command.arg("--proxy-log").arg(log);
    }
    let out = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let verdicts: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {text}{}",
            recipe.name,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("selfcheck through {}: {verdicts}", recipe.name);
    (out.status.success(), verdicts.as_array().unwrap().clone())
}

/// Every check passes through `recipe` (only the log check may be skipped,
/// by a recipe that keeps no log).
async fn selfcheck_passes(recipe: &Recipe, token: &str) {
    let (ok, verdicts) = selfcheck(recipe, token).await;
    for verdict in &verdicts {
        let skippable = verdict["check"] == "tokens_in_logs" && recipe.access_log.is_none();
        assert!(
            verdict["outcome"] == "ok" || (skippable && verdict["outcome"] == "skipped"),
            "{}: {verdict}",
            recipe.name
        );
    }
    assert!(ok, "{}", recipe.name);
    assert_eq!(verdicts.len(), 11, "every check ran");
}

/// A large upload with a token the homeserver does not know, through the
/// proxy: the client gets mxmedia's 401, not a proxy's 502 (mxmedia reads
/// out the body it refused, so the proxy can finish sending it).
async fn expired_token_upload_is_refused_cleanly(recipe: &Recipe) {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&recipe.cert).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap();
    for _ in 0..3 {
        let resp = http
            .post(format!(
                "https://127.0.0.1:{}/_matrix/media/v3/upload",
                recipe.port
            ))
            .bearer_auth("syt_expired_or_never_issued")
            .body(vec![7u8; 6 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{}", recipe.name);
        assert_eq!(resp.headers()["x-served-by"], "mxmedia", "{}", recipe.name);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{}", recipe.name);
    }
}

/// An access token of `user`, logged in at Synapse directly.
async fn login(hs_port: u16, user: &str, password: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{hs_port}/_matrix/client/v3/login"
        ))
        .json(&serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The Python client's flows through `recipe`: `flows` is `all` or `proxy`.
async fn client_flows(
    python: &Path,
    recipe: &Recipe,
    flows: &str,
    extra: &[(&str, String)],
) -> serde_json::Value {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(root().join("tests/e2e/client.py"))
        .env("E2E_BASE", format!("https://127.0.0.1:{}", recipe.port))
        .env(
            "E2E_FED",
            format!("https://127.0.0.1:{}", recipe.federation),
        )
        .env("E2E_MAX_UPLOAD", MAX_UPLOAD.to_string())
        .env("E2E_TOKEN_TTL", "1")
        .env("E2E_FLOWS", flows)
        .env("E2E_PREFIX", format!("{}_", recipe.name))
        .kill_on_drop(true);
    for (key, value) in extra {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client through {} failed: {stdout}\n{}",
        recipe.name,
        String::from_utf8_lossy(&output.stderr),
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    eprintln!("client report through {}: {report}", recipe.name);
    assert_eq!(report["ok"], true, "{stdout}");
    report
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
    let up = Upstreams {
        synapse: hs_port,
        mxmedia: mx_port,
    };
    let (nginx, proxy) = start_proxy("nginx", &proxy_dir, up).await.expect(
        "nginx is needed for the end-to-end tests: apt-get install nginx-light (.ci/run does)",
    );

    // The client, through the proxy only.
    let report = client_flows(
        &python,
        &nginx,
        "all",
        &[
            ("E2E_ADMIN", "moderator:pw-moderator-e2e".to_owned()),
            ("E2E_BUCKET", bucket.endpoint()),
        ],
    )
    .await;
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

    // The deployment seen from outside, through nginx.
    let token = login(hs_port, "moderator", "pw-moderator-e2e").await;
    selfcheck_passes(&nginx, &token).await;
    expired_token_upload_is_refused_cleanly(&nginx).await;
    drop(proxy);

    // A proxy that sends the legacy media routes to Synapse: the selfcheck
    // names exactly those, each with its fix, and fails.
    let (misrouted, proxy) = start_edited("nginx", &dir.path().join("misrouted"), up, |d| {
        let site = std::fs::read_to_string(d.join("site.conf")).unwrap();
        let narrowed = site.replace(
            "location ~ ^/_matrix/(media|client/v1/media)/ {",
            "location ~ ^/_matrix/client/v1/media/ {",
        );
        assert_ne!(site, narrowed);
        std::fs::write(d.join("site.conf"), narrowed).unwrap();
    })
    .await
    .unwrap();
    let (ok, verdicts) = selfcheck(&misrouted, &token).await;
    assert!(!ok, "a misrouted deployment fails the selfcheck");
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| v["outcome"] == "fail")
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "legacy_media_v3",
            "legacy_media_r0",
            "upload_near_limit",
            "range_and_head"
        ],
        "{verdicts:?}"
    );
    for verdict in verdicts.iter().filter(|v| v["outcome"] == "fail") {
        assert!(
            verdict["fix"]
                .as_str()
                .unwrap()
                .contains("docs/reverse-proxy.md"),
            "{verdict}"
        );
    }
    drop(proxy);

    // Every other recipe of the doc, with the flows each must carry.
    for name in ["caddy", "haproxy", "apache"] {
        let Some((recipe, daemon)) = start_proxy(name, &dir.path().join(name), up).await else {
            eprintln!("{name} is not installed: its recipe is not tested here");
            continue;
        };
        client_flows(&python, &recipe, "proxy", &[]).await;
        selfcheck_passes(&recipe, &token).await;
        expired_token_upload_is_refused_cleanly(&recipe).await;
        if let Some(log) = &recipe.access_log {
            let access = std::fs::read_to_string(log).unwrap();
            assert!(
                access.contains("/_matrix/media/v3/upload"),
                "{name} logs requests"
            );
            assert!(
                !access.contains("access_token="),
                "{name} keeps tokens out of its log"
            );
        }
        drop(daemon);
    }

    server.stop().await;
    drop(synapse);
}
