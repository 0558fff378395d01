//! `mxmedia import mmr`: media from matrix-media-repo's export archives
//! (the gzipped tar parts its export writes: one part holds
//! `manifest.json`, version 2, which maps every `mxc://` URI to its file in
//! the parts with its upload name, type, uploader, time and SHA-256).
//! Every part is read once, streaming: an entry's bytes go straight into
//! the core's import use case and are checked against the manifest's
//! digest; ids sharing one file are stored on the same bytes without a
//! second read. Idempotent like the Synapse import: ids already here are
//! skipped without reading, so an interrupted run is simply run again.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::{ImportItem, Imported, MediaError, MediaService, ports::Origin},
    storage::ByteStream,
};

/// The manifest is read whole; a bigger one is not an export.
const MANIFEST_LIMIT: u64 = 512 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// Which archive parts to import.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmrImport {
    pub archives: Vec<PathBuf>,
}

/// What an import run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MmrReport {
    /// Whose export it is (a server name or a user id).
    pub entity: String,
    /// Ids in the manifest.
    pub total: u64,
    pub local: u64,
    pub remote: u64,
    pub bytes: u64,
    pub already_here: u64,
    /// Ids in the manifest whose file is in none of the parts given.
    pub not_in_archives: Vec<String>,
    /// Ids that could not be imported, with why.
    pub failed: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    #[serde(default)]
    entity_id: String,
    #[serde(default)]
    user_id: String,
    media: HashMap<String, Entry>,
}

#[derive(Clone, Debug, Deserialize)]
struct Entry {
    /// The upload name.
    #[serde(default)]
    name: String,
    /// The file's name inside the archive parts.
    file_name: String,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    sha256: String,
    origin: String,
    media_id: String,
    #[serde(default)]
    created_ts: i64,
    #[serde(default)]
    uploader: String,
}

/// One archive file whose bytes the reader thread is sending.
struct Incoming {
    name: String,
    body: mpsc::Receiver<std::io::Result<Bytes>>,
}

fn io_error(path: &Path, error: &std::io::Error) -> MediaError {
    MediaError::Invalid(format!("{}: {error}", path.display()))
}

/// The regular files of one gzipped tar part, in order.
fn entries(
    path: &Path,
) -> std::io::Result<tar::Archive<flate2::read::GzDecoder<std::io::BufReader<std::fs::File>>>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(file)))
}

/// The manifest of the parts at `paths` (whichever part holds it).
fn find_manifest(paths: &[PathBuf]) -> Result<Manifest, MediaError> {
    for path in paths {
        let mut archive = entries(path).map_err(|e| io_error(path, &e))?;
        for entry in archive.entries().map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            if entry.path().ok().as_deref() != Some(Path::new("manifest.json")) {
                continue;
            }
            let mut text = Vec::new();
            entry
                .take(MANIFEST_LIMIT)
                .read_to_end(&mut text)
                .map_err(|e| io_error(path, &e))?;
            let mut manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
                MediaError::Invalid(format!("{}: manifest.json: {e}", path.display()))
            })?;
            if manifest.version == 1 {
                manifest.entity_id = std::mem::take(&mut manifest.user_id);
            } else if manifest.version != 2 {
                return Err(MediaError::Invalid(format!(
                    "{}: manifest version {} (1 and 2 are known)",
                    path.display(),
                    manifest.version
                )));
            }
            return Ok(manifest);
        }
    }
    Err(MediaError::Invalid(
        "no manifest.json in the archive parts given".to_owned(),
    ))
}

