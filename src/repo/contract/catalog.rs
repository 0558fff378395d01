//! The contract's catalog cases: quarantine over identical content and
//! later uploads, the quarantine log, a user's uploads in every order, bulk
//! scans and usage.

use super::{Store, blob, key, pending, record};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::ports::{
        CommitMode, Lookup, MediaOrder, MediaPageQuery, MediaRecord, Origin, QuarantineChange,
    },
};

async fn stored(s: &dyn Store, key: &MediaKey) -> MediaRecord {
    match s.lookup(key).await.unwrap() {
        Lookup::Complete { record, .. } => record,
        other => panic!("{key} is not complete: {other:?}"),
    }
}

async fn commit(s: &dyn Store, key: &MediaKey, record: &MediaRecord) {
    s.commit(key, record, &blob(), &CommitMode::Fresh, None)
        .await
        .unwrap();
}

fn quarantine() -> QuarantineChange {
    QuarantineChange::Quarantine {
        by: "@admin:x".into(),
    }
}

/// Quarantining one item covers every copy of its bytes (local and
/// remote) except protected media, and later commits of those bytes
/// arrive quarantined; releasing any copy releases them all and forgets
/// the content. Every change is logged in order.
pub(super) async fn quarantine_covers_identical_content(s: &dyn Store) {
    let remote = MediaKey::parse("elsewhere", "r").unwrap();
    commit(s, &key("a"), &record(1)).await;
    commit(s, &key("b"), &record(1)).await;
    commit(s, &key("c"), &record(2)).await;
    commit(s, &key("d"), &record(1)).await;
    let mut cached = record(1);
    cached.origin = Origin::Remote;
    cached.uploader = None;
    commit(s, &remote, &cached).await;
    assert!(s.set_protected(&key("d"), true).await.unwrap());
    assert!(!s.set_protected(&key("none"), true).await.unwrap());
    s.reserve(&key("p"), &pending("@a:x", 0, u64::MAX), 5, None)
        .await
        .unwrap();
    assert!(
        !s.set_protected(&key("p"), true).await.unwrap(),
        "pending media has no flags"
    );

    assert_eq!(s.quarantine_log_head().await.unwrap(), 0);
    assert_eq!(
        s.quarantine(&[key("d")], &quarantine()).await.unwrap(),
        0,
        "a protected target quarantines nothing"
    );
    assert_eq!(
        s.quarantine(&[key("a"), key("none"), key("p")], &quarantine())
            .await
            .unwrap(),
        3
    );
    for k in [key("a"), key("b"), remote.clone()] {
        let r = stored(s, &k).await;
        assert!(r.quarantined, "{k}");
        assert_eq!(r.quarantined_by.as_deref(), Some("@admin:x"));
    }
    assert!(
        !stored(s, &key("c")).await.quarantined,
        "other content is untouched"
    );
    assert!(
        !stored(s, &key("d")).await.quarantined,
        "protected media is exempt"
    );
    assert_eq!(
        s.quarantine(&[key("b")], &quarantine()).await.unwrap(),
        0,
        "already quarantined"
    );
    let content = s.quarantined_content(&Sha256Digest([1; 32])).await.unwrap();
    assert_eq!(content.map(|c| c.by).as_deref(), Some("@admin:x"));

    commit(s, &key("e"), &record(1)).await;
    let later = stored(s, &key("e")).await;
    assert!(
        later.quarantined,
        "the same bytes uploaded later arrive quarantined"
    );
    assert_eq!(later.quarantined_by.as_deref(), Some("@admin:x"));

    let log = s.quarantine_log(0, 100).await.unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(log.iter().all(|c| c.quarantined));
    assert_eq!(log[3].key, key("e"));
    assert_eq!(s.quarantine_log_head().await.unwrap(), log[3].seq);
    assert_eq!(
        s.quarantine_log(log[1].seq, 100).await.unwrap(),
        log[2..].to_vec()
    );

    assert_eq!(
        s.quarantine(&[key("b")], &QuarantineChange::Release)
            .await
            .unwrap(),
        4
    );
    for k in [key("a"), key("b"), key("e"), remote] {
        let r = stored(s, &k).await;
        assert!(!r.quarantined && r.quarantined_by.is_none(), "{k}");
    }
    assert_eq!(
        s.quarantined_content(&Sha256Digest([1; 32])).await.unwrap(),
        None
    );
    commit(s, &key("f"), &record(1)).await;
    assert!(!stored(s, &key("f")).await.quarantined);
    let log = s.quarantine_log(0, 100).await.unwrap();
    assert_eq!(log.len(), 8);
    assert!(log[4..].iter().all(|c| !c.quarantined));
    assert_eq!(s.quarantine_log(0, 3).await.unwrap().len(), 3);
}

fn upload(user: &str, sha: u8, created: u64, size: u64, name: Option<&str>) -> MediaRecord {
    MediaRecord {
        uploader: Some(user.into()),
        created: UnixMillis(created),
        size,
        upload_name: name.map(Into::into),
        ..record(sha)
    }
}

