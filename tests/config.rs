//! The config contract: the sample loads, env overrides, every problem
//! reported at once; and the `mxmedia` binary's `check-config` and `serve`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command, time::Duration};

use mxmedia::config::{Config, DatastoreConfig, DatastoreKind};

fn sample() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.sample.yaml"))
        .unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The shipped sample is the operator manual: it loads, and says what the defaults are.
#[test]
fn sample_config_loads_with_the_documented_defaults() {
    let config = Config::from_yaml(&sample(), Vec::new()).expect("config.sample.yaml must load");
    assert_eq!(config.server_name.as_str(), "example.org");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8009");
    assert_eq!(config.media.max_upload_size.as_u64(), 100 * 1024 * 1024);
    assert!(config.media.freeze_unauthenticated);
    assert_eq!(config.media.pending_expiry, Duration::from_secs(86_400));
    assert_eq!(config.datastores.len(), 1);
    let DatastoreConfig::Local(local) = &config.datastores[0] else {
        panic!("the default datastore is local")
    };
    assert_eq!(
        local.kinds,
        vec![
            DatastoreKind::LocalMedia,
            DatastoreKind::RemoteMedia,
            DatastoreKind::Thumbnails
        ]
    );
}

/// Every key of the sample documents its env var; and a minimal file gets the same defaults.
#[test]
fn minimal_config_gets_defaults_matching_the_sample() {
    let minimal = Config::from_yaml(
        "server_name: example.org\nhomeserver:\n  url: http://127.0.0.1:8008\n",
        Vec::new(),
    )
    .unwrap();
    let full = Config::from_yaml(&sample(), Vec::new()).unwrap();
    assert_eq!(format!("{:?}", minimal.media), format!("{:?}", full.media));
    assert_eq!(
        format!("{:?}", minimal.homeserver),
        format!("{:?}", full.homeserver)
    );
    assert_eq!(minimal.listen, full.listen);
    assert_eq!(minimal.sled_path(), Path::new("./data/db"));
    let text = sample();
    for var in [
        "MXMEDIA__SERVER_NAME",
        "MXMEDIA__LISTEN",
        "MXMEDIA__DATA_DIR",
        "MXMEDIA__HOMESERVER__URL",
        "MXMEDIA__HOMESERVER__TIMEOUT",
        "MXMEDIA__HOMESERVER__TOKEN_CACHE_TTL",
        "MXMEDIA__HOMESERVER__TOKEN_NEGATIVE_CACHE_TTL",
        "MXMEDIA__HOMESERVER__TOKEN_REFRESH_AFTER",
        "MXMEDIA__HOMESERVER__TOKEN_CACHE_SIZE",
        "MXMEDIA__MEDIA__UPLOAD_MIN_RATE",
        "MXMEDIA__MEDIA__UPLOAD_DEADLINE",
        "MXMEDIA__CONNECTIONS__MAX",
        "MXMEDIA__CONNECTIONS__HEADER_TIMEOUT",
        "MXMEDIA__CONNECTIONS__IDLE_TIMEOUT",
        "MXMEDIA__THUMBNAILS__MAX_JOB_MEMORY",
        "MXMEDIA__THUMBNAILS__MAX_ANIMATION_PIXELS",
        "MXMEDIA__FEDERATION__MAX_CONCURRENT_FETCHES",
        "MXMEDIA__FEDERATION__FETCH_QUEUE_TIMEOUT",
        "MXMEDIA__FEDERATION__USER_BUDGET",
        "MXMEDIA__FEDERATION__USER_BUDGET_WINDOW",
        "MXMEDIA__HOMESERVER__ACCEPT_QUERY_TOKEN",
        "MXMEDIA__MEDIA__MAX_UPLOAD_SIZE",
        "MXMEDIA__MEDIA__FREEZE_UNAUTHENTICATED",
        "MXMEDIA__MEDIA__PENDING_EXPIRY",
        "MXMEDIA__MEDIA__MAX_PENDING_PER_USER",
        "MXMEDIA__MEDIA__MAX_DOWNLOAD_WAIT",
        "MXMEDIA__MEDIA__UPLOAD_IDLE_TIMEOUT",
        "MXMEDIA__MEDIA__SWEEP_INTERVAL",
        "MXMEDIA__MEDIA__ORPHAN_GRACE",
        "MXMEDIA__MEDIA__MAX_RANGES",
        "MXMEDIA__DATABASE__PATH",
        "MXMEDIA__DATABASE__CACHE_CAPACITY",
        "MXMEDIA__LOG__LEVEL",
        "MXMEDIA__LOG__FORMAT",
        "MXMEDIA__SELFCHECK_ON_START",
        "MXMEDIA__THUMBNAILS__DYNAMIC",
        "MXMEDIA__THUMBNAILS__PREGENERATE",
        "MXMEDIA__THUMBNAILS__MAX_FRAMES",
        "MXMEDIA__THUMBNAILS__MAX_PIXELS",
        "MXMEDIA__THUMBNAILS__MAX_SOURCE_SIZE",
        "MXMEDIA__THUMBNAILS__CONCURRENCY",
        "MXMEDIA__CONTROL_SOCKET",
        "MXMEDIA__CACHE__ENABLED",
        "MXMEDIA__CACHE__PATH",
        "MXMEDIA__CACHE__MAX_SIZE",
        "MXMEDIA__CACHE__MAX_FILE_SIZE",
        "MXMEDIA__DATASTORES__1__SECRET_ACCESS_KEY",
    ] {
        assert!(
            text.contains(var),
            "config.sample.yaml does not document {var}"
        );
    }
}

