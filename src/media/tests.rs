//! The core on its own: a `MediaService` over the sled adapter and a local
//! datastore in a temporary directory, driven by direct calls (no HTTP, no
//! TCP). Upload guard, dedup, declared lengths and the sweep.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use ruma::{ServerName, UserId};

use super::{
    Access, MediaError, MediaRequest, MediaService, UploadMeta, UploadTarget, Wiring,
    ports::{Metadata, RemoteAnswer, RemoteError, RemoteSource},
};
use crate::{
    config::{
        DatastoreConfig, FederationConfig, LocalDatastoreConfig, MediaConfig, ThumbnailConfig,
    },
    ids::{BlobKey, MediaKey},
    repo::sled::SledRepo,
    storage::{BlobStore, ByteStream, build_datastores},
};

/// Other servers never answer here.
struct NoRemote;

#[async_trait]
impl RemoteSource for NoRemote {
    async fn fetch(&self, _key: &MediaKey) -> Result<RemoteAnswer, RemoteError> {
        Err(RemoteError::NotFound)
    }

    fn is_blocked(&self, _server: &ServerName) -> bool {
        false
    }
}

/// No homeserver: the core's tests never ask one.
struct NoHomeserver;

#[async_trait::async_trait]
impl crate::media::ports::Homeserver for NoHomeserver {
    async fn room_media(
        &self,
        _room: &ruma::RoomId,
        _acting: &crate::auth::Credentials,
    ) -> Result<Vec<MediaKey>, crate::media::ports::HomeserverError> {
        Err(crate::media::ports::HomeserverError::Unavailable(
            "none".into(),
        ))
    }

    async fn avatars(
        &self,
        _acting: &crate::auth::Credentials,
    ) -> Result<std::collections::HashSet<MediaKey>, crate::media::ports::HomeserverError> {
        Err(crate::media::ports::HomeserverError::Unavailable(
            "none".into(),
        ))
    }

    async fn display_name(
        &self,
        _user: &UserId,
        _acting: &crate::auth::Credentials,
    ) -> Result<Option<String>, crate::media::ports::HomeserverError> {
        Ok(None)
    }
}

pub(super) struct Core {
    pub(super) media: MediaService,
    _dir: tempfile::TempDir,
}

pub(super) async fn core(tweak: impl FnOnce(&mut MediaConfig)) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let mut config = MediaConfig::default();
    tweak(&mut config);
    let stores = build_datastores(
        &[DatastoreConfig::Local(LocalDatastoreConfig {
            path: Some(dir.path().join("media")),
            ..LocalDatastoreConfig::default()
        })],
        dir.path(),
    )
    .unwrap();
    let repo = SledRepo::open(&dir.path().join("db"), 8 << 20).unwrap();
    let media = MediaService::new(
        Wiring {
            previewer: None,
            server_name: "core.test".try_into().unwrap(),
            metadata: Metadata::new(Arc::new(repo)),
            stores,
            cache: None,
            memory: None,
            remote: Arc::new(NoRemote),
            homeserver: Arc::new(NoHomeserver),
            metrics: crate::metrics::Metrics::new(),
        },
        config,
        ThumbnailConfig::default(),
        &FederationConfig::default(),
        crate::media::Policies::default(),
    );
    media.claim_datastores("core test").await.unwrap();
    Core { media, _dir: dir }
}

pub(super) fn alice() -> &'static UserId {
    <&UserId>::try_from("@alice:core.test").unwrap()
}

