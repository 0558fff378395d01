//! The PostgreSQL adapter on a real PostgreSQL started for this test
//! binary: the metadata contract, migrations, and what instances share.

use std::sync::Arc;

use super::*;

/// The metadata contract, each case on a fresh database of a real
/// PostgreSQL started for this test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_the_metadata_contract() {
    crate::repo::contract::run(|| async {
        let url = cluster::Postgres::get().database("contract").await;
        let repo = PgRepo::open(&url, 16).await.unwrap();
        ((), Arc::new(repo))
    })
    .await;
}

#[tokio::test]
async fn migrations_apply_once_and_concurrently() {
    let url = cluster::Postgres::get().database("migrate").await;
    let opened = futures::future::join_all((0..4).map(|_| PgRepo::open(&url, 2))).await;
    for repo in opened {
        assert_eq!(
            repo.unwrap().schema_version().await.unwrap(),
            schema::LATEST
        );
    }
}

/// Two instances on one database.
async fn two(prefix: &str) -> (PgRepo, PgRepo) {
    let url = cluster::Postgres::get().database(prefix).await;
    (
        PgRepo::open(&url, 4).await.unwrap(),
        PgRepo::open(&url, 4).await.unwrap(),
    )
}

/// Waits (bounded) until `check` holds; the withdrawal of an announcement
/// runs in a task of its own.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..500 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// A write one instance announces is not an orphan for any other, until it
/// is withdrawn or its instance stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_writes_are_shared_until_withdrawn_or_their_instance_stops() {
    use crate::media::ports::{BlobIndex, Housekeeping};
    let (a, b) = two("writes").await;
    let store = DatastoreId("local".to_owned());
    let (k1, k2, k3) = (BlobKey::random(), BlobKey::random(), BlobKey::random());
    let all = vec![k1.clone(), k2.clone(), k3.clone()];

    let first = a.writing(&store, &k1).await.unwrap();
    let second = a.writing(&store, &k2).await.unwrap();
    assert_eq!(
        b.unknown_keys(&store, all.clone()).await.unwrap(),
        vec![k3.clone()]
    );
    let mut busy = b.being_written(&store, all.clone()).await.unwrap();
    busy.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut expected = vec![k1.clone(), k2.clone()];
    expected.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(busy, expected);
    // Another datastore's keys are another matter.
    let other = DatastoreId("s3".to_owned());
    assert_eq!(b.unknown_keys(&other, all.clone()).await.unwrap().len(), 3);

    drop(first);
    assert!(
        eventually(|| async {
            b.unknown_keys(&store, all.clone()).await.unwrap() == vec![k1.clone(), k3.clone()]
        })
        .await
    );
    // A sweep on B keeps the announcements of A while A runs...
    b.expire_pending(UnixMillis::now(), 10).await.unwrap();
    assert_eq!(
        b.being_written(&store, all.clone()).await.unwrap(),
        vec![k2.clone()]
    );
    // ...and forgets them once A stopped without withdrawing them.
    std::mem::forget(second);
    a.close().await.unwrap();
    b.expire_pending(UnixMillis::now(), 10).await.unwrap();
    assert!(
        b.being_written(&store, all.clone())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.unknown_keys(&store, all).await.unwrap().len(), 3);
}

/// Rate buckets are one per name for every instance: the burst is spent
/// once, whichever instance spends it, and refills by the database's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_buckets_are_shared_by_every_instance() {
    use crate::media::ports::{Housekeeping, Token};
    let (a, b) = two("rates").await;
    let rate = (0.001, 3);
    let mut granted = 0;
    let mut waits = Vec::new();
    for i in 0..8 {
        let instance = if i % 2 == 0 { &a } else { &b };
        match instance
            .spend_token("uploads/user/@u:x", rate)
            .await
            .unwrap()
        {
            Token::Granted => granted += 1,
            Token::Wait(wait) => waits.push(wait),
            Token::Unshared => panic!("PostgreSQL shares its buckets"),
        }
    }
    assert_eq!((granted, waits.len()), (3, 5));
    // One token per 1,000 s: the wait is most of that.
    assert!(
        waits
            .iter()
            .all(|w| w.as_secs() > 900 && w.as_secs() <= 1000),
        "{waits:?}"
    );
    // Another bucket is untouched.
    assert_eq!(
        b.spend_token("uploads/user/@v:x", rate).await.unwrap(),
        Token::Granted
    );

    // Concurrent spenders never take more than the burst.
    let spends = (0..40).map(|i| {
        let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            instance
                .spend_token("downloads/address/10.0.0.1", (0.001, 10))
                .await
                .unwrap()
        }
    });
    let outcomes = futures::future::join_all(spends).await;
    let granted = outcomes.iter().filter(|t| **t == Token::Granted).count();
    assert_eq!(granted, 10);

    // A bucket that refills fast serves again after a pause.
    assert_eq!(
        a.spend_token("fast", (50.0, 1)).await.unwrap(),
        Token::Granted
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        b.spend_token("fast", (50.0, 1)).await.unwrap(),
        Token::Granted
    );
}

/// An instance whose lock connection is lost (the database restarted, an
/// admin ended it) takes its lock again, so its announced writes count as
/// live once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_rejoins_after_losing_its_lock() {
    let (a, b) = two("rejoin").await;
    let held = |repo: &PgRepo| {
        let (pool, id) = (repo.pool.clone(), repo.instance.id);
        async move {
            let held: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                    AND classid = 4245 AND objid::BIGINT = $1 AND objsubid = 2 AND granted)",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            held
        }
    };
    assert!(held(&a).await);
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'
            AND classid = 4245 AND objid::BIGINT = $1 AND objsubid = 2",
    )
    .bind(a.instance.id)
    .execute(&b.pool)
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let now = held(&a).await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if seen == [true, false, true] || seen == [false, true] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Lost (perhaps before the first look), then held again.
    assert!(seen.ends_with(&[false, true]), "{seen:?}");
}
