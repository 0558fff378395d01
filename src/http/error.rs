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

use crate::{auth::AuthError, media::MediaError, storage::StorageError, thumbnail::ThumbnailError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("guest access is not allowed for this endpoint")]
    GuestForbidden,
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
    #[error("{0}")]
    Remote(#[from] crate::federation::fetch::FetchError),
}

impl ApiError {
    /// Status and errcode come from one match so they can never disagree.
    fn classify(&self) -> (StatusCode, &str) {
        match self {
            Self::Media(media) => classify_media(media),
            Self::Auth(AuthError::MissingToken) => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            Self::Auth(AuthError::UnknownToken) => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Self::Auth(AuthError::Rejected {
                status, errcode, ..
            }) => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN),
                errcode.as_str(),
            ),
            Self::Auth(AuthError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            Self::Auth(AuthError::BadGateway(_)) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            Self::GuestForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            Self::InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            Self::MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
            Self::NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            Self::BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            Self::Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            Self::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "M_INVALID_PARAM")
            }
            Self::Federation(crate::federation::AuthFailure::Blocked) => {
                (StatusCode::FORBIDDEN, "M_FORBIDDEN")
            }
            Self::Federation(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Self::Remote(remote) => {
                use crate::federation::fetch::FetchError as F;
                match remote {
                    F::NotFound | F::NotConfigured => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
                    F::Blocked => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
                    F::TooLarge { .. } => (StatusCode::BAD_GATEWAY, "M_TOO_LARGE"),
                    F::Unavailable(_) | F::BackingOff => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
                    F::Busy { .. } | F::OverBudget { .. } => {
                        (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED")
                    }
                }
            }
        }
    }

    /// The `error` text clients see. Gateway failures get a fixed sentence;
    /// other server errors say nothing about internals.
    fn public_message(&self, status: StatusCode) -> String {
        match self {
            Self::Auth(AuthError::Unavailable(_)) => {
                "The homeserver could not be reached to check the access token".to_owned()
            }
            Self::Auth(AuthError::BadGateway(_)) => {
                "The homeserver gave an unusable answer to the access token check".to_owned()
            }
            Self::Media(MediaError::Storage(StorageError::Backend(_))) => {
                "The media storage is unavailable; try again shortly".to_owned()
            }
            Self::Remote(crate::federation::fetch::FetchError::TooLarge { limit }) => {
                format!("The remote file is larger than this server fetches ({limit} bytes)")
            }
            Self::Remote(_) if status.is_server_error() => {
                "The media's server could not be reached or failed".to_owned()
            }
            _ if status.is_server_error() => "Internal server error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The service's errors, each with the spec's status and errcode. A failure
/// shared by coalesced requests is classified as the failure itself.
fn classify_media(error: &MediaError) -> (StatusCode, &'static str) {
    use MediaError as M;
    match error {
        M::NotFound => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        M::TooLarge { .. }
        | M::Thumbnail(
            ThumbnailError::TooManyPixels { .. }
            | ThumbnailError::TooManyFrames(_)
            | ThumbnailError::TooExpensive { .. },
        ) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        M::NotYetUploaded => (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
        M::CannotOverwrite => (StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
        M::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
        M::Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        M::UploadTimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
        // The spec's example errcode for "cannot thumbnail this" is M_UNKNOWN.
        M::Body(_) | M::Thumbnail(ThumbnailError::Unsupported | ThumbnailError::Decode(_)) => {
            (StatusCode::BAD_REQUEST, "M_UNKNOWN")
        }
        M::Storage(StorageError::Backend(_)) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
        M::Storage(_)
        | M::Repo(_)
        | M::Internal(_)
        | M::Ownership(_)
        | M::Thumbnail(ThumbnailError::Encode(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN")
        }
        M::Shared(inner) => classify_media(inner),
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
        let (status, errcode) = self.classify();
        let text = self.public_message(status);
        if status.is_server_error() {
            // The request span is current here, so this event carries the
            // method, path and request id.
            tracing::error!(error = %self, "request failed");
        }
        let retry_after = match &self {
            Self::Media(MediaError::RateLimited { retry_after })
            | Self::Remote(
                crate::federation::fetch::FetchError::Busy { retry_after }
                | crate::federation::fetch::FetchError::OverBudget { retry_after },
            ) => Some(*retry_after),
            Self::Auth(AuthError::Unavailable(_)) => Some(std::time::Duration::from_secs(5)),
            Self::Media(MediaError::Storage(StorageError::Backend(_))) => {
                Some(std::time::Duration::from_secs(10))
            }
            _ => None,
        };
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
