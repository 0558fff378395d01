//! The contract of the metadata ports: one suite every adapter runs
//! (`run` with a factory of fresh, empty stores). It states what the
//! application core relies on: dedup and reference counts, reservations,
//! expiry, thumbnails, concurrent commits and the sweep's view of keys.

mod catalog;
mod deletion;
mod quota;

use std::{future::Future, sync::Arc};

use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        BlobIndex, Catalog, ClaimRecord, Commit, CommitMode, CommitThumb, Counts, Housekeeping,
        Lookup, MediaRecord, MediaRecords, NewBlob, Origin, PendingRecord, Reserve, ThumbRecord,
        ThumbSize,
    },
};

/// What an adapter under test must be.
pub trait Store: MediaRecords + BlobIndex + Catalog + Housekeeping + 'static {}
impl<T: MediaRecords + BlobIndex + Catalog + Housekeeping + 'static> Store for T {}

/// Runs every case, each on a fresh store from `make` (whose first value
/// is kept alive for the case, e.g. a temporary directory).
pub async fn run<F, Fut, G, S>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (G, Arc<S>)>,
    S: Store,
{
    let (_g, s) = make().await;
    commits_deduplicate_by_digest(&*s).await;
    let (_g, s) = make().await;
    reservations_check_owner_expiry_and_overwrite(&*s).await;
    let (_g, s) = make().await;
    reservations_are_capped_per_owner_and_expire(&*s).await;
    let (_g, s) = make().await;
    thumbnails_are_kept_per_size_and_share_blobs(&*s).await;
    let (_g, s) = make().await;
    blobs_are_listed_per_datastore_and_moved_atomically(&*s).await;
    let (_g, s) = make().await;
    concurrent_commits_count_every_reference(s).await;
    let (_g, s) = make().await;
    the_sweep_sees_exactly_the_unknown_keys(&*s).await;
    let (_g, s) = make().await;
    identity_and_claims_persist(&*s).await;
    let (_g, s) = make().await;
    catalog::quarantine_covers_identical_content(&*s).await;
    let (_g, s) = make().await;
    catalog::uploads_list_in_every_order(&*s).await;
    let (_g, s) = make().await;
    catalog::bulk_scans_and_usage(&*s).await;
    let (_g, s) = make().await;
    quota::quotas_hold_under_concurrent_commits(s).await;
    let (_g, s) = make().await;
    quota::reservations_and_windows_count(&*s).await;
    let (_g, s) = make().await;
    deletion::releases_blobs_and_tombstones_ids(&*s).await;
    let (_g, s) = make().await;
    deletion::racing_thumbnails_leave_nothing_behind(s).await;
}

fn record(sha: u8) -> MediaRecord {
    MediaRecord {
        sha256: Sha256Digest([sha; 32]),
        size: 3,
        content_type: "text/plain".into(),
        upload_name: Some("a.txt".into()),
        uploader: Some("@a:x".into()),
        created: UnixMillis(10),
        origin: Origin::Local,
        requires_auth: true,
        quarantined: false,
        quarantined_by: None,
        protected: false,
        last_access: None,
    }
}

fn key(id: &str) -> MediaKey {
    MediaKey::parse("x", id).unwrap()
}

fn local() -> DatastoreId {
    DatastoreId("local".into())
}

fn blob() -> NewBlob {
    NewBlob {
        datastore: local(),
        key: BlobKey::random(),
    }
}

fn pending(owner: &str, created: u64, expires: u64) -> PendingRecord {
    PendingRecord {
        owner: owner.into(),
        created: UnixMillis(created),
        expires: UnixMillis(expires),
    }
}

fn done(deduplicated: bool) -> Commit {
    Commit::Done { deduplicated }
}

