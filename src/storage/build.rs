//! Datastore config -> `BlobStore`s. The only place that picks an
//! `object_store` implementation.

use std::{path::Path, sync::Arc};

use object_store::local::LocalFileSystem;

use super::{BlobStore, Datastores, StorageError};
use crate::{config::DatastoreConfig, ids::DatastoreId};

/// Builds every datastore; local directories are created if missing.
pub fn build_datastores(
    configs: &[DatastoreConfig],
    data_dir: &Path,
) -> Result<Datastores, StorageError> {
    let mut stores = Vec::with_capacity(configs.len());
    for config in configs {
        match config {
            DatastoreConfig::Local(local) => {
                let dir = local.path.clone().unwrap_or_else(|| data_dir.join("media"));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StorageError::Setup(format!("cannot create {}: {e}", dir.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| StorageError::Setup(format!("{}: {e}", dir.display())))?
                    // Without fsync an acknowledged upload could vanish on power loss.
                    .with_fsync(local.fsync)
                    .with_automatic_cleanup(true);
                let part = usize::try_from(local.write_chunk_size.as_u64()).unwrap_or(usize::MAX);
                stores.push(BlobStore::new(
                    DatastoreId(local.id.clone()),
                    Arc::new(fs),
                    part,
                    local.kinds.clone(),
                ));
            }
        }
    }
    Ok(Datastores::new(stores))
}
