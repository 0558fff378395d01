//! `mxmedia import synapse`: media from Synapse's `media_store` and its
//! database (SQLite file or PostgreSQL URL, read only), imported through the
//! core's import use case. Local media and cached remote media, with their
//! ids, types, names, uploaders, times, quarantine, protection and the
//! freeze rule; each file's SHA-256 is checked against the one Synapse
//! recorded (Synapse ≥ 1.128). Items already here are skipped without
//! reading their file, so an interrupted import is simply run again, and a
//! run after Synapse received more uploads imports only the new ones.
//! Thumbnails are not carried: mxmedia makes them again on request.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row, any::AnyRow};

use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::{ImportItem, Imported, MediaError, MediaService, ports::Origin},
    storage::file_stream,
};

/// Rows read per database round trip.
const PAGE: i64 = 500;

/// What to import from where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynapseImport {
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// A SQLite database file, or a `postgres://` URL.
    pub database: String,
}

/// What an import run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    pub local: u64,
    pub remote: u64,
    pub bytes: u64,
    /// Items already here (an earlier run): skipped unread.
    pub already_here: u64,
    /// URL-preview cache entries, not imported (previews are fetched again).
    pub skipped_url_cache: u64,
    /// Rows whose file is missing from the media store.
    pub missing_files: Vec<String>,
    /// Rows that could not be imported, with why.
    pub failed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Synapse's database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// The connection URL of `database`: a URL as given, a file path as SQLite
/// opened read-only.
fn database_url(database: &str) -> String {
    if database.contains("://") {
        database.to_owned()
    } else {
        format!("sqlite://{database}?mode=ro")
    }
}

fn text(row: &AnyRow, column: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(column).ok().flatten()
}

fn number(row: &AnyRow, column: &str) -> Option<i64> {
    row.try_get::<Option<i64>, _>(column).ok().flatten()
}

/// A boolean column, stored as a boolean (PostgreSQL) or an integer (SQLite);
/// false when the column does not exist in this Synapse version.
fn flag(row: &AnyRow, column: &str) -> bool {
    row.try_get::<Option<bool>, _>(column)
        .ok()
        .flatten()
        .or_else(|| number(row, column).map(|n| n != 0))
        .unwrap_or(false)
}

fn millis(row: &AnyRow, column: &str) -> Option<UnixMillis> {
    number(row, column)
        .and_then(|n| u64::try_from(n).ok())
        .map(UnixMillis)
}

/// Synapse's file layout: `aa/bb/rest` of an id under `dir`.
fn sharded(dir: &Path, id: &str) -> Option<PathBuf> {
    let (a, b, rest) = (id.get(0..2)?, id.get(2..4)?, id.get(4..)?);
    if rest.is_empty()
        || [a, b, rest]
            .iter()
            .any(|p| p.contains(['/', '\\']) || p.contains(".."))
    {
        return None;
    }
    Some(dir.join(a).join(b).join(rest))
}

/// Whether `table` has `column` (columns were added across Synapse
/// versions: `authenticated` in 1.111, `sha256` in 1.128).
async fn has_column(pool: &AnyPool, table: &str, column: &str) -> bool {
    // Built from this file's constant table and column names only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {column} FROM {table} LIMIT 1"
    )))
    .fetch_all(pool)
    .await
    .is_ok()
}

/// The columns read from `table`: `always`, plus the optional ones this
/// Synapse has. Booleans are read as integers (both engines agree on those).
async fn columns(pool: &AnyPool, table: &str, always: &str) -> String {
    let mut out = always.to_owned();
    if has_column(pool, table, "authenticated").await {
        out.push_str(", CAST(authenticated AS INTEGER) AS authenticated");
    }
    if has_column(pool, table, "sha256").await {
        out.push_str(", sha256");
    }
    out
}

