//! The real Synapse for tests: a virtualenv with the pinned packages, made
//! once under `target/` and reused, and child processes stopped with SIGTERM.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// Synapse and matrix-nio, pinned (also used by `scripts/load_bench.py`).
pub const REQUIREMENTS: &str = include_str!("../e2e/requirements.txt");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv with Synapse and matrix-nio, made once and reused while
/// the pinned versions stay the same.
pub fn python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let venv = target.join("e2e-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join("mxmedia-e2e-packages");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(REQUIREMENTS) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root().join("tests/e2e/requirements.txt")));
    std::fs::write(&marker, REQUIREMENTS).unwrap();
    python
}

/// A plain-HTTP Synapse on 127.0.0.1:`port` named `server_name`, on
/// SQLite under `dir` or on the PostgreSQL database at `postgres` (a
/// `postgres://user@host:port/name` URL), with open registration, a
/// registration secret (for `register_new_matrix_user`), rate limits out of
/// the way, and its media repository on or off.
pub fn synapse_config(
    dir: &Path,
    port: u16,
    server_name: &str,
    media_repo: bool,
    postgres: Option<&str>,
) -> PathBuf {
    let d = dir.display();
    let database = match postgres {
        None => format!("  name: sqlite3\n  args:\n    database: \"{d}/homeserver.db\"\n"),
        Some(url) => {
            let url = url::Url::parse(url).unwrap();
            format!(
                "  name: psycopg2\n  args:\n    user: {}\n    host: {}\n    port: {}\n    database: {}\n    cp_min: 1\n    cp_max: 5\n",
                url.username(),
                url.host_str().unwrap(),
                url.port().unwrap(),
                url.path().trim_start_matches('/')
            )
        }
    };
    let config = format!(
        r#"server_name: "{server_name}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client]
        compress: false
database:
{database}log_config: "{d}/log.yaml"
media_store_path: "{d}/media_store"
signing_key_path: "{d}/signing.key"
enable_media_repo: {media_repo}
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "test-registration-secret"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: "test-macaroon-secret"
form_secret: "test-form-secret"
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

pub fn run(command: &mut Command) {
    let status = command.status().expect("start a setup command");
    assert!(status.success(), "{command:?} failed: {status}");
}

#[allow(unused_imports)]
pub use crate::common::free_port;

/// A child process stopped with SIGTERM (then killed) when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    pub fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child }
    }

    pub fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited with {status}:\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn wait_until_up(url: &str, daemon: &mut Daemon, log: &Path) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        daemon.assert_running(log);
        if let Ok(resp) = http.get(url).send().await
            && resp.status().as_u16() < 500
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{} did not come up at {url}:\n{}",
        daemon.name,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
