//! Value encoding for records: a one-byte format version, then JSON. The
//! version lets a later layout read old values instead of misreading them.

use serde::{Serialize, de::DeserializeOwned};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown record version {0}")]
    Version(u8),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![VERSION];
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, rest)) => Ok(serde_json::from_slice(rest)?),
        Some((&other, _)) => Err(CodecError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records survive an encode/decode round trip and a foreign version is refused.
    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(decode::<Vec<u32>>(&bytes).unwrap(), vec![1, 2, 3]);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            decode::<Vec<u32>>(&wrong),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(decode::<Vec<u32>>(&[]), Err(CodecError::Empty)));
    }
}
