//! The contract's quota cases: a quota holds exactly under concurrent
//! commits, reservations count as files, windows slide, usage follows
//! deletions.

use std::sync::Arc;

use super::{Store, blob, key, pending, record};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::ports::{Commit, CommitMode, MediaRecord, Quota, QuotaWindow, Reserve},
};

fn quota(max_files: Option<u64>, max_bytes: Option<u64>, windows: Vec<QuotaWindow>) -> Quota {
    Quota {
        user: "@q:x".into(),
        max_bytes,
        max_files,
        windows,
    }
}

fn upload(n: u8, size: u64) -> MediaRecord {
    MediaRecord {
        uploader: Some("@q:x".into()),
        size,
        created: UnixMillis::now(),
        ..record(n)
    }
}

/// Twenty concurrent commits against a 35-byte quota of 10-byte files:
/// exactly three land, whatever the interleaving.
pub(super) async fn quotas_hold_under_concurrent_commits<S: Store>(s: Arc<S>) {
    let limit = quota(None, Some(35), Vec::new());
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let (s, limit) = (Arc::clone(&s), limit.clone());
            tokio::spawn(async move {
                let key = MediaKey::parse("x", &format!("c{i}")).unwrap();
                s.commit(
                    &key,
                    &upload(i, 10),
                    &blob(),
                    &CommitMode::Fresh,
                    Some(&limit),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        match task.await.unwrap() {
            Commit::Done { .. } => done += 1,
            Commit::OverQuota => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(done, 3);
    let usage = s.usage_of("@q:x", &[]).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (3, 30));
    // Without a quota the store takes anything (an unlimited class).
    let free = s
        .commit(
            &key("free"),
            &upload(99, 1000),
            &blob(),
            &CommitMode::Fresh,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(free, Commit::Done { .. }));
    assert_eq!(s.usage_of("@q:x", &[]).await.unwrap().bytes, 1030);
    // Deleting gives room back.
    s.delete(&key("free"), true).await.unwrap();
    assert_eq!(s.usage_of("@q:x", &[]).await.unwrap().bytes, 30);
}

/// Reserved async uploads hold a file from their reservation; filling one
/// needs no new file; windows count only what was committed since.
pub(super) async fn reservations_and_windows_count(s: &dyn Store) {
    let two = quota(Some(2), None, Vec::new());
    let p = pending("@q:x", 0, u64::MAX);
    assert_eq!(
        s.reserve(&key("p1"), &p, 10, Some(&two)).await.unwrap(),
        Reserve::Done
    );
    assert_eq!(
        s.reserve(&key("p2"), &p, 10, Some(&two)).await.unwrap(),
        Reserve::Done
    );
    assert_eq!(
        s.reserve(&key("p3"), &p, 10, Some(&two)).await.unwrap(),
        Reserve::OverQuota
    );
    let fresh = s
        .commit(
            &key("f"),
            &upload(1, 5),
            &blob(),
            &CommitMode::Fresh,
            Some(&two),
        )
        .await
        .unwrap();
    assert_eq!(fresh, Commit::OverQuota, "both files are reserved");
    let mode = CommitMode::Reserved {
        owner: "@q:x".into(),
        now: UnixMillis(1),
    };
    let filled = s
        .commit(&key("p1"), &upload(2, 5), &blob(), &mode, Some(&two))
        .await
        .unwrap();
    assert!(matches!(filled, Commit::Done { .. }));
    let usage = s.usage_of("@q:x", &[]).await.unwrap();
    assert_eq!((usage.files, usage.pending), (1, 1));

    let now = UnixMillis::now();
    let hour_ago = UnixMillis(now.0 - 3_600_000);
    let usage = s
        .usage_of("@q:x", &[hour_ago, UnixMillis(now.0 + 3_600_000)])
        .await
        .unwrap();
    assert_eq!(usage.windows, [(1, 5), (0, 0)]);
    let per_hour = quota(
        None,
        None,
        vec![QuotaWindow {
            since: hour_ago,
            max_bytes: None,
            max_files: Some(1),
        }],
    );
    let refused = s
        .commit(
            &key("w"),
            &upload(3, 5),
            &blob(),
            &CommitMode::Fresh,
            Some(&per_hour),
        )
        .await
        .unwrap();
    assert_eq!(refused, Commit::OverQuota, "one file per hour");
    let later = QuotaWindow {
        since: UnixMillis(now.0 + 3_600_000),
        ..per_hour.windows[0].clone()
    };
    let next_window = quota(None, None, vec![later]);
    let admitted = s
        .commit(
            &key("w"),
            &upload(3, 5),
            &blob(),
            &CommitMode::Fresh,
            Some(&next_window),
        )
        .await
        .unwrap();
    assert!(matches!(admitted, Commit::Done { .. }));
    assert_eq!(Sha256Digest([3; 32]), upload(3, 5).sha256);
}