/// Identical content shares one blob; the reference count follows; a
/// fresh commit never overwrites; lookups return the media with its blob.
async fn commits_deduplicate_by_digest(s: &dyn Store) {
    let first = blob();
    let fresh = CommitMode::Fresh;
    assert_eq!(
        s.commit(&key("a"), &record(1), &first, &fresh, None)
            .await
            .unwrap(),
        done(false)
    );
    assert_eq!(
        s.commit(&key("b"), &record(1), &blob(), &fresh, None)
            .await
            .unwrap(),
        done(true)
    );
    assert_eq!(
        s.commit(&key("a"), &record(2), &blob(), &fresh, None)
            .await
            .unwrap(),
        Commit::Taken
    );
    let shared = s.blob(&Sha256Digest([1; 32])).await.unwrap().unwrap();
    assert_eq!((shared.refs, &shared.key, shared.size), (2, &first.key, 3));
    match s.lookup(&key("b")).await.unwrap() {
        Lookup::Complete { record: r, blob } => {
            assert_eq!(r, record(1));
            assert_eq!(blob.unwrap().key, first.key);
        }
        other => panic!("expected complete media, got {other:?}"),
    }
    assert_eq!(s.lookup(&key("zz")).await.unwrap(), Lookup::Missing);
    assert_eq!(
        s.counts().await.unwrap(),
        Counts {
            media: 2,
            pending: 0,
            blobs: 1
        }
    );
}

