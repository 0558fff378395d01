//! `Secret`: a config string that never appears in logs, `Debug` output or
//! serialised config. Each secret key also has a `*_file` twin read at start-up.

use std::path::Path;

use serde::Deserialize;

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The inline value, or the trimmed contents of `file`.
    pub fn resolve(
        inline: Option<&Self>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, SecretError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(SecretError::Both),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Some(Self(s.trim().to_owned())))
                .map_err(|source| SecretError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            (None, None) => Ok(None),
        }
    }
}

/// Why a secret cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set either the value or its *_file, not both")]
    Both,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serialised (e.g. by `mxmedia check-config`) as a placeholder, never
/// the value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets never print.
    #[test]
    fn debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }

    /// A `*_file` secret is read and trimmed; both forms at once is an error.
    #[test]
    fn file_secrets_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(
            Secret::resolve(None, Some(&path))
                .unwrap()
                .unwrap()
                .expose(),
            "abc"
        );
        assert!(Secret::resolve(Some(&Secret::new("x")), Some(&path)).is_err());
        assert!(Secret::resolve(None, Some(&dir.path().join("missing"))).is_err());
        assert_eq!(Secret::resolve(None, None).unwrap(), None);
    }
}
