//! A real S3 server (s3s + s3s-fs, SigV4 checked) in-process on
//! 127.0.0.1, strict like B2 about checksum headers, and the choice of
//! datastore a test binary runs against.

use std::{net::SocketAddr, path::PathBuf, sync::Mutex};

use tokio::net::TcpListener;

use super::walk;

pub const S3_ACCESS_KEY: &str = "mxmedia-test";
pub const S3_SECRET_KEY: &str = "mxmedia-test-secret";
pub const S3_BUCKET: &str = "media";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDatabase {
    Sled,
    Postgres,
}

/// Which metadata store this test binary runs the contract against.
pub fn database() -> TestDatabase {
    match std::env::var("MXMEDIA_TEST_DATABASE").as_deref() {
        Ok("postgres") => return TestDatabase::Postgres,
        Ok("sled") => return TestDatabase::Sled,
        _ => {}
    }
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    if name.contains("pg_") {
        TestDatabase::Postgres
    } else {
        TestDatabase::Sled
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
