//! `mxmedia stats`: what is stored, by kind and by datastore, and how the
//! hot cache is doing. Counted by walking the records a page at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MediaError, MediaService, records::Origin};
use crate::ids::{MediaKey, Sha256Digest};

const PAGE: usize = 1000;

/// A count of items and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// The hot cache's size and hit rate since the server started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheView {
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Hits over all reads; none before the first read.
    pub hit_rate: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Media uploaded here (sizes as uploaded: copies of the same bytes count each time).
    pub local_media: Tally,
    /// Cached copies of other servers' media.
    pub remote_media: Tally,
    pub thumbnails: Tally,
    /// Async uploads reserved and not yet uploaded.
    pub pending_uploads: u64,
    /// Objects (one per distinct content) and their bytes, by datastore.
    pub datastores: BTreeMap<String, Tally>,
    /// Absent when no datastore uses the hot cache.
    pub cache: Option<CacheView>,
}

impl MediaService {
    /// Counts every record; the cache's hit rate is this process's.
    pub async fn stats(&self) -> Result<Stats, MediaError> {
        let meta = &self.inner.meta;
        let mut stats = Stats {
            pending_uploads: meta.housekeeping.pending_count().await?,
            ..Stats::default()
        };
        let mut after: Option<MediaKey> = None;
        loop {
            let page = meta.catalog.media_after(after.as_ref(), PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, record) in &page {
                match record.origin {
                    Origin::Local => stats.local_media.add(record.size),
                    Origin::Remote => stats.remote_media.add(record.size),
                }
            }
        }
        let mut after = None;
        loop {
            let page = meta.catalog.thumbnails_after(after.as_ref(), PAGE).await?;
            let Some((key, size, _)) = page.last() else {
                break;
            };
            after = Some((key.clone(), *size));
            for (_, _, record) in &page {
                stats.thumbnails.add(record.size);
            }
        }
        stats.datastores = self.datastore_tallies().await?;
        stats.cache = self.inner.cache.as_ref().map(|cache| {
            let seen = cache.stats();
            let reads = seen.hits + seen.misses;
            CacheView {
                bytes: cache.weighted_size(),
                max_bytes: cache.max_size(),
                hits: seen.hits,
                misses: seen.misses,
                #[allow(clippy::cast_precision_loss)]
                hit_rate: (reads > 0).then(|| seen.hits as f64 / reads as f64),
            }
        });
        Ok(stats)
    }

    /// Objects and bytes recorded per datastore (every configured one,
    /// also when empty).
    pub async fn datastore_tallies(&self) -> Result<BTreeMap<String, Tally>, MediaError> {
        let mut tallies: BTreeMap<String, Tally> = self
            .inner
            .stores
            .iter()
            .map(|store| (store.id().0.clone(), Tally::default()))
            .collect();
        let mut after: Option<Sha256Digest> = None;
        loop {
            let page = self
                .inner
                .meta
                .blobs
                .blobs_after(after.as_ref(), PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (_, blob) in &page {
                tallies
                    .entry(blob.datastore.0.clone())
                    .or_default()
                    .add(blob.size);
            }
        }
        Ok(tallies)
    }

    /// Samples what each datastore holds into the metrics.
    pub async fn sample_datastores(&self) -> Result<(), MediaError> {
        for (datastore, tally) in self.datastore_tallies().await? {
            self.inner
                .metrics
                .ops()
                .datastore_sample(&datastore, tally.count, tally.bytes);
        }
        Ok(())
    }

    /// The hot cache's bytes and bound, when there is one (for metrics).
    pub fn cache_size(&self) -> Option<(u64, u64)> {
        self.inner
            .cache
            .as_ref()
            .map(|cache| (cache.weighted_size(), cache.max_size()))
    }
}
