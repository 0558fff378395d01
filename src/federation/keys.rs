//! Signing keys: ours (loaded from Synapse's key file format, published
//! as a self-signed key document) and other servers' (fetched, checked
//! against their own signature, cached, refetched at most once a minute).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap},
};

use super::{AuthFailure, Federation, FederationError, now_ms};

/// How long our own key document says it is valid.
const OWN_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A remote server's keys as we last fetched them.
#[derive(Debug, Clone)]
pub struct ServerKeys {
    /// key id -> (public key, valid until, ms since the epoch).
    pub keys: BTreeMap<String, (Base64, u64)>,
}

/// Why a signing key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no key in the file")]
    Empty,
    #[error("expected `ed25519 <version> <base64 seed>`")]
    Format,
    #[error("unsupported algorithm {0}")]
    Algorithm(String),
    #[error("the key version must be [A-Za-z0-9_]")]
    Version,
    #[error("seed: {0}")]
    Seed(String),
    #[error("the seed must be 32 bytes")]
    SeedLength,
}

impl Federation {
    /// Our key document (`GET /_matrix/key/v2/server`), signed; `None`
    /// without a signing key.
    pub fn own_keys(&self) -> Option<serde_json::Value> {
        let pair = self.inner.signing.as_ref()?;
        let valid_until = now_ms() + u64::try_from(OWN_KEY_VALIDITY.as_millis()).unwrap_or(0);
        let public = Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec());
        let mut doc = CanonicalJsonObject::new();
        doc.insert(
            "server_name".to_owned(),
            CanonicalJsonValue::String(self.inner.server_name.to_string()),
        );
        doc.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(valid_until).unwrap_or(ruma::Int::MAX)),
        );
        let mut key = CanonicalJsonObject::new();
        key.insert(
            "key".to_owned(),
            CanonicalJsonValue::String(public.encode()),
        );
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(
            format!("ed25519:{}", pair.version()),
            CanonicalJsonValue::Object(key),
        );
        doc.insert(
            "verify_keys".to_owned(),
            CanonicalJsonValue::Object(verify_keys),
        );
        doc.insert(
            "old_verify_keys".to_owned(),
            CanonicalJsonValue::Object(CanonicalJsonObject::new()),
        );
        ruma::signatures::sign_json(self.inner.server_name.as_str(), pair, &mut doc).ok()?;
        serde_json::to_value(&doc).ok()
    }

    /// `origin`'s public key `key_id`, valid now: from the cache, else
    /// fetched again (a key we have not seen, or one that expired, may have
    /// been published since), at most once a minute per origin.
    pub(super) async fn public_key(
        &self,
        origin: &ServerName,
        key_id: &str,
    ) -> Result<Base64, AuthFailure> {
        let now = now_ms();
        let usable = |keys: &ServerKeys| {
            keys.keys
                .get(key_id)
                .filter(|(_, until)| *until > now)
                .map(|(key, _)| key.clone())
        };
        if let Some(cached) = self.inner.keys.get(origin).await
            && let Some(key) = usable(&cached)
        {
            return Ok(key);
        }
        let fetched = self
            .inner
            .key_fetches
            .get_with(origin.to_owned(), async {
                Arc::new(self.fetch_keys(origin).await)
            })
            .await;
        let fetched = fetched.as_ref().clone()?;
        let key = usable(&fetched);
        self.inner.keys.insert(origin.to_owned(), fetched).await;
        key.ok_or_else(|| {
            AuthFailure::KeyUnavailable(format!("{origin} publishes no valid key {key_id}"))
        })
    }

    /// `GET /_matrix/key/v2/server` from `origin`, self-signature checked.
    async fn fetch_keys(&self, origin: &ServerName) -> Result<Arc<ServerKeys>, AuthFailure> {
        let fail = |what: String| AuthFailure::KeyUnavailable(what);
        let base = self
            .discover(origin)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let url = base
            .join("/_matrix/key/v2/server")
            .map_err(|e| fail(e.to_string()))?;
        let body = self
            .get_document(url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        read_key_document(origin, &body).map(Arc::new)
    }
}

/// Reads another server's key document (`GET /_matrix/key/v2/server`):
/// it must name `origin` and be signed by the keys it publishes; only
/// well-formed `verify_keys` are kept, each valid until the document's
/// `valid_until_ts`.
pub fn read_key_document(origin: &ServerName, body: &[u8]) -> Result<ServerKeys, AuthFailure> {
    let fail = |what: String| AuthFailure::KeyUnavailable(what);
    let doc: CanonicalJsonObject =
        serde_json::from_slice(body).map_err(|e| fail(format!("key document of {origin}: {e}")))?;
    if doc.get("server_name").and_then(|v| v.as_str()) != Some(origin.as_str()) {
        return Err(fail(format!("key document is not for {origin}")));
    }
    let valid_until = doc
        .get("valid_until_ts")
        .and_then(CanonicalJsonValue::as_integer)
        .and_then(|v| u64::try_from(i64::from(v)).ok())
        .unwrap_or(0);
    let mut keys = BTreeMap::new();
    if let Some(CanonicalJsonValue::Object(verify_keys)) = doc.get("verify_keys") {
        for (id, entry) in verify_keys {
            if let Some(key) = entry
                .as_object()
                .and_then(|o| o.get("key"))
                .and_then(|k| k.as_str())
                .and_then(|k| Base64::parse(k).ok())
            {
                keys.insert(id.clone(), (key, valid_until));
            }
        }
    }
    // The document must be signed by the keys it publishes. ruma checks
    // the servers that signed it, so a document that no signature of the
    // origin's covers (`"signatures": {}`) would pass: ask for one first.
    let signed_by_origin = matches!(
        doc.get("signatures"),
        Some(CanonicalJsonValue::Object(signatures))
            if matches!(signatures.get(origin.as_str()), Some(CanonicalJsonValue::Object(set)) if !set.is_empty())
    );
    if !signed_by_origin {
        return Err(fail(format!(
            "key document of {origin} is not signed by {origin}"
        )));
    }
    let own: PublicKeyMap = BTreeMap::from([(
        origin.to_string(),
        keys.iter()
            .map(|(id, (k, _))| (id.clone(), k.clone()))
            .collect(),
    )]);
    ruma::signatures::verify_json(&own, &doc)
        .map_err(|e| fail(format!("key document of {origin} is not self-signed: {e}")))?;
    Ok(ServerKeys { keys })
}

/// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Reads a signing key in Synapse's format: `ed25519 <version> <base64
/// seed>`; the first key line is the one that signs.
pub fn load_signing_key(path: &std::path::Path) -> Result<Ed25519KeyPair, FederationError> {
    let err = |reason: String| FederationError::SigningKey {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_signing_key(&text).map_err(|e| err(e.to_string()))
}

pub fn parse_signing_key(text: &str) -> Result<Ed25519KeyPair, KeyFileError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or(KeyFileError::Empty)?;
    let mut parts = line.split_whitespace();
    let (Some(algorithm), Some(version), Some(seed), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyFileError::Format);
    };
    if algorithm != "ed25519" {
        return Err(KeyFileError::Algorithm(algorithm.to_owned()));
    }
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(KeyFileError::Version);
    }
    let seed = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(seed)
        .map_err(|e| KeyFileError::Seed(e.to_string()))?;
    if seed.as_bytes().len() != 32 {
        return Err(KeyFileError::SeedLength);
    }
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed.as_bytes());
    Ed25519KeyPair::from_der(&der, version.to_owned())
        .map_err(|e| KeyFileError::Seed(e.to_string()))
}
