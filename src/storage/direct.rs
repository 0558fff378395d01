//! Direct uploads (MSC3870): a presigned PUT URL for one fresh object key,
//! which a client fills straight in the bucket; and the object read back
//! once, with the type the client gave it, to verify it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use object_store::{
    Attribute, GetOptions,
    signer::{Method, Signer},
};

use super::{BlobStore, ByteStream, Presigned, StorageError};
use crate::ids::BlobKey;

/// How a datastore signs upload URLs.
#[derive(Clone)]
pub struct DirectUploads {
    pub(super) signer: Arc<dyn Signer>,
    /// How long an upload URL works.
    pub(super) url_ttl: Duration,
}

impl DirectUploads {
    pub fn new(signer: Arc<dyn Signer>, url_ttl: Duration) -> Self {
        Self { signer, url_ttl }
    }
}

/// An object a client uploaded, opened for reading.
pub struct Uploaded {
    pub size: u64,
    /// The `Content-Type` the client sent with its PUT, as the bucket kept it.
    pub content_type: Option<String>,
    pub body: ByteStream,
}

impl BlobStore {
    #[must_use]
    pub fn with_direct_uploads(mut self, direct: DirectUploads) -> Self {
        self.direct = Some(direct);
        self
    }

    /// Whether clients may upload straight into this datastore.
    pub fn takes_direct_uploads(&self) -> bool {
        self.direct.is_some()
    }

    /// A PUT URL for `key`, valid for the configured time or until
    /// `not_after`, whichever comes first; `None` if this datastore takes
    /// no direct uploads.
    pub async fn upload_url(
        &self,
        key: &BlobKey,
        not_after: SystemTime,
    ) -> Result<Option<Presigned>, StorageError> {
        let Some(direct) = &self.direct else {
            return Ok(None);
        };
        let ttl = not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(direct.url_ttl)
            .max(Duration::from_secs(1));
        let url = direct
            .signer
            .signed_url(Method::PUT, &self.path(key), ttl)
            .await?;
        Ok(Some(Presigned {
            url,
            expires_at: SystemTime::now() + ttl,
        }))
    }

    /// Opens an uploaded object with its size and type.
    pub async fn open_uploaded(&self, key: &BlobKey) -> Result<Uploaded, StorageError> {
        let result = self.get(key, GetOptions::default()).await?;
        let size = result.meta.size;
        let content_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string());
        let body = self.body_of(result);
        Ok(Uploaded {
            size,
            content_type,
            body,
        })
    }
}
