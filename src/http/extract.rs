//! Extractors whose rejections speak Matrix, and the access-token extractor.

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::{header, request::Parts},
};

use super::{AppState, error::ApiError};
use crate::auth::{AuthError, Credentials, Requester};

/// `Query` with Matrix error bodies on rejection.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct MatrixQuery<T>(pub T);

/// `Path` with Matrix error bodies on rejection.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct MatrixPath<T>(pub T);

/// Reads the access token from `Authorization: Bearer` or, when allowed,
/// `?access_token=`, plus the appservice `user_id` / `device_id` parameters.
fn credentials(parts: &Parts, accept_query_token: bool) -> Result<Credentials, ApiError> {
    let mut token = None;
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Auth(AuthError::MissingToken))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            token = Some(rest.trim().to_owned());
        } else {
            return Err(ApiError::Auth(AuthError::MissingToken));
        }
    }
    let (mut user_id, mut device_id) = (None, None);
    if let Some(query) = parts.uri.query() {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "access_token" if accept_query_token && token.is_none() && !value.is_empty() => {
                    token = Some(value.into_owned());
                }
                "user_id" => user_id = Some(value.into_owned()),
                "device_id" => device_id = Some(value.into_owned()),
                _ => {}
            }
        }
    }
    let token = token.ok_or(ApiError::Auth(AuthError::MissingToken))?;
    Ok(Credentials {
        token,
        user_id,
        device_id,
    })
}

impl FromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credentials = credentials(parts, state.config.homeserver.accept_query_token)?;
        Ok(state.auth.authenticate(credentials).await?)
    }
}

/// A requester with the credentials they presented (for checks that ask
/// the homeserver again, such as whether they are an admin).
pub struct Authenticated {
    pub requester: Requester,
    pub credentials: Credentials,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credentials = credentials(parts, state.config.homeserver.accept_query_token)?;
        let requester = state.auth.authenticate(credentials.clone()).await?;
        Ok(Self {
            requester,
            credentials,
        })
    }
}

/// The client's address as resolved through `trusted_proxies` (see
/// `http::client_addr`), for rate limits; `None` outside a listener.
pub struct Client(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<super::client_addr::ClientAddr>()
                .map(|c| c.0),
        ))
    }
}

/// A requester that is not a guest: the spec opens only downloads and
/// thumbnails to guests.
pub struct FullUser(pub Requester);

impl FromRequestParts<AppState> for FullUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let requester = Requester::from_request_parts(parts, state).await?;
        if requester.is_guest {
            return Err(ApiError::GuestForbidden);
        }
        Ok(Self(requester))
    }
}

/// A server admin (see `auth::Authenticator::is_admin`); anyone else gets
/// 403 `M_FORBIDDEN`, a missing or unknown token 401, as Synapse answers.
pub struct Admin(pub Requester, pub Credentials);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated {
            requester,
            credentials,
        } = Authenticated::from_request_parts(parts, state).await?;
        if state.auth.is_admin(&requester, &credentials).await? {
            Ok(Self(requester, credentials))
        } else {
            Err(ApiError::NotAdmin)
        }
    }
}
