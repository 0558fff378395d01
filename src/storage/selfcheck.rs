//! Datastore self-test: the calls mxmedia makes in production, once each,
//! on a throw-away object, so a misconfigured bucket fails loudly at start-up
//! (or under `mxmedia selfcheck`) instead of on a user's first upload. A
//! failure names the call and carries the provider's own error text.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, ObjectStoreExt as _, PutPayload, WriteMultipart};

use super::{
    BlobStore, StorageError,
    digest::{ContentHasher, digest_stream},
};
use crate::{ids::BlobKey, net::error_chain as detail};

/// What failed, and what the service said.
#[derive(Debug, thiserror::Error)]
#[error("datastore {datastore}: {call} failed: {detail}")]
pub struct SelfcheckError {
    pub datastore: String,
    pub call: &'static str,
    pub detail: String,
}

/// The calls that passed, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SelfcheckReport {
    pub datastore: String,
    pub calls: Vec<&'static str>,
}

impl BlobStore {
    /// Runs put, head, ranged get, multipart (when enabled), presign (when
    /// enabled) and delete. Read-only datastores only get a listing.
    pub async fn selfcheck(&self) -> Result<SelfcheckReport, SelfcheckError> {
        let mut report = SelfcheckReport {
            datastore: self.id.0.clone(),
            calls: Vec::new(),
        };
        let fail = |call: &'static str, err: &dyn std::error::Error| SelfcheckError {
            datastore: self.id.0.clone(),
            call,
            detail: detail(err),
        };
        let mismatch = |call: &'static str, what: String| SelfcheckError {
            datastore: self.id.0.clone(),
            call,
            detail: what,
        };
        if self.kinds.is_empty() {
            let _: Vec<_> = self
                .list()
                .try_collect()
                .await
                .map_err(|e| fail("list", &e))?;
            report.calls.push("list");
            return Ok(report);
        }

        let key = BlobKey::random();
        let path = self.path(&key);
        let body = Bytes::from_static(b"mxmedia selfcheck: put, head, ranged get, delete");
        self.inner
            .put(&path, PutPayload::from(body.clone()))
            .await
            .map_err(|e| fail("put", &e))?;
        report.calls.push("put");
        let checks = async {
            let meta = self.inner.head(&path).await.map_err(|e| fail("head", &e))?;
            if meta.size != body.len() as u64 {
                return Err(mismatch(
                    "head",
                    format!("size {} instead of {}", meta.size, body.len()),
                ));
            }
            report.calls.push("head");
            let options = GetOptions {
                range: Some(GetRange::Bounded(10..19)),
                ..GetOptions::default()
            };
            let got = self
                .inner
                .get_opts(&path, options)
                .await
                .map_err(|e| fail("ranged get", &e))?
                .bytes()
                .await
                .map_err(|e| fail("ranged get", &e))?;
            if got != body.slice(10..19) {
                return Err(mismatch(
                    "ranged get",
                    "wrong bytes for the range".to_owned(),
                ));
            }
            report.calls.push("ranged get");
            if let Some(presigner) = &self.presigner {
                let signed = presigner
                    .get(&path, "text/plain", "inline")
                    .await
                    .map_err(|e| fail("presign", &e))?;
                let fetched = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| fail("presign", &e))?
                    .get(signed.url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| fail("presigned get", &e))?
                    .bytes()
                    .await
                    .map_err(|e| fail("presigned get", &e))?;
                if fetched != body {
                    return Err(mismatch("presigned get", "wrong bytes".to_owned()));
                }
                report.calls.push("presign");
            }
            Ok(())
        }
        .await;
        let deleted = self.delete(&key).await.map_err(|e| fail("delete", &e));
        checks?;
        deleted?;
        report.calls.push("delete");

        if self.policy.multipart {
            self.check_multipart(&mut report).await?;
        }
        Ok(report)
    }

    /// One full part plus a short last one: the smallest upload that is
    /// really multipart on S3 (parts before the last must be >= 5 MiB).
    async fn check_multipart(&self, report: &mut SelfcheckReport) -> Result<(), SelfcheckError> {
        let fail = |call: &'static str, err: &StorageError| SelfcheckError {
            datastore: self.id.0.clone(),
            call,
            detail: detail(err),
        };
        let key = BlobKey::random();
        let path = self.path(&key);
        let part = vec![0x6du8; self.policy.part_size];
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| fail("multipart create", &e.into()))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.policy.part_size);
        writer.write(&part);
        writer.write(b"tail");
        if let Err(e) = writer.finish().await {
            return Err(fail("multipart complete", &e.into()));
        }
        let expected = {
            let mut hasher = ContentHasher::default();
            hasher.update(&part);
            hasher.update(b"tail");
            hasher.finish()
        };
        let stream = self
            .open(&key, None)
            .await
            .map_err(|e| fail("multipart get", &e))?;
        let read = digest_stream(stream).await;
        let deleted = self.delete(&key).await;
        let read = read.map_err(|e| fail("multipart get", &StorageError::Body(e)))?;
        if read != expected {
            return Err(SelfcheckError {
                datastore: self.id.0.clone(),
                call: "multipart get",
                detail: "the assembled object differs from what was sent".to_owned(),
            });
        }
        deleted.map_err(|e| fail("delete", &e))?;
        report.calls.push("multipart");
        Ok(())
    }
}
