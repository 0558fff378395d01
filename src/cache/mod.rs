//! Bounded local disk cache of hot blobs from remote (object-store)
//! datastores. Files are named by SHA-256, so an entry can never be stale.
//! Admission and eviction are moka's W-TinyLFU (frequency sketch + recency),
//! weighed by size: small, often-read files stay while a scan of one-off big
//! files passes through. The index is rebuilt from the directory at start,
//! and a file that vanished (directory wiped) is simply a miss. This module
//! is only ever asked after the metadata checks passed; it knows nothing of
//! quarantine or auth.

use std::{
    collections::HashSet,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures::StreamExt;
use moka::notification::RemovalCause;
use tokio::{io::AsyncWriteExt, sync::mpsc};

use crate::{
    ids::Sha256Digest,
    storage::{ByteStream, file_stream},
};

mod memory;

pub use memory::{MemoryTier, slice};

/// Chunks queued for the writer of one fill; past this the fill is dropped
/// rather than slowing the client it tees from.
const FILL_QUEUE: usize = 64;

/// Hits, misses and fills since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub fills: u64,
}

#[derive(Clone)]
pub struct HotCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_file_size: u64,
    /// digest -> size in bytes.
    index: moka::sync::Cache<Sha256Digest, u64>,
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    /// Blobs being copied in from a download right now: concurrent misses
    /// of one blob make one copy, not one each.
    filling: std::sync::Mutex<HashSet<Sha256Digest>>,
}

