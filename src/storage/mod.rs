//! Blob storage: bytes in, bytes out, over `object_store`. This layer adds our
//! key scheme (with an optional prefix), the single-PUT/multipart switch,
//! abort-on-failure, presigned URLs and typed errors. It knows nothing about
//! Matrix, HTTP or metadata.

mod build;
pub mod digest;
mod direct;
mod presign;
mod selfcheck;

use std::{collections::HashMap, ops::Range, sync::Arc, time::SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    Attributes, GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore,
    ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart, path::Path,
};

pub use build::build_datastores;
pub use direct::{DirectUploads, Uploaded};
pub use presign::{Presigned, Presigner};
pub use selfcheck::{SelfcheckError, SelfcheckReport};

use crate::{
    config::DatastoreKind,
    ids::{BlobKey, DatastoreId},
};

/// A stream of body bytes crossing layers; never a `Vec<u8>`.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob not found")]
    NotFound,
    #[error("reading the request body failed: {0}")]
    Body(#[source] std::io::Error),
    #[error("object store request failed: {0}")]
    Backend(#[source] object_store::Error),
    #[error("unknown datastore {0}")]
    UnknownDatastore(DatastoreId),
    #[error("no datastore takes {0:?}")]
    NoWritableDatastore(DatastoreKind),
    #[error("datastore setup: {0}")]
    Setup(String),
    #[error("storage task failed")]
    TaskFailed,
    #[error("reading a stored object failed: {0}")]
    Read(#[source] std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Backend(other),
        }
    }
}

/// One listed object, for orphan sweeps.
#[derive(Debug, Clone)]
pub struct ListedBlob {
    pub key: BlobKey,
    pub last_modified: SystemTime,
}

/// What kind of service a datastore is; the hot cache only fronts remote ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// How bodies are written.
#[derive(Debug, Clone, Copy)]
pub struct WritePolicy {
    /// Bodies up to this size go as one PUT.
    pub single_put_max: usize,
    /// Size of each multipart part; all parts but the last are exactly this.
    pub part_size: usize,
    /// Off: every body is buffered and sent as one PUT.
    pub multipart: bool,
}

/// One datastore: an object store plus how we write to it.
#[derive(Clone)]
pub struct BlobStore {
    id: DatastoreId,
    inner: Arc<dyn ObjectStore>,
    /// The same store configured for streaming reads (no total timeout).
    reader: Arc<dyn ObjectStore>,
    /// Longest wait for the next chunk of a read, once we ask for it.
    read_idle: Option<std::time::Duration>,
    backend: Backend,
    policy: WritePolicy,
    parts_in_flight: usize,
    kinds: Vec<DatastoreKind>,
    /// Every key lives under this prefix (no leading or trailing `/`).
    prefix: Option<String>,
    /// Sent with every new object (storage class).
    attributes: Attributes,
    presigner: Option<Presigner>,
    /// Signs upload URLs for clients that upload straight here (MSC3870).
    direct: Option<DirectUploads>,
    metrics: crate::metrics::Metrics,
    /// The directory of a local datastore, where interrupted writes leave
    /// staging files that `object_store` never lists.
    local_root: Option<std::path::PathBuf>,
}

/// The object, at the root of a datastore (under its prefix), that names
/// the metadata database owning it. Never blob-shaped, so never listed as one.
const OWNER_MARKER: &str = "mxmedia-owner.json";

/// A staging file an interrupted write left behind on a local datastore.
#[derive(Debug, Clone)]
pub struct StagingFile {
    pub path: std::path::PathBuf,
    /// The blob the write was for.
    pub key: BlobKey,
    pub last_modified: SystemTime,
}

impl BlobStore {
    pub fn new(
        id: DatastoreId,
        inner: Arc<dyn ObjectStore>,
        backend: Backend,
        policy: WritePolicy,
        kinds: Vec<DatastoreKind>,
    ) -> Self {
        Self {
            id,
            reader: Arc::clone(&inner),
            read_idle: None,
            inner,
            backend,
            policy,
            parts_in_flight: 2,
            kinds,
            prefix: None,
            attributes: Attributes::new(),
            presigner: None,
            direct: None,
            metrics: crate::metrics::Metrics::default(),
            local_root: None,
        }
    }

    /// Reads go through `reader` (the same store without a total timeout),
    /// each wait for the next chunk capped at `idle`.
    #[must_use]
    pub fn with_reader(mut self, reader: Arc<dyn ObjectStore>, idle: std::time::Duration) -> Self {
        self.reader = reader;
        self.read_idle = Some(idle);
        self
    }

