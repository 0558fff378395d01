//! `X-Matrix` request signatures: checking inbound federation requests
//! against the origin's published key, and signing our own.

use std::collections::BTreeMap;

use http::{HeaderMap, Method, Uri};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::PublicKeyMap,
};

use super::Federation;

/// Why an inbound request is not accepted.
#[derive(Debug, thiserror::Error, Clone)]
pub enum AuthFailure {
    #[error("missing or malformed X-Matrix Authorization header")]
    Missing,
    #[error("the request is addressed to another server")]
    WrongDestination,
    #[error("the origin server is blocked here")]
    Blocked,
    #[error("the origin's signing key could not be fetched: {0}")]
    KeyUnavailable(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// What an inbound request's `Authorization` header claims: an `X-Matrix`
/// origin, key and signature, addressed to `us` (or to nobody, as older
/// servers send). Nothing is verified yet.
pub fn claim(headers: &HeaderMap, us: &ServerName) -> Result<XMatrix, AuthFailure> {
    let x_matrix = XMatrix::extract_from_http_headers(headers).map_err(|_| AuthFailure::Missing)?;
    if x_matrix.destination.as_deref().is_some_and(|d| d != us) {
        return Err(AuthFailure::WrongDestination);
    }
    Ok(x_matrix)
}

/// Verifies a claimed signature of a request without a body against
/// `origin`'s key `key`.
pub fn verify_claim(
    x_matrix: &XMatrix,
    method: &Method,
    uri: &Uri,
    us: &ServerName,
    key: Base64,
) -> Result<(), AuthFailure> {
    // The signed JSON holds the request's path: a URI without one (the
    // authority form) is never signed, and ruma would panic on it.
    if uri.path_and_query().is_none() {
        return Err(AuthFailure::BadSignature);
    }
    let mut request = http::Request::new(Vec::<u8>::new());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    let map: PublicKeyMap = BTreeMap::from([(
        x_matrix.origin.to_string(),
        BTreeMap::from([(x_matrix.key.to_string(), key)]),
    )]);
    x_matrix
        .verify_http_request(&request, us, &map)
        .map_err(|_| AuthFailure::BadSignature)
}

impl Federation {
    /// Checks the `X-Matrix` signature of an inbound request (no body) and
    /// answers the origin server.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<OwnedServerName, AuthFailure> {
        let x_matrix = claim(headers, &self.inner.server_name)?;
        if self.is_blocked(&x_matrix.origin) {
            return Err(AuthFailure::Blocked);
        }
        let key_id = x_matrix.key.to_string();
        let key = self.public_key(&x_matrix.origin, &key_id).await?;
        verify_claim(&x_matrix, method, uri, &self.inner.server_name, key)?;
        Ok(x_matrix.origin)
    }

    /// The `Authorization` value for a request from us to `destination`.
    pub fn sign(
        &self,
        destination: &ServerName,
        method: &Method,
        path_and_query: &str,
    ) -> Option<String> {
        let pair = self.inner.signing.as_ref()?;
        let mut request = http::Request::new(Vec::<u8>::new());
        *request.method_mut() = method.clone();
        *request.uri_mut() = path_and_query.parse().ok()?;
        let input =
            XMatrixSigningInput::new(self.inner.server_name.clone(), destination.to_owned(), pair);
        XMatrix::sign_http_request(&request, input)
            .ok()
            .map(|x| x.to_string())
    }

    /// Whether we can sign outbound requests.
    pub fn can_sign(&self) -> bool {
        self.inner.signing.is_some()
    }
}