impl SynapseImport {
    /// Runs the import; `progress` hears the report after every page.
    pub async fn run(
        &self,
        media: &MediaService,
        mut progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport, ImportError> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&database_url(&self.database))
            .await?;
        let mut report = ImportReport::default();
        self.import_local(&pool, media, &mut report, &mut progress)
            .await?;
        self.import_remote(&pool, media, &mut report, &mut progress)
            .await?;
        pool.close().await;
        Ok(report)
    }

    async fn import_local(
        &self,
        pool: &AnyPool,
        media: &MediaService,
        report: &mut ImportReport,
        progress: &mut impl FnMut(&ImportReport),
    ) -> Result<(), ImportError> {
        let dir = self.media_store.join("local_content");
        let table = "local_media_repository";
        let select = columns(pool, table, "media_id, media_type, created_ts, upload_name, user_id, quarantined_by, url_cache, last_access_ts, CAST(safe_from_quarantine AS INTEGER) AS safe_from_quarantine").await;
        let query =
            format!("SELECT {select} FROM {table} WHERE media_id > $1 ORDER BY media_id LIMIT $2");
        let mut after = String::new();
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
                .bind(after.clone())
                .bind(PAGE)
                .fetch_all(pool)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = text(last, "media_id").unwrap_or_default();
            for row in &rows {
                let id = text(row, "media_id").unwrap_or_default();
                if text(row, "url_cache").is_some() {
                    report.skipped_url_cache += 1;
                    continue;
                }
                let key = MediaKey::parse(media.server_name().as_str(), &id);
                let (Ok(key), Some(path)) = (key, sharded(&dir, &id)) else {
                    report
                        .failed
                        .push(format!("{id}: not a media id mxmedia accepts"));
                    continue;
                };
                let item = item_of(row, key, Origin::Local);
                self.import_one(media, item, &path, report).await?;
            }
            progress(report);
        }
    }

    async fn import_remote(
        &self,
        pool: &AnyPool,
        media: &MediaService,
        report: &mut ImportReport,
        progress: &mut impl FnMut(&ImportReport),
    ) -> Result<(), ImportError> {
        let table = "remote_media_cache";
        let select = columns(pool, table, "media_origin, media_id, media_type, created_ts, upload_name, filesystem_id, last_access_ts, quarantined_by").await;
        let query = format!(
            "SELECT {select} FROM {table} WHERE media_origin > $1 OR (media_origin = $2 AND media_id > $3) ORDER BY media_origin, media_id LIMIT $4"
        );
        let (mut origin, mut id) = (String::new(), String::new());
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
                .bind(origin.clone())
                .bind(origin.clone())
                .bind(id.clone())
                .bind(PAGE)
                .fetch_all(pool)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            origin = text(last, "media_origin").unwrap_or_default();
            id = text(last, "media_id").unwrap_or_default();
            for row in &rows {
                let server = text(row, "media_origin").unwrap_or_default();
                let media_id = text(row, "media_id").unwrap_or_default();
                let file_id = text(row, "filesystem_id").unwrap_or_default();
                let dir = self.media_store.join("remote_content").join(&server);
                let key = MediaKey::parse(&server, &media_id);
                let (Ok(key), Some(path), false) =
                    (key, sharded(&dir, &file_id), server.contains(['/', '\\']))
                else {
                    report.failed.push(format!(
                        "{server}/{media_id}: not a media id mxmedia accepts"
                    ));
                    continue;
                };
                let item = item_of(row, key, Origin::Remote);
                self.import_one(media, item, &path, report).await?;
            }
            progress(report);
        }
    }

    async fn import_one(
        &self,
        media: &MediaService,
        item: ImportItem,
        path: &Path,
        report: &mut ImportReport,
    ) -> Result<(), ImportError> {
        // Checked before the file is opened, so a resumed run reads nothing
        // it already imported.
        if media.is_stored(&item.key).await? {
            report.already_here += 1;
            return Ok(());
        }
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                report.missing_files.push(item.key.to_string());
                return Ok(());
            }
            Err(error) => {
                report.failed.push(format!("{}: {error}", item.key));
                return Ok(());
            }
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let origin = item.origin;
        match media.import(item, file_stream(file, 0..len)).await {
            Ok(Imported::Stored { size, .. }) => {
                report.bytes += size;
                match origin {
                    Origin::Local => report.local += 1,
                    Origin::Remote => report.remote += 1,
                }
            }
            Ok(Imported::AlreadyHere) => report.already_here += 1,
            Err(MediaError::Invalid(why)) => report.failed.push(why),
            Err(other) => return Err(other.into()),
        }
        Ok(())
    }
}

/// The import item of a `local_media_repository` or `remote_media_cache` row.
fn item_of(row: &AnyRow, key: MediaKey, origin: Origin) -> ImportItem {
    ImportItem {
        key,
        origin,
        content_type: text(row, "media_type")
            .filter(|t| t.parse::<mime::Mime>().is_ok())
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        upload_name: text(row, "upload_name").and_then(|n| crate::media::clean_filename(&n)),
        uploader: text(row, "user_id"),
        created: millis(row, "created_ts").unwrap_or_else(UnixMillis::now),
        last_access: millis(row, "last_access_ts"),
        quarantined_by: text(row, "quarantined_by"),
        protected: flag(row, "safe_from_quarantine"),
        requires_auth: flag(row, "authenticated"),
        sha256: text(row, "sha256").and_then(|h| Sha256Digest::try_from(h).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_paths_are_sharded_and_safe() {
        let dir = Path::new("/store/local_content");
        assert_eq!(
            sharded(dir, "abcdefghijkl"),
            Some(PathBuf::from("/store/local_content/ab/cd/efghijkl"))
        );
        for bad in ["abc", "abcd", "ab/cdefg", "ab..cdefg", "abcd..x"] {
            assert_eq!(sharded(dir, bad), None, "{bad}");
        }
        assert_eq!(
            database_url("/var/lib/synapse/homeserver.db"),
            "sqlite:///var/lib/synapse/homeserver.db?mode=ro"
        );
        assert_eq!(
            database_url("postgres://synapse@localhost/synapse"),
            "postgres://synapse@localhost/synapse"
        );
    }
}
