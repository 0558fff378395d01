//! The import use case over the real sled adapter and a local datastore.

use bytes::Bytes;
use futures::{StreamExt as _, stream};
use sha2::{Digest as _, Sha256};

use super::{
    ImportItem, Imported, MediaError,
    ports::Origin,
    tests::{alice, body, core, meta},
};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::UploadTarget,
    storage::ByteStream,
};

fn item(id: &str, bytes: &[u8]) -> ImportItem {
    ImportItem {
        key: MediaKey::parse("core.test", id).unwrap(),
        origin: Origin::Local,
        content_type: "image/png".into(),
        upload_name: Some("old.png".into()),
        uploader: Some("@alice:core.test".into()),
        created: UnixMillis(1_600_000_000_000),
        last_access: Some(UnixMillis(1_600_000_500_000)),
        quarantined_by: None,
        protected: true,
        requires_auth: false,
        sha256: Some(Sha256Digest(Sha256::digest(bytes).into())),
    }
}

/// A body that fails if anyone reads it.
fn unreadable() -> ByteStream {
    stream::iter([Err::<Bytes, _>(std::io::Error::other("read"))]).boxed()
}

/// An item keeps its id and metadata; importing it again reads nothing and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_keep_ids_and_metadata_and_are_idempotent() {
    let c = core(|_| {}).await;
    let imported = c
        .media
        .import(
            item("SynapseId0001", b"old bytes"),
            body(&[b"old ", b"bytes"]),
        )
        .await
        .unwrap();
    assert!(matches!(imported, Imported::Stored { size: 9, .. }));
    let info = c
        .media
        .media_info(&MediaKey::parse("core.test", "SynapseId0001").unwrap())
        .await
        .unwrap();
    assert_eq!(info.upload_name.as_deref(), Some("old.png"));
    assert_eq!(info.uploader.as_deref(), Some("@alice:core.test"));
    assert_eq!(info.created, UnixMillis(1_600_000_000_000));
    assert_eq!(info.last_access, Some(UnixMillis(1_600_000_500_000)));
    assert!(info.protected && !info.requires_auth && !info.quarantined);
    let again = c
        .media
        .import(item("SynapseId0001", b"old bytes"), unreadable())
        .await
        .unwrap();
    assert_eq!(again, Imported::AlreadyHere);
    assert_eq!(c.media.counts().await.unwrap().media, 1);
}

/// Bytes that do not match the recorded digest are refused and nothing is
/// stored; a quarantined item brings its quarantine, and the same bytes
/// uploaded later arrive quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_are_verified_and_keep_quarantine() {
    let c = core(|_| {}).await;
    let wrong = c
        .media
        .import(
            item("Corrupted0001", b"what was recorded"),
            body(&[b"what was read"]),
        )
        .await;
    assert!(matches!(wrong, Err(MediaError::Invalid(_))), "{wrong:?}");
    assert_eq!(c.media.counts().await.unwrap().media, 0);

    let mut bad = item("Quarantined01", b"abuse");
    bad.protected = false;
    bad.quarantined_by = Some("@admin:core.test".into());
    c.media.import(bad, body(&[b"abuse"])).await.unwrap();
    let info = c
        .media
        .media_info(&MediaKey::parse("core.test", "Quarantined01").unwrap())
        .await
        .unwrap();
    assert_eq!(info.quarantined_by.as_deref(), Some("@admin:core.test"));
    let key = c
        .media
        .upload(alice(), meta(None), body(&[b"abuse"]), UploadTarget::New)
        .await
        .unwrap();
    assert!(c.media.media_info(&key).await.unwrap().quarantined);
}
