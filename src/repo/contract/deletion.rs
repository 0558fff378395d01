//! The contract's deletion cases: references released, objects unlinked,
//! ids tombstoned, and thumbnails racing a deletion.

use std::sync::Arc;

use super::{Store, blob, done, key, local, pending, record, thumb};
use crate::{
    ids::Sha256Digest,
    media::ports::{Commit, CommitMode, Counts, Deletion, Lookup, Reserve, ThumbSize, Unlinked},
};

/// Deleting media removes it and its thumbnails in one step: blobs still
/// shared keep the rest of their references, blobs left without any become
/// unlinked (to be removed from the datastore, then forgotten); a
/// tombstoned id is never handed out again, a purged one may come back.
pub(super) async fn releases_blobs_and_tombstones_ids(s: &dyn Store) {
    let shared = blob();
    let own_thumb = blob();
    s.commit(&key("a"), &record(1), &shared, &CommitMode::Fresh, None)
        .await
        .unwrap();
    s.commit(&key("b"), &record(1), &blob(), &CommitMode::Fresh, None)
        .await
        .unwrap();
    let size = ThumbSize {
        width: 8,
        height: 8,
        crop: true,
        animated: false,
    };
    s.commit_thumbnail(&key("a"), &size, &thumb(2), &own_thumb)
        .await
        .unwrap();
    assert_eq!(
        s.delete(&key("none"), true).await.unwrap(),
        Deletion::Missing
    );

    // "a" goes: its thumbnail's blob is unlinked, the shared blob keeps b's reference.
    let Deletion::Deleted { unlinked } = s.delete(&key("a"), true).await.unwrap() else {
        panic!("a was there");
    };
    let thumb_object = Unlinked {
        datastore: local(),
        key: own_thumb.key.clone(),
        sha256: Sha256Digest([2; 32]),
    };
    assert_eq!(unlinked, vec![thumb_object.clone()]);
    assert_eq!(s.lookup(&key("a")).await.unwrap(), Lookup::Missing);
    assert_eq!(s.thumbnail(&key("a"), &size).await.unwrap(), None);
    assert_eq!(
        s.blob(&Sha256Digest([1; 32])).await.unwrap().unwrap().refs,
        1
    );
    assert_eq!(s.blob(&Sha256Digest([2; 32])).await.unwrap(), None);
    assert_eq!(
        s.unknown_keys(&local(), vec![own_thumb.key.clone()])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.delete(&key("a"), true).await.unwrap(), Deletion::Missing);
    // The tombstoned id stays taken; the count leaves it out.
    assert_eq!(
        s.commit(&key("a"), &record(3), &blob(), &CommitMode::Fresh, None)
            .await
            .unwrap(),
        Commit::Taken
    );
    assert_eq!(
        s.reserve(&key("a"), &pending("@a:x", 0, 100), 5, None)
            .await
            .unwrap(),
        Reserve::Taken
    );
    assert_eq!(
        s.counts().await.unwrap(),
        Counts {
            media: 1,
            pending: 0,
            blobs: 1
        }
    );

    // "b" goes without a tombstone (purged remote media): its last
    // reference unlinks the shared blob, and the id may be stored again.
    let Deletion::Deleted { unlinked } = s.delete(&key("b"), false).await.unwrap() else {
        panic!("b was there");
    };
    assert_eq!(unlinked.len(), 1);
    assert_eq!(unlinked[0].key, shared.key);
    assert_eq!(s.blob(&Sha256Digest([1; 32])).await.unwrap(), None);
    let mut pending_objects = s.unlinked(10).await.unwrap();
    pending_objects.sort_by(|x, y| x.key.as_str().cmp(y.key.as_str()));
    let mut expected = vec![thumb_object, unlinked[0].clone()];
    expected.sort_by(|x, y| x.key.as_str().cmp(y.key.as_str()));
    assert_eq!(pending_objects, expected);
    for object in &pending_objects {
        s.forget_unlinked(object).await.unwrap();
    }
    assert!(s.unlinked(10).await.unwrap().is_empty());
    assert_eq!(
        s.commit(&key("b"), &record(1), &blob(), &CommitMode::Fresh, None)
            .await
            .unwrap(),
        done(false)
    );
    assert_eq!(
        s.counts().await.unwrap(),
        Counts {
            media: 1,
            pending: 0,
            blobs: 1
        }
    );
}

/// Thumbnails committed while their media is deleted never outlive it: a
/// commit that comes after the deletion stores nothing.
pub(super) async fn racing_thumbnails_leave_nothing_behind<S: Store>(s: Arc<S>) {
    for round in 0..8u8 {
        let media = key(&format!("r{round}"));
        s.commit(
            &media,
            &record(100 + round),
            &blob(),
            &CommitMode::Fresh,
            None,
        )
        .await
        .unwrap();
        let tasks: Vec<_> = (0..4u32)
            .map(|i| {
                let (s, media) = (Arc::clone(&s), media.clone());
                tokio::spawn(async move {
                    let size = ThumbSize {
                        width: 8 + i,
                        height: 8,
                        crop: false,
                        animated: false,
                    };
                    s.commit_thumbnail(&media, &size, &thumb(200 + round), &blob())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let deleted = s.delete(&media, true).await.unwrap();
        assert!(matches!(deleted, Deletion::Deleted { .. }));
        for task in tasks {
            task.await.unwrap();
        }
        // Whatever got in before the deletion went with it; nothing after.
        for i in 0..4u32 {
            let size = ThumbSize {
                width: 8 + i,
                height: 8,
                crop: false,
                animated: false,
            };
            assert_eq!(s.thumbnail(&media, &size).await.unwrap(), None);
        }
        assert_eq!(
            s.blob(&Sha256Digest([200 + round; 32])).await.unwrap(),
            None
        );
        assert_eq!(
            s.blob(&Sha256Digest([100 + round; 32])).await.unwrap(),
            None
        );
    }
    assert_eq!(s.counts().await.unwrap().blobs, 0);
}
