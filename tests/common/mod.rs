//! Test harness: the real mxmedia server on 127.0.0.1:0 with its state in a
//! temporary directory, a small stand-in for the homeserver's
//! `/account/whoami` that knows a few users, and a real S3 server (s3s-fs,
//! SigV4 checked) in-process for the S3 datastore.
//!
//! The same contract tests run on both datastores: a test binary whose name
//! starts with `s3_` (see `tests/s3_contract.rs`) uses S3, others the local
//! directory; `MXMEDIA_TEST_BACKEND=s3|local` overrides that.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use mxmedia::{app::Server, config::Config, media::ports::Counts};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SERVER_NAME: &str = "test.local";
pub const S3_ACCESS_KEY: &str = "mxmedia-test";
pub const S3_SECRET_KEY: &str = "mxmedia-test-secret";
pub const S3_BUCKET: &str = "media";
pub const ALICE: &str = "alice_token";
pub const BOB: &str = "bob_token";
pub const GUEST: &str = "guest_token";
/// An appservice token: acts as `@bridgebot`, or as `?user_id=@bridge_*`.
pub const APPSERVICE: &str = "as_token";
/// The homeserver answers 401 M_USER_LOCKED for this one.
pub const LOCKED: &str = "locked_token";
/// The homeserver answers 500 for this one.
pub const BROKEN: &str = "broken_token";

#[derive(Clone, Default)]
struct HsState {
    users: Arc<Mutex<HashMap<String, (String, bool)>>>,
    calls: Arc<AtomicUsize>,
}

/// Stand-in for the homeserver's whoami endpoint.
pub struct FakeHomeserver {
    pub url: String,
    state: HsState,
    task: tokio::task::JoinHandle<()>,
}

async fn whoami(
    State(state): State<HsState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let unknown = (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false}),
        ),
    );
    match token.as_str() {
        APPSERVICE => match query.get("user_id") {
            None => (
                StatusCode::OK,
                Json(json!({"user_id": "@bridgebot:test.local"})),
            ),
            Some(u) if u.starts_with("@bridge_") => (StatusCode::OK, Json(json!({"user_id": u}))),
            Some(_) => (
                StatusCode::FORBIDDEN,
                Json(
                    json!({"errcode": "M_FORBIDDEN", "error": "Application service cannot masquerade as this user"}),
                ),
            ),
        },
        LOCKED => (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"errcode": "M_USER_LOCKED", "error": "This account has been locked", "soft_logout": true}),
            ),
        ),
        BROKEN => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errcode": "M_UNKNOWN", "error": "oops"})),
        ),
        _ => match state.users.lock().unwrap().get(&token) {
            Some((user, guest)) => (
                StatusCode::OK,
                Json(json!({"user_id": user, "is_guest": guest, "device_id": "DEV"})),
            ),
            None => unknown,
        },
    }
}

impl FakeHomeserver {
    pub async fn start() -> Self {
        let state = HsState::default();
        {
            let mut users = state.users.lock().unwrap();
            users.insert(ALICE.into(), ("@alice:test.local".into(), false));
            users.insert(BOB.into(), ("@bob:test.local".into(), false));
            users.insert(GUEST.into(), ("@guest1:test.local".into(), true));
        }
        let router = Router::new()
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, state, task }
    }

    /// How many whoami calls the homeserver has answered.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Simulates a logout: the token stops being valid on the homeserver.
    pub fn revoke(&self, token: &str) {
        self.state.users.lock().unwrap().remove(token);
    }

    pub fn add_user(&self, token: &str, user_id: &str) {
        self.state
            .users
            .lock()
            .unwrap()
            .insert(token.into(), (user_id.into(), false));
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port nothing listens on: a homeserver that is down.
pub async fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Local,
    S3,
}

/// Which datastore this test binary runs the contract against.
pub fn backend() -> TestBackend {
    match std::env::var("MXMEDIA_TEST_BACKEND").as_deref() {
        Ok("s3") => return TestBackend::S3,
        Ok("local") => return TestBackend::Local,
        _ => {}
    }
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    if name.starts_with("s3_") {
        TestBackend::S3
    } else {
        TestBackend::Local
    }
}

