//! The HTTP edge's error type. Every failure leaves the service as a Matrix
//! error body `{errcode, error}`; no other module builds status codes or
//! errcodes, and 5xx bodies never carry internal text.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use std::time::Duration;

use crate::{
    auth::AuthError,
    media::{
        FetchError, MediaError,
        ports::{HomeserverError, PreviewError},
    },
    storage::StorageError,
    thumbnail::ThumbnailError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("guest access is not allowed for this endpoint")]
    GuestForbidden,
    #[error("You are not a server admin")]
    NotAdmin,
    #[error("Can only look up local users")]
    NotLocalUser,
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error("request body is not the expected JSON: {0}")]
    BadJson(String),
    #[error("unrecognized request")]
    Unrecognized,
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Federation(#[from] crate::federation::AuthFailure),
}

/// Everything a client learns from a failure, decided in one place.
struct Verdict<'a> {
    status: StatusCode,
    errcode: &'a str,
    /// What the client reads; `None` means the error's own text.
    message: Option<String>,
    retry_after: Option<Duration>,
}

impl<'a> Verdict<'a> {
    fn new(status: StatusCode, errcode: &'a str) -> Self {
        Self {
            status,
            errcode,
            message: None,
            retry_after: None,
        }
    }

    fn saying(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

const INTERNAL: &str = "Internal server error";

impl ApiError {
    /// The one classifier: status, errcode, client message and retry hint
    /// come from one match, so they can never disagree.
    fn verdict(&self) -> Verdict<'_> {
        use StatusCode as S;
        match self {
            Self::Media(media) => media_verdict(media),
            Self::Auth(AuthError::MissingToken) => Verdict::new(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
            Self::Auth(AuthError::UnknownToken) => Verdict::new(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Self::Auth(AuthError::Rejected {
                status, errcode, ..
            }) => Verdict::new(
                S::from_u16(*status).unwrap_or(S::FORBIDDEN),
                errcode.as_str(),
            ),
            Self::Auth(AuthError::Unavailable(_)) => {
                Verdict::new(S::SERVICE_UNAVAILABLE, "M_UNKNOWN")
                    .saying("The homeserver could not be reached to check the access token")
                    .retry(Duration::from_secs(5))
            }
            Self::Auth(AuthError::BadGateway(_)) => Verdict::new(S::BAD_GATEWAY, "M_UNKNOWN")
                .saying("The homeserver gave an unusable answer to the access token check"),
            Self::GuestForbidden => Verdict::new(S::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            Self::NotAdmin => Verdict::new(S::FORBIDDEN, "M_FORBIDDEN"),
            // Synapse's answer, errcode included.
            Self::NotLocalUser => Verdict::new(S::BAD_REQUEST, "M_UNKNOWN"),
            Self::InvalidParam(_) => Verdict::new(S::BAD_REQUEST, "M_INVALID_PARAM"),
            Self::MissingParam(_) => Verdict::new(S::BAD_REQUEST, "M_MISSING_PARAM"),
            Self::NotJson(_) => Verdict::new(S::BAD_REQUEST, "M_NOT_JSON"),
            Self::BadJson(_) => Verdict::new(S::BAD_REQUEST, "M_BAD_JSON"),
            Self::Unrecognized => Verdict::new(S::NOT_FOUND, "M_UNRECOGNIZED"),
            Self::MethodNotAllowed => Verdict::new(S::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            Self::RangeNotSatisfiable { .. } => {
                Verdict::new(S::RANGE_NOT_SATISFIABLE, "M_INVALID_PARAM")
            }
            Self::Federation(crate::federation::AuthFailure::Blocked) => {
                Verdict::new(S::FORBIDDEN, "M_FORBIDDEN")
            }
            Self::Federation(_) => Verdict::new(S::UNAUTHORIZED, "M_UNAUTHORIZED"),
        }
    }
}

/// The core's errors, each with the spec's status and errcode. A failure
/// shared by coalesced requests is classified as the failure itself.
fn media_verdict(error: &MediaError) -> Verdict<'_> {
    use MediaError as M;
    use StatusCode as S;
    match error {
        M::NotFound | M::DirectUploadMissing => Verdict::new(S::NOT_FOUND, "M_NOT_FOUND"),
        M::TooLarge { .. }
        | M::Thumbnail(
            ThumbnailError::TooManyPixels { .. }
            | ThumbnailError::TooManyFrames(_)
            | ThumbnailError::TooExpensive { .. },
        ) => Verdict::new(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        M::NotYetUploaded => Verdict::new(S::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
        M::CannotOverwrite => Verdict::new(S::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
        M::RateLimited { retry_after } => {
            Verdict::new(S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").retry(*retry_after)
        }
        M::Forbidden(_) => Verdict::new(S::FORBIDDEN, "M_FORBIDDEN"),
        // Synapse's answer for `media_upload_limits`, errcode included.
        M::QuotaExceeded => Verdict::new(S::BAD_REQUEST, "M_RESOURCE_LIMIT_EXCEEDED"),
        M::Invalid(_) => Verdict::new(S::BAD_REQUEST, "M_INVALID_PARAM"),
        // Synapse's answer, errcode included.
        M::NotLocal => {
            Verdict::new(S::BAD_REQUEST, "M_UNKNOWN").saying("Can only delete local media")
        }
        M::UploadTimedOut(_) => Verdict::new(S::REQUEST_TIMEOUT, "M_UNKNOWN"),
        // The spec's example errcode for "cannot thumbnail this" is M_UNKNOWN.
        M::Body(_) | M::Thumbnail(ThumbnailError::Unsupported(_) | ThumbnailError::Decode(..)) => {
            Verdict::new(S::BAD_REQUEST, "M_UNKNOWN")
        }
        M::Remote(remote) => remote_verdict(remote),
        M::Storage(StorageError::Backend(_)) => Verdict::new(S::SERVICE_UNAVAILABLE, "M_UNKNOWN")
            .saying("The media storage is unavailable; try again shortly")
            .retry(Duration::from_secs(10)),
        M::Storage(_)
        | M::Repo(_)
        | M::Internal(_)
        | M::Ownership(_)
        | M::Thumbnail(ThumbnailError::Encode(_)) => {
            Verdict::new(S::INTERNAL_SERVER_ERROR, "M_UNKNOWN").saying(INTERNAL)
        }
        M::Shared(inner) => media_verdict(inner),
        // The homeserver's own refusal (an unknown room, a token that is
        // not an admin's there) is relayed; its failure is a bad gateway.
        M::Homeserver(HomeserverError::Refused {
            status,
            errcode,
            error,
        }) => Verdict::new(
            S::from_u16(*status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(S::BAD_GATEWAY),
            errcode.as_str(),
        )
        .saying(error.clone()),
        M::Homeserver(HomeserverError::Unavailable(_)) => Verdict::new(S::BAD_GATEWAY, "M_UNKNOWN"),
        // Synapse's answers: a blocked URL is forbidden, a failed fetch a
        // bad gateway, each saying why.
        M::Preview(PreviewError::Blocked(why)) => {
            Verdict::new(S::FORBIDDEN, "M_FORBIDDEN").saying(why.clone())
        }
        M::Preview(PreviewError::Failed(why)) => Verdict::new(S::BAD_GATEWAY, "M_UNKNOWN")
            .saying(format!("Failed to download content: {why}")),
    }
}

/// Another server's media that could not be fetched.
fn remote_verdict(error: &FetchError) -> Verdict<'static> {
    use FetchError as F;
    use StatusCode as S;
    const GATEWAY: &str = "The media's server could not be reached or failed";
    match error {
        F::NotFound | F::NotConfigured => Verdict::new(S::NOT_FOUND, "M_NOT_FOUND"),
        F::Blocked => Verdict::new(S::FORBIDDEN, "M_FORBIDDEN"),
        F::TooLarge { limit } => Verdict::new(S::BAD_GATEWAY, "M_TOO_LARGE").saying(format!(
            "The remote file is larger than this server fetches ({limit} bytes)"
        )),
        F::Unavailable(_) | F::BackingOff => {
            Verdict::new(S::BAD_GATEWAY, "M_UNKNOWN").saying(GATEWAY)
        }
        F::Busy { retry_after } | F::OverBudget { retry_after } => {
            Verdict::new(S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").retry(*retry_after)
        }
    }
}

#[derive(Serialize)]
struct MatrixErrorBody<'a> {
    errcode: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_logout: Option<bool>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let verdict = self.verdict();
        let (status, errcode, retry_after) = (verdict.status, verdict.errcode, verdict.retry_after);
        // Server errors never show internal text to the client.
        let text = match verdict.message {
            Some(message) => message,
            None if status.is_server_error() => INTERNAL.to_owned(),
            None => self.to_string(),
        };
        if status.is_server_error() {
            // The request span is current here, so this event carries the
            // method, path and request id.
            tracing::error!(error = %self, "request failed");
        }
        let soft_logout = match &self {
            Self::Auth(AuthError::Rejected { soft_logout, .. }) => *soft_logout,
            _ => None,
        };
        let body = MatrixErrorBody {
            errcode,
            error: &text,
            retry_after_ms: retry_after
                .filter(|_| status == StatusCode::TOO_MANY_REQUESTS)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            soft_logout,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = retry_after {
            // Retry-After is whole seconds; round up so clients never come back early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::RangeNotSatisfiable { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        response
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidParam(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::InvalidParam(rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => Self::NotJson(e.body_text()),
            other => Self::BadJson(other.body_text()),
        }
    }
}
