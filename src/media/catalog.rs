//! The records of the admin's view of the metadata: quarantine decisions
//! over identical content, the quarantine change log, a user's media in
//! Synapse's orders, and usage per uploader. Adapters answer them; the
//! orders are defined here once, so every adapter sorts alike.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::records::MediaRecord;
use crate::ids::{MediaKey, UnixMillis};

/// A quarantine decision about some media and everything stored with the
/// same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuarantineChange {
    /// Quarantine, on behalf of `by` (a Matrix user id).
    Quarantine { by: String },
    /// Release from quarantine.
    Release,
}

/// Media content that is quarantined whatever it is uploaded as: media
/// committed later with these bytes arrives quarantined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedContent {
    pub by: String,
    pub at: UnixMillis,
}

/// One entry of the quarantine change log, in the order changes happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineEvent {
    /// Position in the log; starts at 1 and only grows.
    pub seq: u64,
    pub key: MediaKey,
    pub quarantined: bool,
}

/// The orders of a user's media listing (Synapse's `order_by` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaOrder {
    MediaId,
    UploadName,
    CreatedTs,
    LastAccessTs,
    MediaLength,
    MediaType,
    QuarantinedBy,
    SafeFromQuarantine,
}

impl MediaOrder {
    /// The order named `name` as the admin API spells it.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "media_id" => Self::MediaId,
            "upload_name" => Self::UploadName,
            "created_ts" => Self::CreatedTs,
            "last_access_ts" => Self::LastAccessTs,
            "media_length" => Self::MediaLength,
            "media_type" => Self::MediaType,
            "quarantined_by" => Self::QuarantinedBy,
            "safe_from_quarantine" => Self::SafeFromQuarantine,
            _ => return None,
        })
    }

    /// Compares two listed items: by this order's field (reversed when
    /// `backwards`; absent values after present ones going forwards), then
    /// always by ascending media id, so pages are stable.
    pub fn compare(
        self,
        backwards: bool,
        a: &(MediaKey, MediaRecord),
        b: &(MediaKey, MediaRecord),
    ) -> Ordering {
        fn nulls_last<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
            match (a, b) {
                (Some(a), Some(b)) => a.cmp(&b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
        let (ra, rb) = (&a.1, &b.1);
        let primary = match self {
            Self::MediaId => Ordering::Equal,
            Self::UploadName => nulls_last(ra.upload_name.as_ref(), rb.upload_name.as_ref()),
            Self::CreatedTs => ra.created.cmp(&rb.created),
            Self::LastAccessTs => nulls_last(ra.last_access, rb.last_access),
            Self::MediaLength => ra.size.cmp(&rb.size),
            Self::MediaType => ra.content_type.cmp(&rb.content_type),
            Self::QuarantinedBy => nulls_last(
                ra.quarantined_by.as_ref().filter(|_| ra.quarantined),
                rb.quarantined_by.as_ref().filter(|_| rb.quarantined),
            ),
            Self::SafeFromQuarantine => ra.protected.cmp(&rb.protected),
        };
        let primary = if backwards {
            primary.reverse()
        } else {
            primary
        };
        let by_id = a.0.id.as_str().cmp(b.0.id.as_str());
        let by_id = if backwards && self == Self::MediaId {
            by_id.reverse()
        } else {
            by_id
        };
        primary.then(by_id)
    }
}

/// One page of a user's media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaPageQuery {
    pub order: MediaOrder,
    pub backwards: bool,
    /// Items skipped (Synapse's `from` offset).
    pub from: u64,
    pub limit: u64,
}

/// A page of a user's media and how many they have in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPage {
    pub media: Vec<(MediaKey, MediaRecord)>,
    pub total: u64,
}

/// Access times to record: media and thumbnails last served at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accesses {
    pub media: Vec<(MediaKey, UnixMillis)>,
    pub thumbnails: Vec<(MediaKey, super::records::ThumbSize, UnixMillis)>,
}

impl Accesses {
    pub fn is_empty(&self) -> bool {
        self.media.is_empty() && self.thumbnails.is_empty()
    }
}

/// How much local media one user uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub user: String,
    pub count: u64,
    pub bytes: u64,
}

/// Keeps the first `keep` items of a stream in `order` while holding at
/// most twice that many: for listings an adapter cannot sort natively.
pub struct TopK<T, F> {
    keep: usize,
    items: Vec<T>,
    order: F,
}

impl<T, F: FnMut(&T, &T) -> Ordering> TopK<T, F> {
    pub fn new(keep: usize, order: F) -> Self {
        Self {
            keep,
            items: Vec::new(),
            order,
        }
    }

    pub fn push(&mut self, item: T) {
        self.items.push(item);
        if self.items.len() >= self.keep.saturating_mul(2).max(64) {
            self.settle();
        }
    }

    fn settle(&mut self) {
        self.items.sort_by(&mut self.order);
        self.items.truncate(self.keep);
    }

    /// The first `keep` items, in order.
    pub fn finish(mut self) -> Vec<T> {
        self.settle();
        self.items
    }
}