/// `MXMEDIA__SECTION__KEY` overrides the file, with the file's value syntax.
#[test]
fn env_overrides_the_file() {
    let config = Config::from_yaml(
        &sample(),
        env(&[
            ("MXMEDIA__HOMESERVER__URL", "https://matrix.example.net"),
            ("MXMEDIA__MEDIA__MAX_UPLOAD_SIZE", "5MiB"),
            ("MXMEDIA__MEDIA__FREEZE_UNAUTHENTICATED", "false"),
            ("MXMEDIA__SERVER_NAME", "1234"),
            ("MXMEDIA__DATASTORES__0__PATH", "/srv/media"),
            ("MXMEDIA__LOG__FORMAT", "json"),
            // Lists, as the sample documents them.
            ("MXMEDIA__TRUSTED_PROXIES", r#"["127.0.0.1/32", "::1/128"]"#),
            (
                "MXMEDIA__FEDERATION__BLOCKED_SERVERS",
                "[evil.example, '*.spam.example']",
            ),
            ("OTHER_VAR", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(
        config.federation.blocked_servers,
        ["evil.example", "*.spam.example"]
    );
    assert_eq!(
        config.homeserver.url.as_str(),
        "https://matrix.example.net/"
    );
    assert_eq!(config.media.max_upload_size.as_u64(), 5 * 1024 * 1024);
    assert!(!config.media.freeze_unauthenticated);
    assert_eq!(config.server_name.as_str(), "1234");
    let DatastoreConfig::Local(local) = &config.datastores[0] else {
        panic!("the default datastore is local")
    };
    assert_eq!(local.path.as_deref(), Some(Path::new("/srv/media")));
}

/// Unknown keys and invalid values fail, all of them listed with their paths.
#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "
listen: not-an-address
typo_top: 1
homeserver:
  url: ftp://h
  timout: 3s
datastores:
  - type: local
    id: a
  - type: local
    id: a
media:
  max_upload_size: 12XB
  freeze_unauthenticated: maybe
  max_pending_per_user: 0
";
    let err = Config::from_yaml(yaml, env(&[("MXMEDIA__MEDIA__MAX_RANGES", "many")])).unwrap_err();
    let problems = err.problems();
    let text = problems.join("\n");
    for expected in [
        "listen:",
        "typo_top: unknown field",
        "homeserver.timout: unknown field",
        "media.max_upload_size:",
        "media.freeze_unauthenticated:",
        "media.max_ranges:",
        "server_name",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(problems.len() >= 7, "{text}");

    // Once the syntax is right, the semantic checks all show up together.
    let yaml = "
server_name: example.org
homeserver: {url: 'ftp://h'}
datastores:
  - {type: local, id: a, kinds: []}
  - {type: local, id: a, kinds: []}
media: {max_pending_per_user: 0, max_upload_size: 0}
retention: {local: 30d, batch: 0}
quotas:
  classes: [{name: bots, users: ['@bot_(']}]
rate_limits: {uploads: {per_second: 0, burst: 0}}
";
    let text = Config::from_yaml(yaml, Vec::new())
        .unwrap_err()
        .problems()
        .join("\n");
    for expected in [
        "retention.local: keeping avatars needs homeserver.admin_token",
        "retention.batch",
        "quotas.classes[bots].users",
        "rate_limits.uploads",
        "homeserver.url",
        "datastores[1].id: \"a\" is used twice",
        "no datastore takes local_media",
        "media.max_pending_per_user",
        "media.max_upload_size",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // A datastore type that does not exist is named.
    let text = Config::from_yaml(
        "server_name: x\nhomeserver: {url: 'http://h'}\ndatastores: [{type: ftp}]\n",
        Vec::new(),
    )
    .unwrap_err()
    .problems()
    .join("\n");
    assert!(text.contains("ftp"), "{text}");
}

/// `mxmedia check-config` exits 0 on the sample and 2 with every problem on a bad file.
#[test]
fn check_config_command_reports_problems() {
    let bin = env!("CARGO_BIN_EXE_mxmedia");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.sample.yaml");
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&sample)
        .env_remove("MXMEDIA__LISTEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "server_name: example.org\nhomeserver: {url: 'http://h'}\nmedia: {max_upload_siz: 1, max_ranges: 0}\n").unwrap();
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("media.max_upload_siz: unknown field"),
        "{stderr}"
    );
    assert!(stderr.contains("media.max_ranges"), "{stderr}");

    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `mxmedia serve` serves, and on SIGTERM finishes gracefully with exit 0,
/// data flushed. Started from another working directory, it keeps its state
/// where the config file's relative `data_dir` says, next to the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hs = common::FakeHomeserver::start().await;
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("server_name: test.local\nlisten: 127.0.0.1:{port}\ndata_dir: ./state\nhomeserver: {{url: '{}'}}\nlog: {{format: json}}\ntrusted_proxies: ['127.0.0.1/32']\n", hs.url),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(elsewhere.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "server did not come up");
    let resp = http
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(common::ALICE)
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // From a trusted proxy, the forwarded address is the client in the logs.
    let resp = http
        .get(format!("{base}/healthz"))
        .header("x-forwarded-for", "198.51.100.23, 127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("\"message\":\"mxmedia stopped\""),
        "JSON logs with a clean stop: {stderr}"
    );
    assert!(
        !stderr.contains(common::ALICE),
        "tokens never reach the logs"
    );
    assert!(
        stderr.contains("\"client\":\"127.0.0.1\"") && stderr.contains("\"request_id\":"),
        "request logs name the client and the request id: {stderr}"
    );
    assert!(
        stderr.contains("\"client\":\"198.51.100.23\""),
        "behind a trusted proxy the logs show the forwarded client: {stderr}"
    );

    // State lives next to the config, none where the process was started.
    assert!(dir.path().join("state/db").is_dir());
    assert!(dir.path().join("state/media").is_dir());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    // The metadata was flushed: a new server on the same data sees the upload.
    let cfg = Config::load(&config).unwrap();
    assert_eq!(cfg.data_dir, dir.path().join("./state"));
    let state = mxmedia::app::build_state(&cfg).await.unwrap();
    assert_eq!(state.media.counts().await.unwrap().media, 1);
}

/// `mxmedia selfcheck` reports every call per datastore and exits 0 when all pass.
#[test]
fn selfcheck_command_reports_each_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: test.local\ndata_dir: {}\nhomeserver: {{url: 'http://127.0.0.1:1'}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mxmedia"))
        .args(["selfcheck", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("datastore local: ok (put, head, ranged get, delete, multipart)"),
        "{stdout}"
    );
}

/// The commented S3 example in the sample is a valid datastore once uncommented.
#[test]
fn sample_s3_example_is_valid() {
    let text = sample();
    let start = text.find("# --- s3 example ---").unwrap();
    let end = text.find("# --- end of s3 example ---").unwrap();
    let example: String = text[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "s3cret\n").unwrap();
    let example = example.replace(
        "/etc/mxmedia/s3-secret",
        &secret.path().display().to_string(),
    );
    let yaml = text.replacen("# --- s3 example ---\n", &example, 1);
    let config = Config::from_yaml(&yaml, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.datastores.len(), 2);
    let DatastoreConfig::S3(s3) = &config.datastores[1] else {
        panic!("the example is an s3 datastore")
    };
    assert_eq!((s3.id.as_str(), s3.bucket.as_str()), ("s3", "matrix-media"));
    assert!(s3.kinds.is_empty() && !s3.redirect.enabled && s3.multipart);
}

/// HEIC and AVIF can be listed only in a build that decodes them; the
/// default list is the four formats every build decodes.
#[test]
fn heif_formats_need_the_heif_feature() {
    let yaml = "server_name: example.org\nhomeserver: {url: 'http://127.0.0.1:8008'}\nthumbnails: {formats: [jpeg, heic, avif]}\n";
    let loaded = Config::from_yaml(yaml, Vec::new());
    if cfg!(feature = "heif") {
        loaded.unwrap();
    } else {
        let err = loaded.unwrap_err().to_string();
        assert!(
            err.contains("thumbnails.formats: heic needs a build with the heif feature"),
            "{err}"
        );
        assert!(err.contains("thumbnails.formats: avif needs"), "{err}");
    }
    let default = Config::from_yaml(
        "server_name: example.org\nhomeserver: {url: 'http://127.0.0.1:8008'}\n",
        Vec::new(),
    )
    .unwrap();
    assert_eq!(default.thumbnails.formats.len(), 4);
    let bad = Config::from_yaml(
        "server_name: example.org\nhomeserver: {url: 'http://127.0.0.1:8008'}\nthumbnails: {formats: [tiff]}\n",
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("thumbnails.formats"), "{bad}");
}
