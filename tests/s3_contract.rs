//! The upload/download contract of the core API, run against the S3
//! datastore on a real S3 server (s3s-fs on 127.0.0.1, SigV4 checked): the
//! same test modules as the local runs; `common::backend()` picks S3 because
//! this binary's name starts with `s3_`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
// Each included module brings its own `mod common;`, exactly as when it is
// built as a test binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "admin.rs"]
mod admin;
#[path = "async_upload.rs"]
mod async_upload;
#[path = "durability.rs"]
mod durability;
#[path = "errors.rs"]
mod errors;
#[path = "federation.rs"]
mod federation;
#[path = "metrics.rs"]
mod metrics;
#[path = "quotas.rs"]
mod quotas;
#[path = "retention.rs"]
mod retention;
#[path = "upload_download.rs"]
mod upload_download;
