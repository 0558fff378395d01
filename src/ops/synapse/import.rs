//! `mxmedia import synapse`: media from Synapse's `media_store` and its
//! database (SQLite file or PostgreSQL URL, read only), imported through the
//! core's import use case. Local media and cached remote media, with their
//! ids, types, names, uploaders, times, quarantine, protection and the
//! freeze rule; each file's SHA-256 is checked against the one Synapse
//! recorded (Synapse ≥ 1.128). Items already here are skipped without
//! reading their file, so an interrupted import is simply run again, and a
//! run after Synapse received more uploads imports only the new ones.
//! Thumbnails are made again by mxmedia's own pipeline as each image
//! arrives (Synapse's own are not copied: their sizes and keys follow
//! Synapse's configuration, not ours). `verify` reads every item back from
//! the datastore it landed in.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row, any::AnyRow};

use super::{columns, database_url, flag, millis, sharded, text};
use crate::{
    ids::{MediaKey, Sha256Digest, UnixMillis},
    media::{ImportItem, Imported, MediaError, MediaService, Verified, ports::Origin},
    storage::file_stream,
};

/// Rows read per database round trip.
const PAGE: i64 = 500;
/// Items imported at once.
const IN_FLIGHT: usize = 8;

/// What to import from where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynapseImport {
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// A SQLite database file, or a `postgres://` URL.
    pub database: String,
    /// Read every item (imported now or before) back from its datastore
    /// and compare its digest.
    #[serde(default)]
    pub verify: bool,
    /// Do not make thumbnails of imported images now (they are then made
    /// on request).
    #[serde(default)]
    pub skip_thumbnails: bool,
}

/// What an import run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows in Synapse's media tables when the run started.
    pub total: u64,
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
    /// Thumbnails made of imported images.
    pub thumbnails_made: u64,
    /// Items read back intact from their datastore (with `verify`).
    pub verified: u64,
    /// Items whose read-back failed, with what was found.
    pub verify_failed: Vec<String>,
}

impl ImportReport {
    /// Rows dealt with so far, whatever became of them.
    pub fn done(&self) -> u64 {
        self.local
            + self.remote
            + self.already_here
            + self.skipped_url_cache
            + self.missing_files.len() as u64
            + self.failed.len() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Synapse's database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// The report and how often the caller hears of it.
struct Tracker<F> {
    report: ImportReport,
    progress: F,
    last: Instant,
}

impl<F: FnMut(&ImportReport)> Tracker<F> {
    /// Tells the caller, at most a few times a second.
    fn tick(&mut self) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            (self.progress)(&self.report);
        }
    }
}

const PROGRESS_EVERY: Duration = Duration::from_millis(250);

