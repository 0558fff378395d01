//! What the core hands back to its callers: who asks ([`Access`]), what they
//! ask for ([`MediaRequest`]), and what they may serve ([`Opened`]: a view
//! of the media plus a redirect or a reader). Never a metadata record.

use std::{ops::Range, time::Duration};

use ruma::UserId;

use super::{MediaError, MediaService, ports::BlobRecord};
use crate::{
    ids::{MediaKey, Sha256Digest},
    storage::{ByteStream, Presigned},
};

/// How the media was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The authenticated client endpoints.
    Authenticated,
    /// The deprecated unauthenticated `/_matrix/media/*/download` endpoints.
    Legacy,
    /// Another server, through the federation media endpoints: only our
    /// own media, never fetched from elsewhere.
    Federation,
}

/// One download or thumbnail request, parsed and checked by the edge.
#[derive(Debug, Clone)]
pub struct MediaRequest<'a> {
    pub key: MediaKey,
    pub access: Access,
    /// The authenticated user, who pays for any remote fetch.
    pub user: Option<&'a UserId>,
    /// `false`: never fetch from another server (breaks fetch loops).
    pub allow_remote: bool,
    /// Whether the caller accepts a redirect (legacy endpoints only send
    /// one when asked; the others always may).
    pub allow_redirect: bool,
    /// How long to wait for media whose async upload has not arrived.
    pub wait: Duration,
    /// The client's address, for rate limits (none for other servers).
    pub client: Option<std::net::IpAddr>,
    /// A server admin asked to see quarantined media anyway (Synapse's
    /// `admin_unsafely_bypass_quarantine`); the edge sets it only for admins.
    pub bypass_quarantine: bool,
}

impl MediaRequest<'_> {
    fn may_redirect(&self) -> bool {
        self.access != Access::Legacy || self.allow_redirect
    }
}

/// What a client is told about media it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaView {
    pub content_type: String,
    /// The whole `Content-Disposition` value to send.
    pub disposition: String,
    pub size: u64,
    /// Content digest: the strong validator (`ETag`) of these bytes.
    pub sha256: Sha256Digest,
}

/// Where the bytes come from.
pub enum Body {
    /// The datastore serves them itself: send the client there.
    Redirect(Presigned),
    /// Read them through us, whole or by range.
    Stream(Reader),
}

/// Media (or a thumbnail) that passed every check, ready to be served.
pub struct Opened {
    pub view: MediaView,
    pub body: Body,
}

/// Reads one stored blob, as often and by whatever ranges the edge needs.
#[derive(Clone)]
pub struct Reader {
    pub(super) media: MediaService,
    pub(super) blob: BlobRecord,
    pub(super) sha256: Sha256Digest,
}

impl Reader {
    /// The bytes, or only `range` of them (already checked to lie inside).
    pub async fn read(&self, range: Option<Range<u64>>) -> Result<ByteStream, MediaError> {
        self.media.read_blob(&self.blob, &self.sha256, range).await
    }
}

impl Opened {
    /// Served through us, never redirected.
    pub(super) fn stream(media: &MediaService, view: MediaView, blob: BlobRecord) -> Self {
        Self {
            body: Body::Stream(Reader {
                media: media.clone(),
                sha256: view.sha256,
                blob,
            }),
            view,
        }
    }

    pub(super) async fn new(
        media: &MediaService,
        request: &MediaRequest<'_>,
        view: MediaView,
        blob: BlobRecord,
    ) -> Result<Self, MediaError> {
        if request.may_redirect()
            && let Some(presigned) = media
                .presign(&blob, &view.content_type, &view.disposition)
                .await?
        {
            return Ok(Self {
                view,
                body: Body::Redirect(presigned),
            });
        }
        Ok(Self::stream(media, view, blob))
    }
}