/// Reads every part on a blocking thread, handing each regular file named
/// in `wanted` over as a stream. A receiver that is dropped skips the rest
/// of its file.
fn read_parts(
    paths: Vec<PathBuf>,
    wanted: &std::collections::HashSet<String>,
    files: &mpsc::Sender<Incoming>,
) -> std::io::Result<()> {
    for path in paths {
        let mut archive = entries(&path)?;
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            if !wanted.contains(&name) {
                continue;
            }
            let (tx, rx) = mpsc::channel(4);
            if files.blocking_send(Incoming { name, body: rx }).is_err() {
                return Ok(());
            }
            let mut buf = vec![0; CHUNK];
            loop {
                let chunk = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn stream_of(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ByteStream {
    use futures::StreamExt;
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed()
}

impl MmrImport {
    /// Runs the import; `progress` hears the report after every file.
    pub async fn run(
        &self,
        media: &MediaService,
        mut progress: impl FnMut(&MmrReport),
    ) -> Result<MmrReport, MediaError> {
        let paths = self.archives.clone();
        let manifest = tokio::task::spawn_blocking(move || find_manifest(&paths))
            .await
            .map_err(|_| MediaError::Internal("the manifest reader failed"))??;
        let mut report = MmrReport {
            entity: manifest.entity_id.clone(),
            total: manifest.media.len() as u64,
            ..MmrReport::default()
        };
        // Archive file name -> the ids it holds the bytes of.
        let mut by_file: HashMap<String, Vec<(MediaKey, Entry)>> = HashMap::new();
        for (mxc, entry) in manifest.media {
            match MediaKey::parse(&entry.origin, &entry.media_id) {
                Ok(key) if key.to_string() == mxc => {
                    by_file
                        .entry(entry.file_name.clone())
                        .or_default()
                        .push((key, entry));
                }
                _ => report
                    .failed
                    .push(format!("{mxc}: not the media id its record names")),
            }
        }
        let (tx, mut rx) = mpsc::channel(1);
        let paths = self.archives.clone();
        let wanted = by_file.keys().cloned().collect();
        let reader = tokio::task::spawn_blocking(move || read_parts(paths, &wanted, &tx));
        while let Some(incoming) = rx.recv().await {
            let Some(items) = by_file.remove(&incoming.name) else {
                continue;
            };
            self.import_file(media, items, stream_of(incoming.body), &mut report)
                .await?;
            progress(&report);
        }
        reader
            .await
            .map_err(|_| MediaError::Internal("the archive reader failed"))?
            .map_err(|e| MediaError::Invalid(format!("reading the archive: {e}")))?;
        for (_, items) in by_file {
            for (key, _) in items {
                if media.is_stored(&key).await? {
                    report.already_here += 1;
                } else {
                    report.not_in_archives.push(key.to_string());
                }
            }
        }
        report.not_in_archives.sort();
        Ok(report)
    }

    /// The ids one archive file holds the bytes of: the first not yet here
    /// reads them, the others share them.
    async fn import_file(
        &self,
        media: &MediaService,
        items: Vec<(MediaKey, Entry)>,
        body: ByteStream,
        report: &mut MmrReport,
    ) -> Result<(), MediaError> {
        let mut body = Some(body);
        let mut stored: Option<MediaKey> = None;
        for (key, entry) in items {
            let item = item_of(media, &key, &entry);
            let origin = item.origin;
            let outcome = if media.is_stored(&key).await? {
                Ok(Imported::AlreadyHere)
            } else if let Some(source) = &stored {
                media.import_same_bytes(item, source).await
            } else if let Some(body) = body.take() {
                media.import(item, body).await
            } else {
                Err(MediaError::Invalid(format!(
                    "{key}: its file was not read (an earlier id failed on it)"
                )))
            };
            match outcome {
                Ok(Imported::Stored {
                    size, deduplicated, ..
                }) => {
                    if !deduplicated {
                        report.bytes += size;
                    }
                    match origin {
                        Origin::Local => report.local += 1,
                        Origin::Remote => report.remote += 1,
                    }
                    stored = Some(key);
                }
                Ok(Imported::AlreadyHere) => {
                    report.already_here += 1;
                    stored.get_or_insert(key);
                }
                Err(MediaError::Invalid(why)) => report.failed.push(why),
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

fn item_of(media: &MediaService, key: &MediaKey, entry: &Entry) -> ImportItem {
    let local = key.server == *media.server_name();
    ImportItem {
        key: key.clone(),
        origin: if local { Origin::Local } else { Origin::Remote },
        content_type: Some(entry.content_type.as_str())
            .filter(|t| t.parse::<mime::Mime>().is_ok())
            .unwrap_or("application/octet-stream")
            .to_owned(),
        upload_name: crate::media::clean_filename(&entry.name),
        uploader: Some(entry.uploader.clone()).filter(|u| u.starts_with('@')),
        created: u64::try_from(entry.created_ts)
            .ok()
            .filter(|t| *t > 0)
            .map_or_else(UnixMillis::now, UnixMillis),
        last_access: None,
        quarantined_by: None,
        protected: false,
        requires_auth: false,
        sha256: Sha256Digest::try_from(entry.sha256.clone()).ok(),
    }
}