/// Async upload rules: owner only, once, before expiry.
async fn reservations_check_owner_expiry_and_overwrite(s: &dyn Store) {
    let p = pending("@a:x", 0, 100);
    assert_eq!(
        s.reserve(&key("p"), &p, 5, None).await.unwrap(),
        Reserve::Done
    );
    assert_eq!(
        s.reserve(&key("p"), &p, 5, None).await.unwrap(),
        Reserve::Taken
    );
    assert_eq!(
        s.lookup(&key("p")).await.unwrap(),
        Lookup::Pending(p.clone())
    );
    assert_eq!(s.pending_count().await.unwrap(), 1);
    let at = |owner: &str, now| CommitMode::Reserved {
        owner: owner.into(),
        now: UnixMillis(now),
    };
    let r = record(1);
    assert_eq!(
        s.commit(&key("p"), &r, &blob(), &at("@b:x", 50), None)
            .await
            .unwrap(),
        Commit::NotOwner
    );
    assert_eq!(
        s.commit(&key("p"), &r, &blob(), &at("@a:x", 100), None)
            .await
            .unwrap(),
        Commit::NotReserved
    );
    assert_eq!(
        s.commit(&key("q"), &r, &blob(), &at("@a:x", 50), None)
            .await
            .unwrap(),
        Commit::NotReserved
    );
    assert_eq!(
        s.commit(&key("p"), &r, &blob(), &at("@a:x", 50), None)
            .await
            .unwrap(),
        done(false)
    );
    assert_eq!(
        s.commit(&key("p"), &r, &blob(), &at("@a:x", 50), None)
            .await
            .unwrap(),
        Commit::AlreadyHasContent
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(s.counts().await.unwrap().media, 1);
}

/// The per-owner cap counts only live reservations; expiry removes only
/// expired ones, and never complete media.
async fn reservations_are_capped_per_owner_and_expire(s: &dyn Store) {
    assert_eq!(
        s.reserve(&key("a"), &pending("@a:x", 0, 50), 2, None)
            .await
            .unwrap(),
        Reserve::Done
    );
    assert_eq!(
        s.reserve(&key("b"), &pending("@a:x", 0, 80), 2, None)
            .await
            .unwrap(),
        Reserve::Done
    );
    assert_eq!(
        s.reserve(&key("c"), &pending("@a:x", 10, 90), 2, None)
            .await
            .unwrap(),
        Reserve::TooManyPending {
            next_expiry: UnixMillis(50)
        }
    );
    // Another owner has their own cap.
    assert_eq!(
        s.reserve(&key("o"), &pending("@o:x", 10, 90), 2, None)
            .await
            .unwrap(),
        Reserve::Done
    );
    // At t=60 the first has expired and no longer counts.
    assert_eq!(
        s.reserve(&key("c"), &pending("@a:x", 60, 90), 2, None)
            .await
            .unwrap(),
        Reserve::Done
    );
    s.commit(&key("done"), &record(1), &blob(), &CommitMode::Fresh, None)
        .await
        .unwrap();
    assert_eq!(
        s.expire_pending(UnixMillis(60), 10).await.unwrap(),
        vec![key("a")]
    );
    assert_eq!(s.lookup(&key("a")).await.unwrap(), Lookup::Missing);
    assert!(
        s.expire_pending(UnixMillis(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Batches: two expired at t=100, one per call.
    assert_eq!(s.expire_pending(UnixMillis(100), 1).await.unwrap().len(), 1);
    assert_eq!(s.expire_pending(UnixMillis(100), 1).await.unwrap().len(), 1);
    assert_eq!(s.expire_pending(UnixMillis(100), 1).await.unwrap().len(), 1);
    assert!(
        s.expire_pending(UnixMillis(100), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.lookup(&key("done")).await.unwrap(),
        Lookup::Complete { .. }
    ));
    assert_eq!(
        s.counts().await.unwrap(),
        Counts {
            media: 1,
            pending: 0,
            blobs: 1
        }
    );
}

fn thumb(sha: u8) -> ThumbRecord {
    ThumbRecord {
        sha256: Sha256Digest([sha; 32]),
        size: 3,
        content_type: "image/png".into(),
        width: 32,
        height: 24,
        created: UnixMillis(20),
        last_access: None,
    }
}

/// One thumbnail per size, method and animation; the first commit wins;
/// thumbnails share blobs with media and with each other by digest.
async fn thumbnails_are_kept_per_size_and_share_blobs(s: &dyn Store) {
    s.commit(&key("m"), &record(1), &blob(), &CommitMode::Fresh, None)
        .await
        .unwrap();
    let small = ThumbSize {
        width: 32,
        height: 32,
        crop: true,
        animated: false,
    };
    let animated = ThumbSize {
        animated: true,
        ..small
    };
    let scaled = ThumbSize {
        crop: false,
        ..small
    };
    assert_eq!(s.thumbnail(&key("m"), &small).await.unwrap(), None);
    let first = blob();
    let CommitThumb::Done {
        deduplicated: false,
        stored,
    } = s
        .commit_thumbnail(&key("m"), &small, &thumb(7), &first)
        .await
        .unwrap()
    else {
        panic!("first thumbnail commit");
    };
    assert_eq!(
        (stored.record.clone(), stored.blob.key.clone()),
        (thumb(7), first.key.clone())
    );
    // A second generation of the same size loses to the first.
    let CommitThumb::Exists(existing) = s
        .commit_thumbnail(&key("m"), &small, &thumb(8), &blob())
        .await
        .unwrap()
    else {
        panic!("second commit of one size");
    };
    assert_eq!(existing, stored);
    assert_eq!(s.thumbnail(&key("m"), &small).await.unwrap(), Some(stored));
    assert_eq!(s.thumbnail(&key("m"), &animated).await.unwrap(), None);
    assert_eq!(s.thumbnail(&key("m"), &scaled).await.unwrap(), None);
    // Same bytes at another size share the blob; bytes equal to the media's too.
    let CommitThumb::Done {
        deduplicated: true,
        stored,
    } = s
        .commit_thumbnail(&key("m"), &animated, &thumb(7), &blob())
        .await
        .unwrap()
    else {
        panic!("deduplicated thumbnail");
    };
    assert_eq!(stored.blob.key, first.key);
    assert_eq!(stored.blob.refs, 2);
    let CommitThumb::Done {
        deduplicated: true, ..
    } = s
        .commit_thumbnail(&key("m"), &scaled, &thumb(1), &blob())
        .await
        .unwrap()
    else {
        panic!("thumbnail equal to its media");
    };
    assert_eq!(
        s.blob(&Sha256Digest([1; 32])).await.unwrap().unwrap().refs,
        2
    );
}

/// Blobs are listed per datastore in key order, resumably, and a move only
/// applies while the record is still where the mover saw it.
async fn blobs_are_listed_per_datastore_and_moved_atomically(s: &dyn Store) {
    for i in 1..=5u8 {
        s.commit(
            &key(&format!("m{i}")),
            &record(i),
            &blob(),
            &CommitMode::Fresh,
            None,
        )
        .await
        .unwrap();
    }
    let other = DatastoreId("s3".into());
    assert_eq!(s.count_blobs_in(&local()).await.unwrap(), 5);
    let first = s.blobs_in(&local(), None, 2).await.unwrap();
    let rest = s
        .blobs_in(&local(), Some(&first[1].1.key), 10)
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len()), (2, 3));
    assert!(first[0].1.key.as_str() < first[1].1.key.as_str());
    assert!(first[1].1.key.as_str() < rest[0].1.key.as_str());
    let (digest, rec) = &first[0];
    let to = BlobKey::random();
    assert!(
        s.move_blob(digest, (&local(), &rec.key), (&other, &to))
            .await
            .unwrap()
    );
    assert!(
        !s.move_blob(digest, (&local(), &rec.key), (&other, &to))
            .await
            .unwrap(),
        "stale move refused"
    );
    assert_eq!(s.count_blobs_in(&local()).await.unwrap(), 4);
    assert_eq!(s.count_blobs_in(&other).await.unwrap(), 1);
    assert_eq!(s.blob(digest).await.unwrap().unwrap().datastore, other);
    assert_eq!(
        s.unknown_keys(&other, vec![to.clone()]).await.unwrap(),
        vec![]
    );
    assert_eq!(
        s.unknown_keys(&local(), vec![rec.key.clone()])
            .await
            .unwrap(),
        vec![rec.key.clone()]
    );
    let all = s.blobs_after(None, 3).await.unwrap();
    let more = s.blobs_after(Some(&all[2].0), 10).await.unwrap();
    assert_eq!(all.len() + more.len(), 5);
    assert!(all.windows(2).all(|w| w[0].0.0 < w[1].0.0));
}

/// Many commits of one digest at once: exactly one keeps its blob, the
/// rest deduplicate, and the count is exact.
async fn concurrent_commits_count_every_reference<S: Store>(s: Arc<S>) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.commit(
                    &key(&format!("c{i}")),
                    &record(9),
                    &blob(),
                    &CommitMode::Fresh,
                    None,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut kept = 0;
    for task in tasks {
        match task.await.unwrap() {
            Commit::Done {
                deduplicated: false,
            } => kept += 1,
            Commit::Done { deduplicated: true } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kept, 1);
    assert_eq!(
        s.blob(&Sha256Digest([9; 32])).await.unwrap().unwrap().refs,
        32
    );
    // Racing reservations of one owner never exceed the cap.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.reserve(&key(&format!("r{i}")), &pending("@r:x", 0, 1_000), 4, None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        reserved += usize::from(task.await.unwrap() == Reserve::Done);
    }
    assert_eq!(reserved, 4);
    assert_eq!(s.pending_count().await.unwrap(), 4);
}

/// The sweep asks which listed keys no record points at: exactly those,
/// per datastore, media and thumbnail blobs alike.
async fn the_sweep_sees_exactly_the_unknown_keys(s: &dyn Store) {
    let media_blob = blob();
    let thumb_blob = blob();
    s.commit(&key("m"), &record(1), &media_blob, &CommitMode::Fresh, None)
        .await
        .unwrap();
    let size = ThumbSize {
        width: 8,
        height: 8,
        crop: false,
        animated: false,
    };
    s.commit_thumbnail(&key("m"), &size, &thumb(2), &thumb_blob)
        .await
        .unwrap();
    // The loser of a dedup left its object behind: unknown.
    let surplus = blob();
    s.commit(&key("n"), &record(1), &surplus, &CommitMode::Fresh, None)
        .await
        .unwrap();
    let stray = BlobKey::random();
    let listed = vec![
        media_blob.key.clone(),
        stray.clone(),
        thumb_blob.key.clone(),
        surplus.key.clone(),
    ];
    let mut unknown = s.unknown_keys(&local(), listed.clone()).await.unwrap();
    unknown.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut expected = vec![stray, surplus.key];
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(unknown, expected);
    // In another datastore every key is unknown.
    assert_eq!(
        s.unknown_keys(&DatastoreId("s3".into()), listed)
            .await
            .unwrap()
            .len(),
        4
    );
}

/// The identity is made once and kept; claims are per datastore.
async fn identity_and_claims_persist(s: &dyn Store) {
    let identity = s.identity().await.unwrap();
    assert_eq!(identity.id.len(), 32);
    assert_eq!(s.identity().await.unwrap(), identity);
    assert_eq!(s.claim(&local()).await.unwrap(), None);
    let claim = ClaimRecord {
        since: UnixMillis(5),
    };
    s.put_claim(&local(), &claim).await.unwrap();
    assert_eq!(s.claim(&local()).await.unwrap(), Some(claim));
    assert_eq!(s.claim(&DatastoreId("s3".into())).await.unwrap(), None);
    s.ping().await.unwrap();
    s.close().await.unwrap();
}