    /// Marks this store as the local directory `root`.
    #[must_use]
    pub fn with_local_root(mut self, root: std::path::PathBuf) -> Self {
        self.local_root = Some(root);
        self
    }

    /// Where the store lives, for messages: a directory, or a bucket and prefix.
    pub fn location(&self) -> String {
        match (&self.local_root, &self.prefix) {
            (Some(root), _) => root.display().to_string(),
            (None, Some(prefix)) => format!("{} under {prefix}/", self.inner),
            (None, None) => self.inner.to_string(),
        }
    }

    /// The ownership marker's content, if the store has one.
    pub async fn read_marker(&self) -> Result<Option<Bytes>, StorageError> {
        let path = self.marker_path();
        match self.inner.get(&path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Writes the ownership marker.
    pub async fn write_marker(&self, content: Bytes) -> Result<(), StorageError> {
        self.inner
            .put(&self.marker_path(), PutPayload::from(content))
            .await?;
        Ok(())
    }

    fn marker_path(&self) -> Path {
        match &self.prefix {
            Some(prefix) => Path::from(format!("{prefix}/{OWNER_MARKER}")),
            None => Path::from(OWNER_MARKER),
        }
    }

    /// Whether the store holds at least one blob-shaped object (one LIST
    /// request at most).
    pub async fn holds_blobs(&self) -> Result<bool, StorageError> {
        match self.list().next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e),
        }
    }