/// Weight of an entry in KiB, so a u32 weight covers files up to 4 TiB.
fn weight(size: u64) -> u32 {
    u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

fn path_for(dir: &Path, digest: &Sha256Digest) -> PathBuf {
    let hex = digest.to_hex();
    dir.join(&hex[..2]).join(&hex[2..4]).join(hex)
}

impl HotCache {
    /// Opens the cache in `dir` (created if missing), bounded by `max_size`
    /// bytes; files larger than `max_file_size` are never cached. Entries
    /// already on disk are taken back, oldest first.
    pub fn create(dir: &Path, max_size: u64, max_file_size: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let evict_dir = dir.to_owned();
        let index = moka::sync::Cache::builder()
            .max_capacity(max_size / 1024)
            .weigher(|_: &Sha256Digest, size: &u64| weight(*size))
            .eviction_listener(move |digest: Arc<Sha256Digest>, _size, cause| {
                // `Replaced` keeps the same file; every other cause frees it.
                if cause != RemovalCause::Replaced {
                    let _ = std::fs::remove_file(path_for(&evict_dir, &digest));
                }
            })
            .build();
        let cache = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                max_file_size,
                index,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                fills: AtomicU64::new(0),
                filling: std::sync::Mutex::new(HashSet::new()),
            }),
        };
        cache.reload()?;
        Ok(cache)
    }

    /// Rebuilds the index from the directory; leftover partial fills go.
    fn reload(&self) -> std::io::Result<()> {
        let mut found = Vec::new();
        let mut stack = vec![self.inner.dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let path = entry.path();
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                match Sha256Digest::try_from(name) {
                    Ok(digest) if path == path_for(&self.inner.dir, &digest) => {
                        found.push((meta.modified().ok(), digest, meta.len()));
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(modified, _, _)| *modified);
        for (_, digest, size) in found {
            self.inner.index.insert(digest, size);
        }
        self.inner.index.run_pending_tasks();
        Ok(())
    }

    /// Drops the copy of `digest`, if any (its blob was deleted): the
    /// index entry now, the file with it (the eviction listener).
    pub fn forget(&self, digest: &Sha256Digest) {
        self.inner.index.invalidate(digest);
        self.inner.index.run_pending_tasks();
    }

    /// The bound on the bytes the cache holds.
    pub fn max_size(&self) -> u64 {
        self.inner.index.policy().max_capacity().unwrap_or(0) * 1024
    }

    pub fn max_file_size(&self) -> u64 {
        self.inner.max_file_size
    }

    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.inner.index.contains_key(digest)
    }

    /// Bytes the cache holds (by its own accounting, in KiB steps).
    pub fn weighted_size(&self) -> u64 {
        self.inner.index.run_pending_tasks();
        self.inner.index.weighted_size() * 1024
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            fills: self.inner.fills.load(Ordering::Relaxed),
        }
    }

    /// Streams `range` (or all) of a cached blob, or `None` on a miss. A file
    /// that disappeared from disk is forgotten and counts as a miss.
    pub async fn open(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Option<ByteStream> {
        let Some(size) = self.inner.index.get(digest) else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let path = path_for(&self.inner.dir, digest);
        let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path)).await;
        if let Ok(Ok(file)) = opened {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            Some(file_stream(file, range.unwrap_or(0..size)))
        } else {
            self.inner.index.invalidate(digest);
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Starts filling the cache from bytes that are passing by anyway.
    pub fn fill(&self) -> Fill {
        self.fill_for(None)
    }

    /// A fill that, while it runs, stands for `digest` (see `filling`).
    fn fill_for(&self, digest: Option<Sha256Digest>) -> Fill {
        let (tx, rx) = mpsc::channel(FILL_QUEUE);
        let cache = self.clone();
        // An async task: a slow client's download holds no blocking thread
        // for its whole length, only for each short write.
        tokio::spawn(async move {
            cache.write_fill(rx).await;
            if let Some(digest) = digest {
                lock(&cache.inner.filling).remove(&digest);
            }
        });
        Fill { tx: Some(tx) }
    }

    /// Wraps `stream` so everything it yields is also written to the cache;
    /// when it ends after exactly `size` bytes, the entry is kept as `digest`.
    /// While another download of the same blob fills it, this one passes
    /// through untouched.
    pub fn tee_download(&self, stream: ByteStream, digest: Sha256Digest, size: u64) -> ByteStream {
        if !lock(&self.inner.filling).insert(digest) {
            return stream;
        }
        let fill = self.fill_for(Some(digest));
        let sender = fill.tx.clone();
        tee(stream, sender, Some((fill, digest, size)))
    }

    async fn write_fill(&self, mut rx: mpsc::Receiver<FillMsg>) {
        let tmp_name = format!(".fill-{:016x}", rand::random::<u64>());
        let tmp = self.inner.dir.join(tmp_name);
        let result: std::io::Result<Option<(Sha256Digest, u64)>> = async {
            tokio::fs::create_dir_all(&self.inner.dir).await?;
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut written = 0u64;
            while let Some(msg) = rx.recv().await {
                match msg {
                    FillMsg::Data(bytes) => {
                        written += bytes.len() as u64;
                        if written > self.inner.max_file_size {
                            return Ok(None);
                        }
                        file.write_all(&bytes).await?;
                    }
                    FillMsg::Finish(digest, size) => {
                        file.flush().await?;
                        return Ok((written == size).then_some((digest, size)));
                    }
                }
            }
            Ok(None)
        }
        .await;
        match result {
            Ok(Some((digest, size))) => {
                let dest = path_for(&self.inner.dir, &digest);
                let placed = match dest.parent() {
                    Some(parent) => tokio::fs::create_dir_all(parent).await,
                    None => Ok(()),
                };
                if placed.is_ok() && tokio::fs::rename(&tmp, &dest).await.is_ok() {
                    self.inner.fills.fetch_add(1, Ordering::Relaxed);
                    self.inner.index.insert(digest, size);
                    self.inner.index.run_pending_tasks();
                    return;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "cache fill failed"),
        }
        let _ = tokio::fs::remove_file(&tmp).await;
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum FillMsg {
    Data(Bytes),
    Finish(Sha256Digest, u64),
}

/// One cache fill in progress. Dropped without `finish`, it leaves nothing.
pub struct Fill {
    tx: Option<mpsc::Sender<FillMsg>>,
}

impl Fill {
    /// Copies everything `stream` yields into this fill.
    pub fn tee(&self, stream: ByteStream) -> ByteStream {
        tee(stream, self.tx.clone(), None)
    }

    /// Keeps what was written as `digest`, if it is exactly `size` bytes.
    pub fn finish(mut self, digest: Sha256Digest, size: u64) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send(FillMsg::Finish(digest, size));
        }
    }
}

/// Passes `stream` through unchanged while copying it to `sender`. With
/// `finish`, the fill completes as soon as the expected number of bytes has
/// passed: HTTP servers stop polling a body once `Content-Length` bytes are
/// out, so the end of the stream may never be seen. A full queue means the
/// disk is slower than the client: the copy stops rather than slow it down.
fn tee(
    stream: ByteStream,
    sender: Option<mpsc::Sender<FillMsg>>,
    finish: Option<(Fill, Sha256Digest, u64)>,
) -> ByteStream {
    struct Tee {
        stream: ByteStream,
        sender: Option<mpsc::Sender<FillMsg>>,
        finish: Option<(Fill, Sha256Digest, u64)>,
        seen: u64,
    }
    let state = Tee {
        stream,
        sender,
        finish,
        seen: 0,
    };
    futures::stream::unfold(state, |mut tee| async move {
        match tee.stream.next().await {
            Some(Ok(bytes)) => {
                if let Some(tx) = &tee.sender
                    && tx.try_send(FillMsg::Data(bytes.clone())).is_err()
                {
                    tee.sender = None;
                }
                tee.seen += bytes.len() as u64;
                if tee
                    .finish
                    .as_ref()
                    .is_some_and(|(_, _, size)| tee.seen >= *size)
                    && let Some((fill, digest, size)) = tee.finish.take()
                {
                    tee.sender = None;
                    fill.finish(digest, size);
                }
                Some((Ok(bytes), tee))
            }
            Some(Err(e)) => {
                tee.sender = None;
                tee.finish = None;
                Some((Err(e), tee))
            }
            None => {
                tee.sender = None;
                if let Some((fill, digest, size)) = tee.finish.take() {
                    fill.finish(digest, size);
                }
                None
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests;
