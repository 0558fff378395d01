//! Synapse's media store and media tables: `import` brings media in from
//! them, `export` writes them back out. Both speak Synapse's file layout
//! (`aa/bb/rest` under `local_content/` and `remote_content/{origin}/`) and
//! its tables `local_media_repository` and `remote_media_cache`.

use std::path::{Path, PathBuf};

use sqlx::{AnyPool, Row, any::AnyRow};

use crate::ids::UnixMillis;

mod export;
mod import;

pub use export::{ExportReport, SynapseExport};
pub use import::{ImportError, ImportReport, SynapseImport};

/// The connection URL of `database`: a file path as SQLite opened
/// read-only, a PostgreSQL URL with read-only transactions.
pub(super) fn database_url(database: &str) -> String {
    if !database.contains("://") {
        return format!("sqlite://{database}?mode=ro");
    }
    // PostgreSQL: every transaction of the session read-only, so nothing
    // here can write to Synapse's database, whatever the role may do.
    match url::Url::parse(database) {
        Ok(mut url) if url.scheme().starts_with("postgres") => {
            url.query_pairs_mut()
                .append_pair("options", "-c default_transaction_read_only=on");
            url.into()
        }
        _ => database.to_owned(),
    }
}

pub(super) fn text(row: &AnyRow, column: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(column).ok().flatten()
}

pub(super) fn number(row: &AnyRow, column: &str) -> Option<i64> {
    row.try_get::<Option<i64>, _>(column).ok().flatten()
}

/// A boolean column, stored as a boolean (PostgreSQL) or an integer (SQLite);
/// false when the column does not exist in this Synapse version.
pub(super) fn flag(row: &AnyRow, column: &str) -> bool {
    row.try_get::<Option<bool>, _>(column)
        .ok()
        .flatten()
        .or_else(|| number(row, column).map(|n| n != 0))
        .unwrap_or(false)
}

pub(super) fn millis(row: &AnyRow, column: &str) -> Option<UnixMillis> {
    number(row, column)
        .and_then(|n| u64::try_from(n).ok())
        .map(UnixMillis)
}

/// Synapse's file layout: `aa/bb/rest` of an id under `dir`.
pub(super) fn sharded(dir: &Path, id: &str) -> Option<PathBuf> {
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
pub(super) async fn has_column(pool: &AnyPool, table: &str, column: &str) -> bool {
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
pub(super) async fn columns(pool: &AnyPool, table: &str, always: &str) -> String {
    let mut out = always.to_owned();
    if has_column(pool, table, "authenticated").await {
        out.push_str(", CAST(authenticated AS INTEGER) AS authenticated");
    }
    if has_column(pool, table, "sha256").await {
        out.push_str(", sha256");
    }
    out
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
            database_url("postgres://synapse@localhost/synapse?sslmode=disable"),
            "postgres://synapse@localhost/synapse?sslmode=disable&options=-c+default_transaction_read_only%3Don"
        );
    }
}
