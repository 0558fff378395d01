//! Last access, without a write per download: a served item's access is
//! noted in memory only when its stored time is older than the granularity,
//! and the notes are written as one batch every flush interval (and at
//! shutdown). A crash loses at most one interval of notes; retention then
//! counts from an older time, never a newer one.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::{
    MediaError, MediaService,
    ports::{Accesses, ThumbSize},
};
use crate::ids::{MediaKey, UnixMillis};

/// Notes held at most before a batch is written early.
const MAX_NOTES: usize = 50_000;

#[derive(Default)]
struct Notes {
    media: HashMap<MediaKey, UnixMillis>,
    thumbnails: HashMap<(MediaKey, ThumbSize), UnixMillis>,
}

pub(super) struct AccessLog {
    granularity: u64,
    notes: Mutex<Notes>,
}

impl AccessLog {
    pub(super) fn new(granularity: Duration) -> Self {
        Self {
            granularity: u64::try_from(granularity.as_millis()).unwrap_or(u64::MAX),
            notes: Mutex::new(Notes::default()),
        }
    }

    /// Whether an item last recorded at `stored` (or created at `created`)
    /// needs a new note at `now`.
    fn stale(&self, stored: Option<UnixMillis>, created: UnixMillis, now: UnixMillis) -> bool {
        let last = stored.unwrap_or(created).max(created);
        now.0.saturating_sub(last.0) >= self.granularity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes every note, leaving none.
    fn take(&self) -> Accesses {
        let notes = std::mem::take(&mut *self.lock());
        Accesses {
            media: notes.media.into_iter().collect(),
            thumbnails: notes
                .thumbnails
                .into_iter()
                .map(|((key, size), at)| (key, size, at))
                .collect(),
        }
    }
}

impl MediaService {
    /// Notes that media was served (see the module's rules).
    pub(super) fn note_media_access(
        &self,
        key: &MediaKey,
        stored: Option<UnixMillis>,
        created: UnixMillis,
    ) {
        self.note(stored, created, |notes, now| {
            notes.media.insert(key.clone(), now);
            notes.media.len()
        });
    }

    /// Notes that a stored thumbnail was served.
    pub(super) fn note_thumbnail_access(
        &self,
        key: &MediaKey,
        size: ThumbSize,
        stored: Option<UnixMillis>,
        created: UnixMillis,
    ) {
        self.note(stored, created, |notes, now| {
            notes.thumbnails.insert((key.clone(), size), now);
            notes.thumbnails.len()
        });
    }

    /// Adds a note with `add` (which says how many notes of its kind there
    /// are) when the stored time is stale; a full log is written early.
    fn note(
        &self,
        stored: Option<UnixMillis>,
        created: UnixMillis,
        add: impl FnOnce(&mut Notes, UnixMillis) -> usize,
    ) {
        let log = &self.inner.accesses;
        let now = UnixMillis::now();
        if log.stale(stored, created, now) && add(&mut log.lock(), now) >= MAX_NOTES {
            self.flush_soon();
        }
    }

    fn flush_soon(&self) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(error) = service.flush_accesses().await {
                tracing::warn!(%error, "recording access times failed");
            }
        });
    }

    /// Writes the noted access times as one batch.
    pub async fn flush_accesses(&self) -> Result<(), MediaError> {
        let batch = self.inner.accesses.take();
        if !batch.is_empty() {
            self.inner.meta.catalog.touch(&batch).await?;
        }
        Ok(())
    }
}
