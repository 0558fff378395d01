//! Group commit: concurrent callers share one flush of the engine (one
//! fsync) instead of queueing one each.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicU64, Ordering::SeqCst},
};

use crate::media::ports::RepoError;

#[derive(Default)]
pub struct GroupFlush {
    /// Tickets handed out; a caller takes one after its own writes.
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    flushed: AtomicU64,
    /// One engine flush at a time.
    running: Mutex<()>,
}

impl GroupFlush {
    /// Makes every write this thread has finished durable; callers that
    /// arrive while a flush runs are covered by the next one, together.
    pub fn flush(&self, flush: impl FnOnce() -> Result<(), RepoError>) -> Result<(), RepoError> {
        let ticket = self.requested.fetch_add(1, SeqCst) + 1;
        let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if self.flushed.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket taken so far belongs to writes already made, so
        // this flush covers them all.
        let covered = self.requested.load(SeqCst);
        flush()?;
        self.flushed.fetch_max(covered, SeqCst);
        Ok(())
    }
}