fn ids(page: &[(MediaKey, MediaRecord)]) -> Vec<&str> {
    page.iter().map(|(k, _)| k.id.as_str()).collect()
}

fn page(order: MediaOrder, backwards: bool, from: u64, limit: u64) -> MediaPageQuery {
    MediaPageQuery {
        order,
        backwards,
        from,
        limit,
    }
}

/// A user's uploads page in every order, equal values by ascending id,
/// with the total; deleted media leaves the listing.
pub(super) async fn uploads_list_in_every_order(s: &dyn Store) {
    commit(s, &key("m1"), &upload("@a:x", 1, 30, 5, Some("b.png"))).await;
    commit(s, &key("m2"), &upload("@a:x", 2, 10, 9, None)).await;
    commit(s, &key("m4"), &upload("@a:x", 3, 20, 1, Some("a.png"))).await;
    commit(s, &key("m3"), &upload("@a:x", 4, 20, 5, Some("c.png"))).await;
    commit(s, &key("o1"), &upload("@other:x", 5, 15, 100, None)).await;
    let a = |q| async move { s.uploads("@a:x", &q).await.unwrap() };

    let all = a(page(MediaOrder::CreatedTs, false, 0, 10)).await;
    assert_eq!(all.total, 4);
    assert_eq!(ids(&all.media), ["m2", "m3", "m4", "m1"]);
    let newest = a(page(MediaOrder::CreatedTs, true, 0, 10)).await;
    assert_eq!(
        ids(&newest.media),
        ["m1", "m3", "m4", "m2"],
        "equal times by ascending id"
    );
    assert_eq!(
        ids(&a(page(MediaOrder::CreatedTs, true, 1, 2)).await.media),
        ["m3", "m4"]
    );
    assert_eq!(
        ids(&a(page(MediaOrder::CreatedTs, true, 2, 1)).await.media),
        ["m4"]
    );
    assert!(
        a(page(MediaOrder::CreatedTs, false, 9, 10))
            .await
            .media
            .is_empty()
    );
    assert!(
        a(page(MediaOrder::CreatedTs, false, 0, 0))
            .await
            .media
            .is_empty()
    );
    assert_eq!(
        ids(&a(page(MediaOrder::MediaLength, false, 0, 10)).await.media),
        ["m4", "m1", "m3", "m2"]
    );
    assert_eq!(
        ids(&a(page(MediaOrder::MediaLength, true, 0, 2)).await.media),
        ["m2", "m1"]
    );
    assert_eq!(
        ids(&a(page(MediaOrder::UploadName, false, 0, 10)).await.media),
        ["m4", "m1", "m3", "m2"],
        "no name last"
    );
    assert_eq!(
        ids(&a(page(MediaOrder::MediaId, true, 1, 2)).await.media),
        ["m3", "m2"]
    );
    assert_eq!(
        s.uploads("@nobody:x", &page(MediaOrder::CreatedTs, false, 0, 10))
            .await
            .unwrap()
            .total,
        0
    );

    s.delete(&key("m3"), true).await.unwrap();
    let after = a(page(MediaOrder::CreatedTs, false, 0, 10)).await;
    assert_eq!(
        (after.total, ids(&after.media)),
        (3, vec!["m2", "m4", "m1"])
    );
}

/// Bulk scans page through complete media only; usage sums local uploads
/// per user within a creation window.
pub(super) async fn bulk_scans_and_usage(s: &dyn Store) {
    commit(s, &key("k1"), &upload("@a:x", 1, 10, 5, None)).await;
    commit(s, &key("k2"), &upload("@a:x", 2, 20, 7, None)).await;
    commit(s, &key("k3"), &upload("@b:x", 3, 30, 11, None)).await;
    let mut cached = record(4);
    cached.origin = Origin::Remote;
    cached.uploader = Some("@remote:elsewhere".into());
    commit(s, &MediaKey::parse("elsewhere", "r1").unwrap(), &cached).await;
    s.reserve(&key("k0"), &pending("@a:x", 0, u64::MAX), 5, None)
        .await
        .unwrap();
    s.delete(&key("k2"), true).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let batch = s.media_after(after.as_ref(), 1).await.unwrap();
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        seen.extend(batch.into_iter().map(|(k, _)| k.to_string()));
    }
    seen.sort();
    assert_eq!(seen, ["mxc://elsewhere/r1", "mxc://x/k1", "mxc://x/k3"]);

    let usage = s.usage(None, None).await.unwrap();
    let summary: Vec<_> = usage
        .iter()
        .map(|u| (u.user.as_str(), u.count, u.bytes))
        .collect();
    assert_eq!(
        summary,
        [("@a:x", 1, 5), ("@b:x", 1, 11)],
        "local media only, deletions gone"
    );
    let windowed = s
        .usage(Some(UnixMillis(11)), Some(UnixMillis(31)))
        .await
        .unwrap();
    assert_eq!(windowed.len(), 1);
    assert_eq!(windowed[0].user, "@b:x");
    assert!(
        s.usage(Some(UnixMillis(31)), None)
            .await
            .unwrap()
            .is_empty()
    );
}
