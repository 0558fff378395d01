//! The memory tier: the hottest small blobs (avatars, thumbnails, stickers)
//! kept as bytes, by content digest, so serving them reads no file and takes
//! no trip to the blocking pool. Bounded in bytes; admission and eviction
//! are moka's W-TinyLFU, so a scan of one-off files cannot push out what
//! every client asks for. Like the disk cache, it is asked only after the
//! metadata checks (auth, quarantine, freeze) passed, and an entry can never
//! be stale: the bytes of a digest never change.

use std::ops::Range;

use bytes::Bytes;

use crate::ids::Sha256Digest;

#[derive(Clone)]
pub struct MemoryTier {
    blobs: moka::sync::Cache<Sha256Digest, Bytes>,
    max_blob: u64,
}

impl MemoryTier {
    /// At most `max_bytes` in all, blobs of at most `max_blob` bytes.
    pub fn new(max_bytes: u64, max_blob: u64) -> Self {
        Self {
            blobs: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .build(),
            max_blob,
        }
    }

    /// Whether a blob of `size` bytes is small enough to be kept here.
    pub fn takes(&self, size: u64) -> bool {
        size <= self.max_blob
    }

    /// The blob's bytes, or `range` of them, if they are here.
    pub fn get(&self, digest: &Sha256Digest, range: Option<Range<u64>>) -> Option<Bytes> {
        Some(slice(self.blobs.get(digest)?, range))
    }

    /// Offers a blob read whole; kept if it is small and popular enough.
    pub fn offer(&self, digest: Sha256Digest, bytes: Bytes) {
        if self.takes(bytes.len() as u64) {
            self.blobs.insert(digest, bytes);
        }
    }

    /// Bytes held now (after pending maintenance).
    pub fn weight(&self) -> u64 {
        self.blobs.run_pending_tasks();
        self.blobs.weighted_size()
    }
}

/// `range` of `bytes` (all of them without one), cut at their end.
pub fn slice(bytes: Bytes, range: Option<Range<u64>>) -> Bytes {
    let Some(range) = range else {
        return bytes;
    };
    let at = |offset: u64| {
        usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len())
    };
    let (start, end) = (at(range.start), at(range.end));
    bytes.slice(start.min(end)..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_blob_size() {
        let tier = MemoryTier::new(64 * 1024, 4096);
        assert!(tier.takes(4096) && !tier.takes(4097));
        tier.offer(Sha256Digest([9; 32]), Bytes::from(vec![1u8; 5000]));
        assert!(tier.get(&Sha256Digest([9; 32]), None).is_none());
        for i in 0..200u8 {
            tier.offer(Sha256Digest([i; 32]), Bytes::from(vec![i; 4096]));
        }
        assert!(tier.weight() <= 64 * 1024, "{}", tier.weight());
    }

    #[test]
    fn ranges_are_slices() {
        let tier = MemoryTier::new(1 << 20, 1 << 16);
        let digest = Sha256Digest([1; 32]);
        tier.offer(digest, Bytes::from_static(b"0123456789"));
        assert_eq!(tier.get(&digest, Some(2..5)).unwrap().as_ref(), b"234");
        assert_eq!(tier.get(&digest, None).unwrap().as_ref(), b"0123456789");
    }
}
