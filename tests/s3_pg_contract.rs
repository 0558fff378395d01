//! The contract of the core API with metadata in a real PostgreSQL (started
//! by the tests, one cluster for this binary, a database per server) and
//! the S3 datastore on a real S3 server: the same test modules as the sled
//! runs; the name starts with `s3_` and contains `pg_`, so
//! `common::backend()` picks S3 and `common::database()` PostgreSQL.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
// Each included module brings its own `mod common;`, exactly as when it is
// built as a test binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "admin.rs"]
mod admin;
#[path = "admin_bulk.rs"]
mod admin_bulk;
#[path = "async_upload.rs"]
mod async_upload;
#[path = "s3_direct_uploads.rs"]
mod direct_uploads;
#[path = "errors.rs"]
mod errors;
#[path = "federation.rs"]
mod federation;
#[path = "quotas.rs"]
mod quotas;
#[path = "retention.rs"]
mod retention;
#[path = "thumbnails.rs"]
mod thumbnails;
#[path = "upload_download.rs"]
mod upload_download;
