//! A real PostgreSQL server for tests: Debian's server binaries, one
//! cluster per test binary (made on first use, in a temporary directory,
//! listening on 127.0.0.1 only, trust authentication), run as the
//! `postgres` user when the tests run as root. Each test takes its own
//! database. The cluster is stopped and its directory removed when the
//! test binary exits, however it exits: a small shell keeps the server and
//! waits on a pipe from this process, which the kernel closes at exit.
// Each test binary uses its own subset of these helpers; the metadata
// contract suite of the PostgreSQL adapter includes this file too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::pedantic)]

use std::{
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

pub struct Postgres {
    pub port: u16,
    /// The keeper shell and the pipe that holds it open.
    _keeper: Mutex<(Child, ChildStdin)>,
}

static CLUSTER: OnceLock<Postgres> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The directory of Debian's PostgreSQL server binaries (the newest
/// installed major version), or the one on `PATH`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&which.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)"
    );
    PathBuf::from(path).parent().unwrap().to_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The keeper: makes the cluster, runs the server until its stdin closes,
/// then stops it (fast shutdown) and removes the cluster's directory.
const KEEPER: &str = r#"
set -e
"$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1
"$BIN/postgres" -D "$DIR/data" -p "$PORT" -k "$DIR" -c listen_addresses=127.0.0.1 \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
  >"$DIR/server.log" 2>&1 &
pid=$!
cat >/dev/null || true
kill -INT "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
rm -rf "$DIR"
"#;

impl Postgres {
    /// The cluster of this test binary, started on first use.
    pub fn get() -> &'static Postgres {
        CLUSTER.get_or_init(Self::start)
    }

    fn start() -> Postgres {
        let dir = std::env::temp_dir().join(format!(
            "mxmedia-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut command = if is_root() {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown the cluster directory");
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", KEEPER]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", KEEPER]);
            c
        };
        let mut child = command
            .env("BIN", bin_dir())
            .env("DIR", &dir)
            .env("PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start PostgreSQL");
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "PostgreSQL did not start ({status}):\n{}\n{}",
                    std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen on {port}:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Postgres {
            port,
            _keeper: Mutex::new((child, stdin)),
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database (C collation, as Synapse requires) with a
    /// name starting with `prefix`; its URL.
    pub async fn database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        sqlx::any::install_default_drivers();
        let deadline = Instant::now() + Duration::from_secs(60);
        // The server listens a moment before it accepts sessions.
        let admin = loop {
            match sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&self.url("postgres"))
                .await
            {
                Ok(pool) => break pool,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("connect to PostgreSQL: {error}"),
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        self.url(&name)
    }
}
