//! Direct uploads (MSC3870, unstable prefix `com.beeper.msc3870`): a
//! reservation on a datastore that takes them comes with a presigned PUT
//! URL for one object key, derived from the media id (fresh, as ids are
//! never handed out twice, and found again without a record). The client
//! uploads there, then completes; the object is then read once (size and
//! SHA-256, within the uploader's limits) and committed like any upload to
//! the reserved id: deduplicated, quarantined by content, counted against
//! the quota, waking waiting downloads. Whatever fails leaves no object.
//!
//! A signed PUT cannot bound the body's length (the size is not known at
//! `/create`): the bound is checked when the upload completes, and an
//! object over it is deleted then. One that is never completed is an
//! orphan like any other, removed by the sweep after `media.orphan_grace`.

use std::time::{Duration, UNIX_EPOCH};

use futures::TryStreamExt;
use ruma::UserId;

use super::{
    MediaError, MediaService,
    meter::{Meter, Pace},
    rates::Family,
    upload::{BlobGuard, NOT_OWNER, UploadMeta, may_fill},
};
use crate::{
    config::DatastoreKind,
    ids::{BlobKey, MediaKey, UnixMillis},
    media::ports::{CommitMode, Lookup, NewBlob, Origin},
    storage::StorageError,
};

/// An id reserved by `/create`.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub key: MediaKey,
    /// When the id is released if nothing was uploaded.
    pub expires: UnixMillis,
    /// Where the client may upload the bytes directly, if anywhere.
    pub upload_url: Option<url::Url>,
}

/// The object a direct upload to `key` lands in.
fn object_key(key: &MediaKey) -> BlobKey {
    BlobKey::derived(&format!(
        "mxmedia direct upload mxc://{}/{}",
        key.server, key.id
    ))
}

impl MediaService {
    /// The upload URL for a fresh reservation of `key`, valid at most
    /// until the reservation expires; `None` when local media is not
    /// stored where clients may upload.
    pub(super) async fn upload_url(
        &self,
        key: &MediaKey,
        expires: UnixMillis,
    ) -> Result<Option<url::Url>, MediaError> {
        let store = self.inner.stores.writer_for(DatastoreKind::LocalMedia)?;
        let not_after = UNIX_EPOCH + Duration::from_millis(expires.0);
        Ok(store
            .upload_url(&object_key(key), not_after)
            .await?
            .map(|presigned| presigned.url))
    }

    /// Completes a direct upload to the reserved `key` by `uploader`:
    /// verifies and commits what the client put at its upload URL. A
    /// replayed completion answers as the first did.
    #[tracing::instrument(level = "debug", skip_all, fields(mxc = %key))]
    pub async fn complete_direct_upload(
        &self,
        uploader: &UserId,
        key: &MediaKey,
        upload_name: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), MediaError> {
        let store = self.inner.stores.writer_for(DatastoreKind::LocalMedia)?;
        if !store.takes_direct_uploads() {
            return Err(MediaError::Invalid(
                "this server hands out no upload URLs: upload with PUT /upload".to_owned(),
            ));
        }
        let object = object_key(key);
        // Whose id it is, before anything stored is touched (one look: a
        // racing completion may commit it any moment).
        if key.server != self.inner.server_name {
            return Err(MediaError::NotFound);
        }
        let found = self.inner.meta.records.lookup(key).await?;
        if let Lookup::Complete { record, blob } = found {
            if record.uploader.as_deref() != Some(uploader.as_str()) {
                return Err(MediaError::Forbidden(NOT_OWNER));
            }
            let ours = blob.is_some_and(|b| b.key == object);
            return self.completed_before(store, object, ours).await;
        }
        may_fill(&found, uploader)?;
        self.rate_check(Family::Uploads, Some(uploader), client)
            .await?;

        let received = match store.open_uploaded(&object).await {
            Ok(received) => received,
            Err(StorageError::NotFound) => return Err(MediaError::DirectUploadMissing),
            Err(other) => return Err(other.into()),
        };
        // From here on, whatever fails removes the object.
        let guard = BlobGuard::adopt(self, store, object.clone()).await?;
        let config = &self.inner.config;
        let pace = Pace {
            limit: self.upload_limit(Some(uploader)),
            idle: config.upload_idle_timeout,
            min_rate: 0,
            deadline: config.upload_deadline,
        };
        if received.size > pace.limit {
            return Err(MediaError::TooLarge { limit: pace.limit });
        }
        let (body, meter) = Meter::wrap(received.body, pace);
        body.try_for_each(|_| std::future::ready(Ok(())))
            .await
            .map_err(|e| meter.explain(StorageError::Read(e), pace))?;
        let (size, sha256) = meter.finish();

        let meta = UploadMeta::new(received.content_type.as_deref(), upload_name, None);
        let record = self.new_record(meta, Some(uploader), Origin::Local, (size, sha256));
        let blob = NewBlob {
            datastore: store.id().clone(),
            key: object,
        };
        let mode = CommitMode::Reserved {
            owner: uploader.to_string(),
            now: UnixMillis::now(),
        };
        let quota = self.quota_for(uploader);
        let committed = self
            .commit_upload(key.clone(), &record, &blob, (&mode, quota.as_ref()), false)
            .await;
        let (key, outcome) = match committed {
            // A concurrent completion of this same upload came first.
            Err(MediaError::CannotOverwrite) => {
                if let Lookup::Complete { blob: Some(b), .. } =
                    self.inner.meta.records.lookup(key).await?
                    && b.key == blob.key
                {
                    guard.disarm();
                    return Ok(());
                }
                return Err(MediaError::CannotOverwrite);
            }
            other => other?,
        };
        let deduplicated = outcome.unwrap_or(false);
        if !deduplicated || self.replace_missing_blob(sha256, &blob).await? {
            guard.disarm();
        }
        self.inner.committed.notify_waiters();
        self.pregenerate(key.clone());
        tracing::info!(mxc = %key, size, sha256 = %sha256.to_hex(), deduplicated, "direct upload stored");
        Ok(())
    }

    /// A completion for media that already has its content: the answer of
    /// the completion that committed it when `ours` (its object is the
    /// upload URL's) or when nothing lingers at the URL (a deduplicated
    /// upload, or one through `PUT /upload` alone). An object at the URL
    /// that nothing points at lost to a `PUT /upload`: it is removed.
    async fn completed_before(
        &self,
        store: &crate::storage::BlobStore,
        object: BlobKey,
        ours: bool,
    ) -> Result<(), MediaError> {
        if ours {
            return Ok(());
        }
        match store.head(&object).await {
            Err(StorageError::NotFound) => return Ok(()),
            Err(other) => return Err(other.into()),
            Ok(_) => {}
        }
        let unknown = self
            .inner
            .meta
            .blobs
            .unknown_keys(store.id(), vec![object.clone()])
            .await?;
        if !unknown.is_empty() {
            store.delete(&object).await?;
        }
        Err(MediaError::CannotOverwrite)
    }
}
