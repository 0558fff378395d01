//! The one streaming content hasher: size and SHA-256 of bytes as they
//! pass, for uploads, copies between datastores, repairs and checks.

use std::sync::{Arc, Mutex, PoisonError};

use futures::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};

use super::ByteStream;
use crate::ids::Sha256Digest;

/// Size and SHA-256 of everything fed to it.
#[derive(Clone, Default)]
pub struct ContentHasher {
    size: u64,
    sha256: Sha256,
}

impl ContentHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.sha256.update(chunk);
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> (u64, Sha256Digest) {
        (self.size, Sha256Digest(self.sha256.finalize().into()))
    }
}

/// What a [`tap`] has seen; read it once the stream ended.
#[derive(Clone, Default)]
pub struct Tap(Arc<Mutex<ContentHasher>>);

impl Tap {
    pub fn finish(&self) -> (u64, Sha256Digest) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner)).finish()
    }
}

/// Passes `stream` through unchanged while hashing it.
pub fn tap(stream: ByteStream) -> (ByteStream, Tap) {
    let tap = Tap::default();
    let shared = tap.clone();
    let stream = stream
        .inspect_ok(move |chunk| {
            shared
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update(chunk);
        })
        .boxed();
    (stream, tap)
}

/// Reads `stream` to its end; its size and digest.
pub async fn digest_stream(mut stream: ByteStream) -> std::io::Result<(u64, Sha256Digest)> {
    let mut hasher = ContentHasher::default();
    while let Some(chunk) = stream.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// However the bytes are chunked, size and digest are those of the whole.
    #[tokio::test]
    async fn tap_and_digest_agree_with_one_shot_hashing() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let expected = Sha256Digest(Sha256::digest(&data).into());
        let chunks = || {
            let parts: Vec<std::io::Result<Bytes>> = data
                .chunks(777)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            futures::stream::iter(parts).boxed()
        };
        let (stream, tap) = tap(chunks());
        let passed: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(passed.concat(), data);
        assert_eq!(tap.finish(), (10_000, expected));
        let digested = digest_stream(chunks()).await.unwrap();
        assert_eq!(digested, (10_000, expected));
    }
}