    /// Staging files of writes that never finished (a crash, `kill -9`),
    /// last modified before `before`. Only local datastores have them; an
    /// interrupted S3 multipart upload is the bucket's lifecycle rule's to
    /// abort (docs/storage.md).
    pub async fn stale_staging(
        &self,
        before: SystemTime,
    ) -> Result<Vec<StagingFile>, StorageError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || find_staging(&root, before))
            .await
            .map_err(|_| StorageError::TaskFailed)?
            .map_err(StorageError::Read)
    }

    /// Removes a staging file found by [`Self::stale_staging`].
    pub async fn remove_staging(&self, file: &StagingFile) -> Result<(), StorageError> {
        let path = file.path.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_file(path))
            .await
            .map_err(|_| StorageError::TaskFailed)?
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Read(e)),
        }
    }

    /// Counts this store's calls and failures by operation.
    fn record<T>(&self, operation: &'static str, result: &Result<T, StorageError>) {
        self.metrics
            .datastore_call(&self.id.0, operation, result.is_ok());
    }

    /// Keys live under `prefix` inside the bucket.
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        self.prefix = (!trimmed.is_empty()).then(|| trimmed.to_owned());
        self
    }

    #[must_use]
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    #[must_use]
    pub fn with_presigner(mut self, presigner: Presigner) -> Self {
        self.presigner = Some(presigner);
        self
    }

    pub fn id(&self) -> &DatastoreId {
        &self.id
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn kinds(&self) -> &[DatastoreKind] {
        &self.kinds
    }

    pub fn presigner(&self) -> Option<&Presigner> {
        self.presigner.as_ref()
    }

    /// A presigned GET for `key` when this datastore redirects downloads.
    pub async fn presign(
        &self,
        key: &BlobKey,
        content_type: &str,
        content_disposition: &str,
    ) -> Option<Result<Presigned, StorageError>> {
        let presigner = self.presigner.as_ref()?;
        Some(
            presigner
                .get(&self.path(key), content_type, content_disposition)
                .await,
        )
    }

    fn path(&self, key: &BlobKey) -> Path {
        match &self.prefix {
            Some(prefix) => Path::from(format!("{prefix}/{}", key.as_str())),
            None => Path::from(key.as_str()),
        }
    }

    /// Streams `body` to `key` and returns the byte count. A multipart upload
    /// is aborted on any failure so no partial object remains.
    #[tracing::instrument(level = "debug", skip_all, fields(datastore = %self.id, key = key.as_str()))]
    pub async fn put_stream(&self, key: &BlobKey, body: ByteStream) -> Result<u64, StorageError> {
        let result = self.put_stream_inner(key, body).await;
        // A body that failed (client gone, over the limit) is not the store's failure.
        if !matches!(result, Err(StorageError::Body(_))) {
            self.record("put", &result);
        }
        result
    }

    async fn put_stream_inner(
        &self,
        key: &BlobKey,
        mut body: ByteStream,
    ) -> Result<u64, StorageError> {
        let path = self.path(key);
        let single_max = if self.policy.multipart {
            self.policy.single_put_max
        } else {
            usize::MAX
        };
        let mut head = BytesMut::new();
        while head.len() <= single_max {
            let Some(chunk) = body.try_next().await.map_err(StorageError::Body)? else {
                let len = head.len() as u64;
                let options = PutOptions {
                    attributes: self.attributes.clone(),
                    ..PutOptions::default()
                };
                self.inner
                    .put_opts(&path, PutPayload::from(head.freeze()), options)
                    .await?;
                return Ok(len);
            };
            head.extend_from_slice(&chunk);
        }

        let options = PutMultipartOptions {
            attributes: self.attributes.clone(),
            ..PutMultipartOptions::default()
        };
        let upload = self.inner.put_multipart_opts(&path, options).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.policy.part_size);
        let mut written = head.len() as u64;
        writer.put(head.freeze());
        let streamed: Result<(), StorageError> = async {
            while let Some(chunk) = body.try_next().await.map_err(StorageError::Body)? {
                writer.wait_for_capacity(self.parts_in_flight).await?;
                written += chunk.len() as u64;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;

        match streamed {
            Ok(()) => match writer.finish().await {
                Ok(_) => Ok(written),
                Err(err) => Err(err.into()),
            },
            Err(err) => {
                // Best effort: the original failure is the one worth reporting.
                if let Err(abort_err) = writer.abort().await {
                    tracing::warn!(error = %abort_err, "multipart abort failed");
                }
                Err(err)
            }
        }
    }

    /// Opens `key` for reading, optionally only the byte `range`.
    pub async fn open(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self.get(key, options).await?;
        Ok(self.body_of(result))
    }

    /// A read through the reader, counted.
    async fn get(&self, key: &BlobKey, options: GetOptions) -> Result<GetResult, StorageError> {
        let result = self
            .reader
            .get_opts(&self.path(key), options)
            .await
            .map_err(StorageError::from);
        self.record("get", &result);
        result
    }

    /// A read's bytes as a stream: local files in `LOCAL_READ_CHUNK` reads,
    /// remote bodies with each wait capped at `read_idle`.
    fn body_of(&self, result: GetResult) -> ByteStream {
        match result.payload {
            GetResultPayload::File(file, _) => file_stream(file, result.range),
            GetResultPayload::Stream(stream) => {
                let stream = stream.map_err(std::io::Error::other).boxed();
                match self.read_idle {
                    Some(idle) => idle_capped(stream, idle),
                    None => stream,
                }
            }
        }
    }

    /// A small blob of a local datastore read whole in one trip to the
    /// blocking pool (open and read together); `None` for other backends,
    /// whose reads go through [`Self::open`].
    pub async fn read_small(
        &self,
        key: &BlobKey,
        size: u64,
    ) -> Result<Option<Bytes>, StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        let path = root.join(self.path(key).as_ref());
        let result = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let file = std::fs::File::open(path)?;
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            // One byte more than the record says: a longer file is noticed.
            file.take(size + 1).read_to_end(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|_| StorageError::TaskFailed)?
        .map_err(|e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound,
            _ => StorageError::Read(e),
        });
        self.record("get", &result);
        result.map(Some)
    }

    /// Deletes `key`; a missing object counts as deleted on every backend.
    pub async fn delete(&self, key: &BlobKey) -> Result<(), StorageError> {
        let result = match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        };
        self.record("delete", &result);
        result
    }

    /// Every blob-shaped object in the store (other objects are ignored).
    pub fn list(&self) -> BoxStream<'static, Result<ListedBlob, StorageError>> {
        let prefix = self.prefix.clone();
        self.inner
            .list(prefix.as_deref().map(Path::from).as_ref())
            .filter_map(move |item| {
                let prefix = prefix.clone();
                async move {
                    match item {
                        Ok(meta) => {
                            let name = meta.location.as_ref();
                            let name = match &prefix {
                                Some(p) => name.strip_prefix(p.as_str())?.strip_prefix('/')?,
                                None => name,
                            };
                            BlobKey::from_listed(name).map(|key| {
                                Ok(ListedBlob {
                                    key,
                                    last_modified: meta.last_modified.into(),
                                })
                            })
                        }
                        Err(e) => Some(Err(e.into())),
                    }
                }
            })
            .boxed()
    }

    /// Size of the object at `key`.
    pub async fn head(&self, key: &BlobKey) -> Result<u64, StorageError> {
        let result = self
            .inner
            .head(&self.path(key))
            .await
            .map(|meta| meta.size)
            .map_err(StorageError::from);
        self.record("head", &result);
        result
    }

    /// Cheap reachability probe: a HEAD of a key that never exists.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self
            .inner
            .head(&Path::from("mxmedia-readiness-probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Fails `stream` when the service takes longer than `idle` to deliver the
/// next chunk after it was asked for. Time the consumer spends not asking
/// (a slow client) does not count.
fn idle_capped(stream: ByteStream, idle: std::time::Duration) -> ByteStream {
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the object store sent nothing in time",
                )),
                None,
            )),
        }
    })
    .boxed()
}

