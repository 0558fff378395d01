//! The real mxmedia server on 127.0.0.1:0 with its state in a temporary
//! directory, and the helpers tests use to talk to it and look at its
//! storage.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use mxmedia::{app::Server, config::Config, media::ports::Counts};
use serde_json::Value;
use tokio::net::TcpListener;

use super::{
    FakeHomeserver, Postgres, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server, TestBackend,
    TestDatabase, backend, database,
};

pub const SERVER_NAME: &str = "test.local";

/// A free port on 127.0.0.1 (bound and released: another process could
/// take it meanwhile, and the test would then fail loudly, not wrongly).
/// The wall clock in Unix milliseconds, as media timestamps are.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The datastore's ownership marker: not a blob.
pub const OWNER_MARKER: &str = "mxmedia-owner.json";

/// Every file under `dir` but ownership markers.
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if entry.file_name() != OWNER_MARKER {
            out.push(path);
        }
    }
}

/// The real server with its own data directory.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub hs: FakeHomeserver,
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub s3: Option<S3Server>,
    server: Option<Server>,
}

/// The datastore section for `backend`.
pub fn datastores_yaml(backend: TestBackend, s3: Option<&S3Server>) -> String {
    match (backend, s3) {
        (TestBackend::S3, Some(s3)) => format!(
            "datastores:\n  - type: s3\n    id: s3\n    provider: minio\n    endpoint: {}\n    bucket: {S3_BUCKET}\n    access_key_id: {S3_ACCESS_KEY}\n    secret_access_key: {S3_SECRET_KEY}\n    timeout: 60s\n    connect_timeout: 1s\n    max_retries: 1\n",
            s3.endpoint()
        ),
        _ => String::new(),
    }
}

pub fn test_config(dir: &Path, hs_url: &str) -> Config {
    test_config_with(dir, hs_url, TestBackend::Local, None)
}

pub fn test_config_with(
    dir: &Path,
    hs_url: &str,
    backend: TestBackend,
    s3: Option<&S3Server>,
) -> Config {
    let yaml = format!(
        "server_name: {SERVER_NAME}\nlisten: 127.0.0.1:0\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver:\n  url: {hs_url}\n{}",
        dir.display(),
        datastores_yaml(backend, s3)
    );
    Config::from_yaml(&yaml, Vec::new()).expect("test config")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let hs = FakeHomeserver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let backend = backend();
        let s3 = match backend {
            TestBackend::S3 => Some(S3Server::start().await),
            TestBackend::Local => None,
        };
        let mut config = test_config_with(dir.path(), &hs.url, backend, s3.as_ref());
        if database() == TestDatabase::Postgres {
            let url = Postgres::get().database("mxmedia").await;
            config.database =
                serde_norway::from_str(&format!("{{type: postgres, url: '{url}'}}")).unwrap();
        }
        tweak(&mut config);
        let (server, base) = Self::launch(&config).await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            base,
            http,
            hs,
            config,
            dir,
            s3,
            server: Some(server),
        }
    }

    async fn launch(config: &Config) -> (Server, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start_on(listener, config)
            .await
            .expect("server starts");
        let base = format!("http://{}", server.local_addr());
        (server, base)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Stops the server gracefully and starts a new one on the same data.
    pub async fn restart(&mut self) {
        self.server_stop().await;
        self.server_start().await;
    }

    /// Stops the server (its data, homeserver and S3 stay).
    pub async fn server_stop(&mut self) {
        self.server.take().unwrap().stop().await;
    }

    /// Starts a server again on the same data.
    pub async fn server_start(&mut self) {
        let (server, base) = Self::launch(&self.config).await;
        self.server = Some(server);
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /_matrix/media/v3/upload`.
    pub async fn upload(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/_matrix/media/v3/upload"))
            .bearer_auth(token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(name) = filename {
            req = req.query(&[("filename", name)]);
        }
        req.send().await.unwrap()
    }

    /// Uploads and returns `(server_name, media_id)`.
    pub async fn upload_ok(
        &self,
        token: &str,
        body: &[u8],
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> (String, String) {
        let resp = self
            .upload(token, body.to_vec(), content_type, filename)
            .await;
        assert_eq!(
            resp.status(),
            200,
            "upload failed: {}",
            resp.text().await.unwrap()
        );
        let json: Value = resp.json().await.unwrap();
        split_mxc(json["content_uri"].as_str().unwrap())
    }

    /// `POST /create` (an async upload's id) as `token`; `(server_name,
    /// media_id)`.
    pub async fn create_ok(&self, token: &str) -> (String, String) {
        let json = self.create_json(token).await;
        split_mxc(json["content_uri"].as_str().unwrap())
    }

    /// `POST /create` as `token`; its whole (successful) answer.
    pub async fn create_json(&self, token: &str) -> Value {
        let resp = self
            .http
            .post(self.url("/_matrix/media/v1/create"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "create failed: {}",
            resp.text().await.unwrap()
        );
        resp.json().await.unwrap()
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn counts(&self) -> Counts {
        self.server().state().media.counts().await.unwrap()
    }

    /// The value of the metric series `name` whose labels contain `label`
    /// (summed), read from the server's own registry.
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        self.server()
            .state()
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits (up to 10 s) until `metric(name, label)` reaches `value`.
    pub async fn wait_for_metric(&self, name: &str, label: &str, value: f64) {
        for _ in 0..400 {
            if self.metric(name, label) >= value {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "{name}{{{label}}} stayed at {} (waited for {value})",
            self.metric(name, label)
        );
    }

    /// Where blob objects appear as files: the local datastore directory,
    /// or the S3 server's bucket directory.
    pub fn blob_dir(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.root.path().join(S3_BUCKET),
            None => self.dir.path().join("media"),
        }
    }

    /// Every stored object (and, on S3, every unfinished multipart upload).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        match &self.s3 {
            Some(s3) => s3.leftovers(),
            None => {
                let mut out = Vec::new();
                walk(&self.blob_dir(), &mut out);
                out
            }
        }
    }

    /// Waits (up to 5 s) until the datastore directory holds `count` files
    /// or more (`at_least`) or exactly `count` files; returns what it holds.
    /// Unused blobs are deleted in the background, so tests wait for that.
    pub async fn wait_for_blob_files(&self, count: usize, at_least: bool) -> Vec<PathBuf> {
        for _ in 0..200 {
            let files = self.blob_files();
            if files.len() == count || (at_least && files.len() >= count) {
                return files;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.blob_files()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

pub fn split_mxc(mxc: &str) -> (String, String) {
    let rest = mxc.strip_prefix("mxc://").expect("mxc uri");
    let (server, id) = rest.split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

/// Asserts a Matrix error: status, errcode, JSON content type, and both keys.
pub async fn assert_matrix_error(resp: reqwest::Response, status: u16, errcode: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {errcode}");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], errcode, "body {body}");
    assert!(body["error"].is_string(), "error text missing: {body}");
    body
}
