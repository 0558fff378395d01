use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::*;

fn digest(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(bytes).into())
}

fn once(bytes: Vec<u8>) -> ByteStream {
    futures::stream::iter([Ok(Bytes::from(bytes))]).boxed()
}

/// Reads a blob through the cache the way a download does: a hit streams
/// from disk, a miss streams from "the store" and fills on the way.
async fn read(cache: &HotCache, bytes: &[u8]) -> Vec<u8> {
    let d = digest(bytes);
    let stream = match cache.open(&d, None).await {
        Some(hit) => hit,
        None => cache.tee_download(once(bytes.to_vec()), d, bytes.len() as u64),
    };
    let out: Vec<Bytes> = stream.try_collect().await.unwrap();
    out.concat()
}

async fn settle(cache: &HotCache, digest: &Sha256Digest, want: bool) {
    for _ in 0..200 {
        cache.inner.index.run_pending_tasks();
        if cache.contains(digest) == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Popularity beats a scan: a small, often-read file stays cached while many
/// one-off larger files pass through, and the size bound always holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_hot_files_survive_a_scan_of_cold_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = HotCache::create(dir.path(), 1024 * 1024, 512 * 1024).unwrap();
    // A warm cache: popularity is only counted once the cache is half full
    // (before that nothing is evicted anyway).
    for i in 100..103u8 {
        read(&cache, &vec![i; 200 * 1024]).await;
        settle(&cache, &digest(&vec![i; 200 * 1024]), true).await;
    }
    let hot = vec![7u8; 10 * 1024];
    let hot_digest = digest(&hot);
    read(&cache, &hot).await;
    settle(&cache, &hot_digest, true).await;
    for _ in 0..20 {
        assert_eq!(read(&cache, &hot).await, hot);
    }
    for i in 0..40u8 {
        let cold = vec![i; 200 * 1024];
        assert_eq!(read(&cache, &cold).await, cold);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            cache.weighted_size() <= 1024 * 1024,
            "size bound exceeded: {}",
            cache.weighted_size()
        );
    }
    // 40 x 200 KiB through a 1 MiB cache, the hot file untouched meanwhile:
    // LRU or FIFO would have evicted it after five of them.
    assert!(
        cache.contains(&hot_digest),
        "the hot file was evicted by a scan"
    );
    // Fills finish in the background: measure once the last one is done
    // (a fill in flight holds at most one file of `max_file_size` more).
    for _ in 0..500 {
        if lock(&cache.inner.filling).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cache.inner.index.run_pending_tasks();
    let on_disk: u64 = walk_sizes(dir.path());
    assert!(
        on_disk <= 1024 * 1024 + 64 * 1024,
        "files on disk exceed the bound: {on_disk}"
    );
    assert!(cache.stats().hits >= 20);
    assert_eq!(read(&cache, &hot).await, hot);
}

fn walk_sizes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk_sizes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Files over the per-file limit are never cached; short fills are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_incomplete_fills_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cache = HotCache::create(dir.path(), 1024 * 1024, 100).unwrap();
    let big = vec![1u8; 101];
    read(&cache, &big).await;
    let small = vec![2u8; 50];
    // The store yields fewer bytes than the record says: not a valid copy.
    let d = digest(&small);
    let s: Vec<Bytes> = cache
        .tee_download(once(small[..40].to_vec()), d, 50)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(s.concat().len(), 40);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!cache.contains(&digest(&big)));
    assert!(!cache.contains(&d));
    assert_eq!(walk_sizes(dir.path()), 0, "no partial files are left");
}

/// Entries survive a restart; partial fills left by a crash are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![9u8; 4096];
    {
        let cache = HotCache::create(dir.path(), 1024 * 1024, 1024 * 1024).unwrap();
        read(&cache, &data).await;
        settle(&cache, &digest(&data), true).await;
    }
    std::fs::write(dir.path().join(".fill-deadbeef"), b"partial").unwrap();
    let cache = HotCache::create(dir.path(), 1024 * 1024, 1024 * 1024).unwrap();
    assert!(cache.contains(&digest(&data)));
    let hit: Vec<Bytes> = cache
        .open(&digest(&data), Some(10..20))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(hit.concat(), data[10..20].to_vec());
    assert!(!dir.path().join(".fill-deadbeef").exists());
}

/// Wiping the directory while running costs misses, never errors, and the
/// cache fills again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_directory_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = HotCache::create(&cache_dir, 1024 * 1024, 1024 * 1024).unwrap();
    let data = vec![5u8; 3000];
    let d = digest(&data);
    read(&cache, &data).await;
    settle(&cache, &d, true).await;
    std::fs::remove_dir_all(&cache_dir).unwrap();
    assert!(cache.open(&d, None).await.is_none());
    assert!(!cache.contains(&d));
    assert_eq!(read(&cache, &data).await, data);
    settle(&cache, &d, true).await;
    assert!(cache.contains(&d));
    let again: Vec<Bytes> = cache
        .open(&d, None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(again.concat(), data);
}