/// Walks the two fan-out levels of a local datastore for `<key>#<digits>`
/// files older than `before`.
fn find_staging(root: &std::path::Path, before: SystemTime) -> std::io::Result<Vec<StagingFile>> {
    // Uploads finish (rename) and directories empty out while we walk: an
    // entry that vanished is skipped, not an error.
    fn entries(dir: &std::path::Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries.filter_map(Result::ok).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    let is_dir = |entry: &std::fs::DirEntry| entry.file_type().is_ok_and(|t| t.is_dir());
    let mut found = Vec::new();
    for first in entries(root)?.iter().filter(|e| is_dir(e)) {
        for second in entries(&first.path())?.iter().filter(|e| is_dir(e)) {
            for file in entries(&second.path())? {
                let name = file.file_name();
                let Some((blob, suffix)) = name.to_str().and_then(|n| n.split_once('#')) else {
                    continue;
                };
                if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let listed = format!(
                    "{}/{}/{blob}",
                    first.file_name().to_string_lossy(),
                    second.file_name().to_string_lossy()
                );
                let Some(key) = BlobKey::from_listed(&listed) else {
                    continue;
                };
                let Ok(modified) = file.metadata().and_then(|m| m.modified()) else {
                    continue;
                };
                if modified < before {
                    found.push(StagingFile {
                        path: file.path(),
                        key,
                        last_modified: modified,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// Bytes read from a local file per blocking task. `object_store`'s own file
/// stream reads 8 KiB per task, which caps downloads far below the disk's
/// speed; this bounds memory per download all the same.
const LOCAL_READ_CHUNK: u64 = 256 * 1024;

/// Streams `range` of an open local file in `LOCAL_READ_CHUNK` pieces, each
/// read on the blocking pool. A file that turns out shorter is an error, not
/// a silently short body.
pub(crate) fn file_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    futures::stream::try_unfold(
        (Some(file), range.start, range.end),
        |(file, pos, end)| async move {
            let Some(mut file) = file.filter(|_| pos < end) else {
                return Ok(None);
            };
            let len = (end - pos).min(LOCAL_READ_CHUNK);
            let (file, chunk) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                file.seek(SeekFrom::Start(pos))?;
                let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                (&mut file).take(len).read_to_end(&mut buf)?;
                if (buf.len() as u64) < len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob is shorter than its record",
                    ));
                }
                Ok((file, Bytes::from(buf)))
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((chunk, (Some(file), pos + len, end))))
        },
    )
    .boxed()
}

/// Every configured datastore, by id.
#[derive(Clone)]
pub struct Datastores {
    stores: Arc<HashMap<DatastoreId, BlobStore>>,
    /// Config order, so "the first datastore that takes X" is well defined.
    order: Arc<Vec<DatastoreId>>,
}

impl Datastores {
    pub fn new(stores: Vec<BlobStore>) -> Self {
        let order = stores.iter().map(|s| s.id.clone()).collect();
        let stores = stores.into_iter().map(|s| (s.id.clone(), s)).collect();
        Self {
            stores: Arc::new(stores),
            order: Arc::new(order),
        }
    }

    /// Every store reports its calls to `metrics`.
    #[must_use]
    pub fn instrument(self, metrics: &crate::metrics::Metrics) -> Self {
        let order = self.order;
        let stores = Arc::unwrap_or_clone(self.stores)
            .into_iter()
            .map(|(id, mut store)| {
                metrics.register_datastore(&id.0);
                store.metrics = metrics.clone();
                (id, store)
            })
            .collect();
        Self {
            stores: Arc::new(stores),
            order,
        }
    }

    pub fn get(&self, id: &DatastoreId) -> Result<&BlobStore, StorageError> {
        self.stores
            .get(id)
            .ok_or_else(|| StorageError::UnknownDatastore(id.clone()))
    }

    /// The datastore new blobs of `kind` are written to.
    pub fn writer_for(&self, kind: DatastoreKind) -> Result<&BlobStore, StorageError> {
        self.order
            .iter()
            .filter_map(|id| self.stores.get(id))
            .find(|s| s.kinds.contains(&kind))
            .ok_or(StorageError::NoWritableDatastore(kind))
    }

    pub fn iter(&self) -> impl Iterator<Item = &BlobStore> {
        self.order.iter().filter_map(|id| self.stores.get(id))
    }
}