/// A real S3 server (s3s + s3s-fs) on 127.0.0.1 that checks SigV4
/// signatures. It can be stopped (every connection dropped) and resumed on
/// the same port, to play an outage.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl S3Server {
    pub async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(S3_BUCKET)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            addr,
            root,
            task: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        use hyper_util::{
            rt::{TokioExecutor, TokioIo},
            server::conn::auto::Builder,
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(StrictLikeB2(
            s3s_fs::FileSystem::new(self.root.path()).unwrap(),
        ));
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
        ));
        let service = builder.build();
        let task = tokio::spawn(async move {
            // Dropping this set (when the task is aborted) aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Without TCP_NODELAY, responses with a body take ~40 ms.
                socket.set_nodelay(true).unwrap();
                let service = service.clone();
                connections.spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Outage: stop listening and drop every open connection.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The service comes back on the same address with the same data.
    pub async fn resume(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Objects in the bucket plus unfinished multipart uploads (billable leftovers).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root.path().join(S3_BUCKET), &mut out);
        if let Ok(entries) = std::fs::read_dir(self.root.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".upload") {
                    out.push(entry.path());
                }
            }
        }
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// s3s-fs as an S3 service that, like B2 and R2, refuses requests carrying
/// the optional checksum headers.
struct StrictLikeB2(s3s_fs::FileSystem);

/// B2 and R2 reject the optional checksum headers newer SDKs send by
/// default; this server does too, so every S3 test proves we never send them.
/// s3s parses those headers into the typed input's `checksum_*` fields, so
/// both the raw headers and the parsed fields are checked.
fn refuse_checksum_headers<T: std::fmt::Debug>(req: &s3s::S3Request<T>) -> s3s::S3Result<()> {
    for name in req.headers.keys() {
        let name = name.as_str();
        if name.starts_with("x-amz-checksum") || name.starts_with("x-amz-sdk-checksum") {
            return Err(s3s::s3_error!(InvalidRequest, "unsupported header {name}"));
        }
    }
    let input = format!("{:?}", req.input);
    let mut rest = input.as_str();
    while let Some(at) = rest.find("checksum_") {
        rest = &rest[at..];
        let field_end = rest.find(':').unwrap_or(rest.len());
        if rest[field_end..]
            .trim_start_matches(':')
            .trim_start()
            .starts_with("Some(")
        {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "unsupported {}",
                &rest[..field_end]
            ));
        }
        rest = &rest[field_end..];
    }
    Ok(())
}

#[async_trait::async_trait]
impl s3s::S3 for StrictLikeB2 {
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(req).await
    }

    async fn put_object(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        refuse_checksum_headers(&req)?;
        self.0.put_object(req).await
    }

    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.0.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.0.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsOutput>> {
        self.0.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.0.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        refuse_checksum_headers(&req)?;
        self.0.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartOutput>> {
        refuse_checksum_headers(&req)?;
        self.0.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        refuse_checksum_headers(&req)?;
        self.0.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        self.0.abort_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: s3s::S3Request<s3s::dto::ListMultipartUploadsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListMultipartUploadsOutput>> {
        self.0.list_multipart_uploads(req).await
    }

    async fn copy_object(
        &self,
        req: s3s::S3Request<s3s::dto::CopyObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CopyObjectOutput>> {
        self.0.copy_object(req).await
    }

    async fn head_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::HeadBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadBucketOutput>> {
        self.0.head_bucket(req).await
    }
}

/// A free port on 127.0.0.1 (bound and released: another process could
/// take it meanwhile, and the test would then fail loudly, not wrongly).
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

/// Sends `request_head` (request line and headers, without the final blank
/// line) byte for byte over a fresh connection, so no client library
/// normalises the path; returns the status and the whole response text.
pub async fn raw_request(addr: SocketAddr, request_head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Sends a chunked request body of `total` bytes over a raw connection
/// while reading the response, the way a client that keeps sending past an
/// early answer would. Returns the response text and how many body bytes
/// were written by the time it arrived.
pub async fn raw_chunked_upload(
    addr: SocketAddr,
    method_and_path: &str,
    token: &str,
    total: u64,
) -> (String, u64) {
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let head = format!(
        "{method_and_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let data = vec![1u8; 64 * 1024];
        let frame_head = format!("{:x}\r\n", data.len());
        let mut sent = 0;
        while sent < total {
            writer.write_all(frame_head.as_bytes()).await?;
            writer.write_all(&data).await?;
            writer.write_all(b"\r\n").await?;
            sent += data.len() as u64;
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if text.contains("\r\n\r\n") && text.contains('}') {
            break;
        }
    }
    sender.abort();
    (
        String::from_utf8_lossy(&response).into_owned(),
        written.load(Ordering::Relaxed),
    )
}
