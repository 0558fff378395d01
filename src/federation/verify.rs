//! `X-Matrix` request signatures: checking inbound federation requests
//! against the origin's published key, and signing our own.

use std::collections::BTreeMap;

use http::{HeaderMap, Method, Uri};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
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

impl Federation {
    /// Checks the `X-Matrix` signature of an inbound request (no body) and
    /// answers the origin server.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<OwnedServerName, AuthFailure> {
        let x_matrix =
            XMatrix::extract_from_http_headers(headers).map_err(|_| AuthFailure::Missing)?;
        if x_matrix
            .destination
            .as_deref()
            .is_some_and(|d| d != self.inner.server_name)
        {
            return Err(AuthFailure::WrongDestination);
        }
        if self.is_blocked(&x_matrix.origin) {
            return Err(AuthFailure::Blocked);
        }
        let key_id = x_matrix.key.to_string();
        let key = self.public_key(&x_matrix.origin, &key_id).await?;
        let mut request = http::Request::new(Vec::<u8>::new());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let map: PublicKeyMap =
            BTreeMap::from([(x_matrix.origin.to_string(), BTreeMap::from([(key_id, key)]))]);
        x_matrix
            .verify_http_request(&request, &self.inner.server_name, &map)
            .map_err(|_| AuthFailure::BadSignature)?;
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
