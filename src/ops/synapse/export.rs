//! `mxmedia export synapse`: every stored media item and still thumbnail
//! written in Synapse's file layout under a media store directory, and the
//! rows of Synapse's media tables (≥ 1.128: with `authenticated` and
//! `sha256`) as one SQL transaction that SQLite and PostgreSQL both run, so
//! an admin can go back to Synapse's own media repository. Rows that exist
//! already are left alone (`ON CONFLICT DO NOTHING`), and files already
//! written with the right size are not written again: an interrupted export
//! is simply run again.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::sharded;
use crate::{
    ids::MediaKey,
    media::{
        MediaError, MediaService,
        ports::{MediaRecord, Origin, ThumbRecord, ThumbSize},
    },
    storage::ByteStream,
};

const PAGE: usize = 500;

/// Where to write.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynapseExport {
    /// The media store directory to fill (Synapse's `media_store_path`).
    pub media_store: PathBuf,
    /// The SQL file to write.
    pub sql: PathBuf,
}

/// What an export run wrote.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportReport {
    pub local: u64,
    pub remote: u64,
    pub thumbnails: u64,
    /// Bytes of media and thumbnails written by this run.
    pub bytes: u64,
    /// Files found complete from an earlier run, not written again.
    pub already_there: u64,
    /// Items left out, with why (an id Synapse's layout cannot hold, bytes
    /// gone from the datastore).
    pub skipped: Vec<String>,
}

/// A string as an SQL literal.
fn literal(value: Option<&str>) -> String {
    value.map_or_else(
        || "NULL".to_owned(),
        |v| format!("'{}'", v.replace('\0', "").replace('\'', "''")),
    )
}

fn boolean(value: bool) -> &'static str {
    if value { "TRUE" } else { "FALSE" }
}

/// The file name Synapse gives a cached remote item: derived from its mxc,
/// so a second run writes the same file.
fn filesystem_id(key: &MediaKey) -> String {
    let digest = sha2::Sha256::digest(format!("{}/{}", key.server, key.id));
    hex::encode(&digest[..12])
}

/// Synapse's name for a thumbnailing method.
fn method(size: &ThumbSize) -> &'static str {
    if size.crop { "crop" } else { "scale" }
}

/// Synapse's name for a thumbnail file: `{w}-{h}-{top}-{sub}-{method}`.
fn thumbnail_name(record: &ThumbRecord, size: &ThumbSize) -> Option<String> {
    let (top, sub) = record.content_type.split_once('/')?;
    let method = method(size);
    let name = format!("{}-{}-{top}-{sub}-{method}", record.width, record.height);
    (!name.contains(['/', '\\', '\0'])).then_some(name)
}

/// Writes `body` to `path` through a temporary file, unless a file of
/// `size` bytes is there already; whether it wrote.
async fn write_file(path: &Path, size: u64, body: ByteStream) -> std::io::Result<bool> {
    if tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.len() == size)
    {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let partial = path.with_extension("mxmedia-partial");
    let mut file = tokio::fs::File::create(&partial).await?;
    let mut body = body;
    while let Some(chunk) = body.try_next().await? {
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, path).await?;
    Ok(true)
}

/// The SQL file, written as the export goes (memory stays flat however
/// many rows), under a temporary name until it is complete.
struct SqlOut {
    file: tokio::io::BufWriter<tokio::fs::File>,
    partial: PathBuf,
}

impl SqlOut {
    async fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let partial = path.with_extension("mxmedia-partial");
        let file = tokio::fs::File::create(&partial).await?;
        Ok(Self {
            file: tokio::io::BufWriter::new(file),
            partial,
        })
    }

    async fn line(&mut self, line: &str) -> Result<(), MediaError> {
        let written = async {
            self.file.write_all(line.as_bytes()).await?;
            self.file.write_all(b"\n").await
        };
        written
            .await
            .map_err(|e| MediaError::Invalid(format!("writing the SQL file: {e}")))
    }

    async fn finish(mut self, path: &Path) -> std::io::Result<()> {
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        tokio::fs::rename(&self.partial, path).await
    }
}