pub(super) fn body(chunks: &[&'static [u8]]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> =
        chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    stream::iter(chunks).boxed()
}

pub(super) fn meta(declared: Option<u64>) -> UploadMeta {
    UploadMeta::new(Some("text/plain"), Some("a.txt"), declared)
}

impl Core {
    fn store(&self) -> &BlobStore {
        self.media.inner.stores.iter().next().unwrap()
    }

    async fn objects(&self) -> Vec<BlobKey> {
        let listed: Vec<_> = self.store().list().try_collect().await.unwrap();
        listed.into_iter().map(|b| b.key).collect()
    }

    /// Objects left once background deletions are done (bounded wait).
    async fn settled_objects(&self, expected: usize) -> Vec<BlobKey> {
        for _ in 0..100 {
            let objects = self.objects().await;
            if objects.len() == expected {
                return objects;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.objects().await
    }

    async fn read_all(&self, key: &MediaKey) -> Vec<u8> {
        let request = MediaRequest {
            key: key.clone(),
            access: Access::Authenticated,
            user: Some(alice()),
            allow_remote: false,
            allow_redirect: false,
            wait: Duration::ZERO,
            bypass_quarantine: false,
            client: None,
        };
        let opened = self.media.download(&request, None).await.unwrap();
        let super::Body::Stream(reader) = opened.body else {
            panic!("a local datastore never redirects");
        };
        let chunks: Vec<Bytes> = reader
            .read(None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        chunks.concat()
    }
}

/// Identical content is stored once; both ids read it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_uploads_share_one_object() {
    let c = core(|_| {}).await;
    let up = |chunks| {
        c.media
            .upload(alice(), meta(None), body(chunks), UploadTarget::New)
    };
    let first = up(&[b"same ", b"bytes"]).await.unwrap();
    let second = up(&[b"same bytes"]).await.unwrap();
    assert_ne!(first, second);
    let counts = c.media.counts().await.unwrap();
    assert_eq!((counts.media, counts.blobs), (2, 1));
    assert_eq!(c.settled_objects(1).await.len(), 1);
    assert_eq!(c.read_all(&first).await, b"same bytes");
    assert_eq!(c.read_all(&second).await, b"same bytes");
}

/// A body that fails half-way or runs over the limit leaves no record and,
/// once the guard has run, no object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_leave_nothing_behind() {
    let c = core(|m| m.max_upload_size = bytesize::ByteSize::b(8)).await;
    let broken: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    let failed = c
        .media
        .upload(alice(), meta(None), broken, UploadTarget::New)
        .await;
    assert!(matches!(failed, Err(MediaError::Body(_))), "{failed:?}");
    let over = c
        .media
        .upload(
            alice(),
            meta(None),
            body(&[b"12345", b"67890"]),
            UploadTarget::New,
        )
        .await;
    assert!(
        matches!(over, Err(MediaError::TooLarge { limit: 8 })),
        "{over:?}"
    );
    assert_eq!(c.media.counts().await.unwrap().media, 0);
    assert!(c.settled_objects(0).await.is_empty());
}

/// A declared length over the limit is refused before the body is polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_lengths_over_the_limit_are_refused_unread() {
    let c = core(|m| m.max_upload_size = bytesize::ByteSize::b(8)).await;
    let untouchable: ByteStream = stream::poll_fn(|_| panic!("the body was read")).boxed();
    let refused = c
        .media
        .upload(alice(), meta(Some(9)), untouchable, UploadTarget::New)
        .await;
    assert!(
        matches!(refused, Err(MediaError::TooLarge { limit: 8 })),
        "{refused:?}"
    );
    // At the limit it is read and stored.
    let key = c
        .media
        .upload(
            alice(),
            meta(Some(8)),
            body(&[b"12345678"]),
            UploadTarget::New,
        )
        .await
        .unwrap();
    assert_eq!(c.read_all(&key).await, b"12345678");
}

/// The sweep removes objects no record points at and expired reservations;
/// it keeps stored media and objects being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_only_what_nothing_references() {
    let c = core(|m| {
        m.orphan_grace = Duration::ZERO;
        m.pending_expiry = Duration::from_millis(1);
    })
    .await;
    // Objects written right after the claim must not share its millisecond.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let kept = c
        .media
        .upload(alice(), meta(None), body(&[b"kept"]), UploadTarget::New)
        .await
        .unwrap();
    let reserved = c.media.reserve(alice()).await.unwrap().key;
    let orphan = BlobKey::random();
    c.store()
        .put_stream(&orphan, body(&[b"stray"]))
        .await
        .unwrap();
    let writing = BlobKey::random();
    c.store()
        .put_stream(&writing, body(&[b"busy"]))
        .await
        .unwrap();
    let ticket = c.media.writing(c.store().id(), &writing).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let report = c.media.sweep().await.unwrap();
    assert_eq!((report.orphan_blobs, report.expired_pending), (1, 1));
    let left = c.objects().await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&writing) && !left.contains(&orphan));
    assert_eq!(c.read_all(&kept).await, b"kept");
    assert_eq!(c.media.pending_count().await.unwrap(), 0);
    assert!(!c.media.is_stored(&reserved).await.unwrap());
    // Once written (the ticket dropped) and still unreferenced, it goes too.
    drop(ticket);
    assert_eq!(c.media.sweep().await.unwrap().orphan_blobs, 1);
    assert_eq!(c.objects().await.len(), 1);
}
