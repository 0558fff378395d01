//! Durability shared by concurrent writes to a local datastore: instead of
//! an fsync of every file and of its directory (two journal commits per
//! upload), writers that finish together share one `syncfs` of the
//! datastore's filesystem, which makes every file written and renamed
//! before it durable. A writer is acknowledged only once a `syncfs` that
//! started after its write finished has returned, so an acknowledged upload
//! is as durable as with its own fsyncs (and a failed `syncfs` fails every
//! writer that waited on it). The same group commit sled's flush does for
//! metadata.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

#[derive(Clone)]
pub struct GroupSync {
    inner: Arc<Inner>,
}

struct Inner {
    /// A directory on the datastore's filesystem.
    root: PathBuf,
    /// Writes finished so far (each takes the next number).
    written: AtomicU64,
    /// Every write up to this number is durable.
    synced: AtomicU64,
    /// One `syncfs` at a time; the next one covers everyone who waited.
    flusher: tokio::sync::Mutex<()>,
}

impl GroupSync {
    pub fn new(root: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                written: AtomicU64::new(0),
                synced: AtomicU64::new(0),
                flusher: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Returns once everything written before the call is durable.
    pub async fn sync(&self) -> std::io::Result<()> {
        let inner = &self.inner;
        let mine = inner.written.fetch_add(1, Ordering::AcqRel) + 1;
        let _flusher = inner.flusher.lock().await;
        if inner.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        // Everyone who finished writing by now rides on this one.
        let upto = inner.written.load(Ordering::Acquire);
        let root = inner.root.clone();
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(root)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
        })
        .await
        .map_err(std::io::Error::other)??;
        inner.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many writers at once share few `syncfs` calls, and every one of
    /// them returns only after one that started after its call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(dir.path().to_owned());
        let writers = (0..64).map(|i| {
            let sync = sync.clone();
            let path = dir.path().join(format!("{i}"));
            async move {
                tokio::fs::write(&path, b"bytes").await.unwrap();
                sync.sync().await.unwrap();
            }
        });
        futures::future::join_all(writers).await;
        assert_eq!(sync.inner.synced.load(Ordering::Acquire), 64);
    }
}
