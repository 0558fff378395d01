//! Datastore configuration: where blobs live and which kinds of blob each
//! datastore takes. A datastore that takes no kind is read-only.

use std::{collections::HashSet, path::PathBuf};

use bytesize::ByteSize;
use serde::Deserialize;

/// What a datastore may be given to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    LocalMedia,
    RemoteMedia,
    Thumbnails,
}

/// One datastore, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DatastoreConfig {
    /// A directory on local disk.
    Local(LocalDatastoreConfig),
}

impl DatastoreConfig {
    pub fn id(&self) -> &str {
        match self {
            Self::Local(local) => &local.id,
        }
    }

    pub fn kinds(&self) -> &[DatastoreKind] {
        match self {
            Self::Local(local) => &local.kinds,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalDatastoreConfig {
    /// Name recorded with every blob stored here; never change it once used. Default `local`.
    pub id: String,
    /// Directory holding the blobs; created if missing. Default `data_dir/media`.
    pub path: Option<PathBuf>,
    /// Kinds of blob written here. Default all three; empty means read-only.
    pub kinds: Vec<DatastoreKind>,
    /// fsync every blob and its directory before acknowledging an upload. Default true.
    pub fsync: bool,
    /// Bytes buffered per write while streaming an upload to disk. Default 1MiB.
    pub write_chunk_size: ByteSize,
}

impl Default for LocalDatastoreConfig {
    fn default() -> Self {
        Self {
            id: "local".to_owned(),
            path: None,
            kinds: vec![
                DatastoreKind::LocalMedia,
                DatastoreKind::RemoteMedia,
                DatastoreKind::Thumbnails,
            ],
            fsync: true,
            write_chunk_size: ByteSize::mib(1),
        }
    }
}

pub(super) fn check_datastores(stores: &[DatastoreConfig], problems: &mut Vec<String>) {
    if stores.is_empty() {
        problems.push("datastores: at least one datastore is required".to_owned());
        return;
    }
    let mut ids = HashSet::new();
    for (i, store) in stores.iter().enumerate() {
        let id = store.id();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "datastores[{i}].id: {id:?} must be non-empty and use only A-Z, a-z, 0-9, '_' and '-'"
            ));
        }
        if !ids.insert(id) {
            problems.push(format!("datastores[{i}].id: {id:?} is used twice"));
        }
        match store {
            DatastoreConfig::Local(local) => {
                if let Some(path) = &local.path
                    && path.exists()
                    && !path.is_dir()
                {
                    problems.push(format!(
                        "datastores[{i}].path: {} exists and is not a directory",
                        path.display()
                    ));
                }
                if local.write_chunk_size.as_u64() < 4096 {
                    problems.push(format!(
                        "datastores[{i}].write_chunk_size: must be at least 4KiB"
                    ));
                }
            }
        }
    }
    if !stores
        .iter()
        .any(|s| s.kinds().contains(&DatastoreKind::LocalMedia))
    {
        problems.push(
            "datastores: no datastore takes local_media, so uploads could not be stored".to_owned(),
        );
    }
}