impl SynapseExport {
    /// Runs the export; `progress` hears the report after every page.
    pub async fn run(
        &self,
        media: &MediaService,
        mut progress: impl FnMut(&ExportReport),
    ) -> Result<ExportReport, MediaError> {
        let mut report = ExportReport::default();
        let io = |e: std::io::Error| MediaError::Invalid(format!("{}: {e}", self.sql.display()));
        let mut sql = SqlOut::create(&self.sql).await.map_err(io)?;
        sql.line("-- Synapse's media tables, written by mxmedia export synapse.\nBEGIN;")
            .await?;
        let mut after = None;
        loop {
            let page = media.next_media_page(&mut after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for (key, record) in &page {
                self.export_media(media, key, record, &mut sql, &mut report)
                    .await?;
            }
            progress(&report);
        }
        let mut after = None;
        loop {
            let page = media.thumbnail_page(&mut after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for (key, size, record) in &page {
                self.export_thumbnail(media, key, size, record, &mut sql, &mut report)
                    .await?;
            }
            progress(&report);
        }
        sql.line("COMMIT;").await?;
        sql.finish(&self.sql).await.map_err(io)?;
        Ok(report)
    }

    /// The directory and file of `key` in Synapse's layout.
    fn media_path(&self, key: &MediaKey, record: &MediaRecord) -> Option<PathBuf> {
        match record.origin {
            Origin::Local => sharded(&self.media_store.join("local_content"), key.id.as_str()),
            Origin::Remote => sharded(
                &self
                    .media_store
                    .join("remote_content")
                    .join(key.server.as_str()),
                &filesystem_id(key),
            ),
        }
    }

    async fn export_media(
        &self,
        media: &MediaService,
        key: &MediaKey,
        record: &MediaRecord,
        sql: &mut SqlOut,
        report: &mut ExportReport,
    ) -> Result<(), MediaError> {
        let Some(path) = self.media_path(key, record) else {
            report
                .skipped
                .push(format!("{key}: an id Synapse's file layout cannot hold"));
            return Ok(());
        };
        let Some((_, body)) = media.read_media(key).await? else {
            report.skipped.push(format!("{key}: its bytes are gone"));
            return Ok(());
        };
        let io = |e: std::io::Error| MediaError::Invalid(format!("{}: {e}", path.display()));
        if write_file(&path, record.size, body).await.map_err(io)? {
            report.bytes += record.size;
        } else {
            report.already_there += 1;
        }
        let common = format!(
            "{}, {}, {}, {}, {}, {}, {}, {}",
            literal(Some(&record.content_type)),
            record.size,
            record.created.0,
            literal(record.upload_name.as_deref()),
            record.last_access.unwrap_or(record.created).0,
            literal(record.quarantined_by.as_deref()),
            boolean(record.requires_auth),
            literal(Some(&record.sha256.to_hex())),
        );
        match record.origin {
            Origin::Local => {
                report.local += 1;
                let line = format!(
                    "INSERT INTO local_media_repository (media_type, media_length, created_ts, upload_name, last_access_ts, quarantined_by, authenticated, sha256, media_id, user_id, safe_from_quarantine) VALUES ({common}, {}, {}, {}) ON CONFLICT DO NOTHING;",
                    literal(Some(key.id.as_str())),
                    literal(record.uploader.as_deref()),
                    boolean(record.protected),
                );
                sql.line(&line).await?;
            }
            Origin::Remote => {
                report.remote += 1;
                let line = format!(
                    "INSERT INTO remote_media_cache (media_type, media_length, created_ts, upload_name, last_access_ts, quarantined_by, authenticated, sha256, media_origin, media_id, filesystem_id) VALUES ({common}, {}, {}, {}) ON CONFLICT DO NOTHING;",
                    literal(Some(key.server.as_str())),
                    literal(Some(key.id.as_str())),
                    literal(Some(&filesystem_id(key))),
                );
                sql.line(&line).await?;
            }
        }
        Ok(())
    }

    async fn export_thumbnail(
        &self,
        media: &MediaService,
        key: &MediaKey,
        size: &ThumbSize,
        record: &ThumbRecord,
        sql: &mut SqlOut,
        report: &mut ExportReport,
    ) -> Result<(), MediaError> {
        // Synapse keeps animated thumbnails under the same names as still
        // ones; it makes them again on request.
        if size.animated {
            return Ok(());
        }
        let local = key.server == *media.server_name();
        let (base, id) = if local {
            (
                self.media_store.join("local_thumbnails"),
                key.id.to_string(),
            )
        } else {
            (
                self.media_store
                    .join("remote_thumbnail")
                    .join(key.server.as_str()),
                filesystem_id(key),
            )
        };
        let (Some(dir), Some(name)) = (sharded(&base, &id), thumbnail_name(record, size)) else {
            report.skipped.push(format!(
                "{key}: a thumbnail Synapse's file layout cannot hold"
            ));
            return Ok(());
        };
        let Some(body) = media.read_thumbnail(key, size).await? else {
            return Ok(());
        };
        let path = dir.join(name);
        let io = |e: std::io::Error| MediaError::Invalid(format!("{}: {e}", path.display()));
        if write_file(&path, record.size, body).await.map_err(io)? {
            report.bytes += record.size;
        } else {
            report.already_there += 1;
        }
        report.thumbnails += 1;
        let columns = format!(
            "{}, {}, {}, {}, {}",
            record.width,
            record.height,
            literal(Some(&record.content_type)),
            literal(Some(method(size))),
            record.size
        );
        let line = if local {
            format!(
                "INSERT INTO local_media_repository_thumbnails (thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length, media_id) VALUES ({columns}, {}) ON CONFLICT DO NOTHING;",
                literal(Some(key.id.as_str())),
            )
        } else {
            format!(
                "INSERT INTO remote_media_cache_thumbnails (thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method, thumbnail_length, media_origin, media_id, filesystem_id) VALUES ({columns}, {}, {}, {}) ON CONFLICT DO NOTHING;",
                literal(Some(key.server.as_str())),
                literal(Some(key.id.as_str())),
                literal(Some(&filesystem_id(key))),
            )
        };
        sql.line(&line).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_literals_are_quoted_and_nul_free() {
        assert_eq!(literal(None), "NULL");
        assert_eq!(literal(Some("it's")), "'it''s'");
        assert_eq!(literal(Some("a\0b';--")), "'ab'';--'");
    }

    #[test]
    fn remote_file_ids_are_stable_and_shard() {
        let key = MediaKey::parse("other.example", "abcDEF123").unwrap();
        assert_eq!(filesystem_id(&key), filesystem_id(&key));
        assert_eq!(filesystem_id(&key).len(), 24);
        assert!(sharded(Path::new("/x"), &filesystem_id(&key)).is_some());
    }
}
