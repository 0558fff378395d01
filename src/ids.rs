//! Identifiers and timestamps shared by every layer: media ids, mxc keys,
//! content digests, blob keys and datastore ids. Each is validated once, when
//! it is made, so no layer below ever sees a raw, unchecked string.

use std::fmt;

use rand::{Rng, distr::Alphanumeric};
use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

/// Longest media id we accept from a request. Generated ids are 32 chars.
pub const MAX_MEDIA_ID_LEN: usize = 255;
const GENERATED_MEDIA_ID_LEN: usize = 32;

/// The path part of an `mxc://` URI: only `[A-Za-z0-9_-]`, as the spec requires
/// ("homeservers MUST sanitise mxc:// URIs"), so it can never name a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaId(String);

/// Why a string is not a media id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("media id must not be empty")]
    Empty,
    #[error("media id is longer than {MAX_MEDIA_ID_LEN} characters")]
    TooLong,
    #[error("media id may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
    #[error("invalid server name")]
    ServerName,
}

impl MediaId {
    /// A fresh random id: 32 alphanumerics (about 190 bits), never derived
    /// from the content and never reused.
    pub fn generate() -> Self {
        let id: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(GENERATED_MEDIA_ID_LEN)
            .map(char::from)
            .collect();
        Self(id)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_MEDIA_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(IdError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MediaId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MediaId> for String {
    fn from(id: MediaId) -> Self {
        id.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One piece of media: `mxc://{server}/{id}`. Server names compare
/// case-sensitively, as the spec says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MediaKey {
    pub server: OwnedServerName,
    pub id: MediaId,
}

impl MediaKey {
    pub fn new(server: OwnedServerName, id: MediaId) -> Self {
        Self { server, id }
    }

    /// Validates both halves as they come from a request path, before any
    /// storage or network access.
    pub fn parse(server: &str, id: &str) -> Result<Self, IdError> {
        let server = <&ServerName>::try_from(server).map_err(|_| IdError::ServerName)?;
        Ok(Self {
            server: server.to_owned(),
            id: MediaId::parse(id)?,
        })
    }
}

impl fmt::Display for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.server, self.id)
    }
}

/// Milliseconds since the Unix epoch, as the Matrix spec counts time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    #[must_use]
    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `self` until `later`, zero if `later` is not later.
    pub fn until(self, later: Self) -> std::time::Duration {
        std::time::Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

/// SHA-256 of a blob's bytes: the deduplication key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = hex::FromHexError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(value, &mut out)?;
        Ok(Self(out))
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> Self {
        d.to_hex()
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// Where one blob lives inside a datastore. Random and never reused; two
/// fan-out levels keep local directories small.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn random() -> Self {
        Self::from_bytes(rand::rng().random())
    }

    /// The key named by `seed`'s SHA-256: the same seed, the same key.
    pub fn derived(seed: &str) -> Self {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self::from_bytes(id)
    }

    fn from_bytes(id: [u8; 16]) -> Self {
        let id = hex::encode(id);
        Self(format!("{}/{}/{id}", &id[..2], &id[2..4]))
    }

    /// Accepts only keys of the shape `random` makes, so a listed object name
    /// from a datastore can be matched against records safely.
    pub fn from_listed(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        let hexish =
            |p: &str, len: usize| p.len() == len && p.bytes().all(|x| x.is_ascii_hexdigit());
        (parts.next().is_none()
            && hexish(a, 2)
            && hexish(b, 2)
            && hexish(c, 32)
            && c.starts_with(a)
            && c[2..].starts_with(b))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `id` an admin gave a datastore in the config.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatastoreId(pub String);

impl fmt::Display for DatastoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Spec (content repo, security): only `[A-Za-z0-9_-]` media ids are accepted.
        #[test]
        fn media_id_accepts_exactly_the_spec_alphabet(s in "\\PC{0,40}") {
            let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            prop_assert_eq!(MediaId::parse(&s).is_ok(), ok);
        }

        /// Valid ids round-trip unchanged.
        #[test]
        fn valid_media_ids_round_trip(s in "[A-Za-z0-9_-]{1,255}") {
            let id = MediaId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }

        /// Blob keys made by `random` are recognised when listed back.
        #[test]
        fn random_blob_keys_are_recognised(_n in 0u8..50) {
            let key = BlobKey::random();
            prop_assert_eq!(BlobKey::from_listed(key.as_str()), Some(key));
        }
    }

    /// Path traversal never survives id parsing.
    #[test]
    fn traversal_ids_are_rejected() {
        for bad in [
            "..",
            "../../etc/passwd",
            "a/b",
            "a%2Fb",
            "a.b",
            "é",
            "a b",
            "",
        ] {
            assert!(MediaId::parse(bad).is_err(), "{bad}");
        }
        assert!(MediaId::parse(&"a".repeat(256)).is_err());
    }

    /// Generated ids are valid, long enough and not repeated.
    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = MediaId::generate();
        let b = MediaId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().len() >= 24);
        assert!(MediaId::parse(a.as_str()).is_ok());
    }

    /// Spec appendix: server names follow `hostname[:port]`.
    #[test]
    fn server_names_are_validated() {
        assert!(MediaKey::parse("example.org", "abc").is_ok());
        assert!(MediaKey::parse("example.org:8448", "abc").is_ok());
        assert!(MediaKey::parse("[::1]:8448", "abc").is_ok());
        for bad in [
            "",
            "exa mple.org",
            "example.org/x",
            "example.org:99999999",
            "a@b",
        ] {
            assert!(MediaKey::parse(bad, "abc").is_err(), "{bad}");
        }
    }
}