impl SynapseImport {
    /// Runs the import; `progress` hears the report a few times a second.
    pub async fn run(
        &self,
        media: &MediaService,
        progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport, ImportError> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&database_url(&self.database))
            .await?;
        let mut tracker = Tracker {
            report: ImportReport::default(),
            progress,
            last: Instant::now(),
        };
        for table in ["local_media_repository", "remote_media_cache"] {
            let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table}"
            )))
            .fetch_one(&pool)
            .await?
            .try_get("n")?;
            tracker.report.total += u64::try_from(count).unwrap_or(0);
        }
        (tracker.progress)(&tracker.report);
        self.import_local(&pool, media, &mut tracker).await?;
        self.import_remote(&pool, media, &mut tracker).await?;
        pool.close().await;
        let report = &mut tracker.report;
        report.missing_files.sort();
        report.failed.sort();
        report.verify_failed.sort();
        (tracker.progress)(&tracker.report);
        Ok(tracker.report)
    }

    async fn import_local<F: FnMut(&ImportReport)>(
        &self,
        pool: &AnyPool,
        media: &MediaService,
        tracker: &mut Tracker<F>,
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
            let mut jobs = Vec::with_capacity(rows.len());
            for row in &rows {
                let id = text(row, "media_id").unwrap_or_default();
                if text(row, "url_cache").is_some() {
                    tracker.report.skipped_url_cache += 1;
                    continue;
                }
                let key = MediaKey::parse(media.server_name().as_str(), &id);
                let (Ok(key), Some(path)) = (key, sharded(&dir, &id)) else {
                    tracker
                        .report
                        .failed
                        .push(format!("{id}: not a media id mxmedia accepts"));
                    continue;
                };
                jobs.push((item_of(row, key, Origin::Local), path));
            }
            self.import_page(media, jobs, tracker).await?;
        }
    }

    async fn import_remote<F: FnMut(&ImportReport)>(
        &self,
        pool: &AnyPool,
        media: &MediaService,
        tracker: &mut Tracker<F>,
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
            let mut jobs = Vec::with_capacity(rows.len());
            for row in &rows {
                let server = text(row, "media_origin").unwrap_or_default();
                let media_id = text(row, "media_id").unwrap_or_default();
                let file_id = text(row, "filesystem_id").unwrap_or_default();
                let dir = self.media_store.join("remote_content").join(&server);
                let key = MediaKey::parse(&server, &media_id);
                let (Ok(key), Some(path), false) =
                    (key, sharded(&dir, &file_id), server.contains(['/', '\\']))
                else {
                    tracker.report.failed.push(format!(
                        "{server}/{media_id}: not a media id mxmedia accepts"
                    ));
                    continue;
                };
                jobs.push((item_of(row, key, Origin::Remote), path));
            }
            self.import_page(media, jobs, tracker).await?;
        }
    }

    /// Imports one page's items, a few at a time (their writes and
    /// fsyncs overlap), folding each outcome into the report as it ends.
    async fn import_page<F: FnMut(&ImportReport)>(
        &self,
        media: &MediaService,
        jobs: Vec<(ImportItem, PathBuf)>,
        tracker: &mut Tracker<F>,
    ) -> Result<(), ImportError> {
        let mut outcomes = futures::stream::iter(jobs)
            .map(|(item, path)| self.import_one(media, item, path))
            .buffer_unordered(IN_FLIGHT);
        while let Some(done) = outcomes.next().await {
            let (key, outcome, verified) = done?;
            let report = &mut tracker.report;
            match outcome {
                Outcome::AlreadyHere => report.already_here += 1,
                Outcome::Stored {
                    size,
                    origin,
                    thumbnails,
                } => {
                    report.bytes += size;
                    report.thumbnails_made += thumbnails;
                    match origin {
                        Origin::Local => report.local += 1,
                        Origin::Remote => report.remote += 1,
                    }
                }
                Outcome::Missing => report.missing_files.push(key.to_string()),
                Outcome::Failed(why) => report.failed.push(why),
            }
            match verified {
                None => {}
                Some(Verified::Intact) => report.verified += 1,
                Some(other) => report.verify_failed.push(format!("{key}: {other:?}")),
            }
            tracker.tick();
        }
        Ok(())
    }

    /// One item: what became of it, and its read-back with `verify`.
    async fn import_one(
        &self,
        media: &MediaService,
        item: ImportItem,
        path: PathBuf,
    ) -> Result<(MediaKey, Outcome, Option<Verified>), ImportError> {
        let (key, expected, origin) = (item.key.clone(), item.sha256, item.origin);
        // Checked before the file is opened, so a resumed run reads nothing
        // it already imported.
        let outcome = if media.is_stored(&key).await? {
            Outcome::AlreadyHere
        } else {
            match std::fs::File::open(&path) {
                Ok(file) => {
                    let len = file.metadata().map_or(0, |m| m.len());
                    match media.import(item, file_stream(file, 0..len)).await {
                        Ok(Imported::Stored { size, .. }) => Outcome::Stored {
                            size,
                            origin,
                            thumbnails: if self.skip_thumbnails {
                                0
                            } else {
                                media.pregenerate_now(&key).await as u64
                            },
                        },
                        Ok(Imported::AlreadyHere) => Outcome::AlreadyHere,
                        Err(MediaError::Invalid(why)) => Outcome::Failed(why),
                        Err(other) => return Err(other.into()),
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Outcome::Missing,
                Err(error) => Outcome::Failed(format!("{key}: {error}")),
            }
        };
        let stored = matches!(outcome, Outcome::AlreadyHere | Outcome::Stored { .. });
        let verified = if stored && self.verify {
            Some(media.verify_stored(&key, expected).await?)
        } else {
            None
        };
        Ok((key, outcome, verified))
    }
}

/// What became of one row.
enum Outcome {
    AlreadyHere,
    Stored {
        size: u64,
        origin: Origin,
        thumbnails: u64,
    },
    /// Its file is not in the media store.
    Missing,
    Failed(String),
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
