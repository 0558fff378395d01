//! Operator tasks over the running services: moving blobs between
//! datastores (`storage sync`), checking metadata against the datastores
//! (`storage fsck`), and the control-socket client the CLI uses to ask a
//! running server to do them.

pub mod control;
pub mod fsck;
pub mod sync;

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::{
    ids::Sha256Digest,
    media::MediaError,
    repo::RepoError,
    storage::{ByteStream, StorageError},
};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Passes `stream` through while hashing it; read the digest once it ended.
fn hashing(stream: ByteStream) -> (ByteStream, Arc<Mutex<Sha256>>) {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let shared = Arc::clone(&hasher);
    let stream = stream
        .inspect_ok(move |chunk| {
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .update(chunk);
        })
        .boxed();
    (stream, hasher)
}

fn digest_of(hasher: &Arc<Mutex<Sha256>>) -> Sha256Digest {
    let hasher = hasher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Sha256Digest(hasher.finalize().into())
}

/// Reads `stream` to its end and returns its size and digest.
async fn digest_stream(stream: ByteStream) -> std::io::Result<(u64, Sha256Digest)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = stream;
    while let Some(chunk) = stream.try_next().await? {
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, Sha256Digest(hasher.finalize().into())))
}
