//! Presigned GET URLs for redirects (the spec's MSC3860). One URL is handed
//! out again for `reuse_for`, so clients and shared caches can reuse it; it
//! stays valid for at least `url_ttl - reuse_for` after the last hand-out.
//! The response Content-Type and Content-Disposition are signed into the URL
//! (`response-content-*` overrides), so the bucket answers with ours.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use object_store::{
    path::Path,
    signer::{Method, SignedUrlOptions, Signer},
};
use url::Url;

use super::StorageError;

/// A presigned URL and when it stops working.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: Url,
    pub expires_at: SystemTime,
}

impl Presigned {
    /// Validity left now (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

type CacheKey = (String, String, String);

#[derive(Clone)]
pub struct Presigner {
    signer: Arc<dyn Signer>,
    url_ttl: Duration,
    cache: moka::sync::Cache<CacheKey, Presigned>,
}

impl Presigner {
    pub fn new(signer: Arc<dyn Signer>, url_ttl: Duration, reuse_for: Duration) -> Self {
        Self {
            signer,
            url_ttl,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(reuse_for)
                .build(),
        }
    }

    /// A GET URL for `path` whose response carries `content_type` and
    /// `content_disposition`.
    pub(super) async fn get(
        &self,
        path: &Path,
        content_type: &str,
        content_disposition: &str,
    ) -> Result<Presigned, StorageError> {
        let key = (
            path.to_string(),
            content_type.to_owned(),
            content_disposition.to_owned(),
        );
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let options = SignedUrlOptions::default().with_query([
            ("response-content-type", content_type),
            ("response-content-disposition", content_disposition),
        ]);
        let expires_at = SystemTime::now() + self.url_ttl;
        let url = self
            .signer
            .signed_url_opts(Method::GET, path, self.url_ttl, &options)
            .await?;
        let presigned = Presigned { url, expires_at };
        self.cache.insert(key, presigned.clone());
        Ok(presigned)
    }
}
