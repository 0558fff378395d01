//! Rule 2 on the S3 datastore: the flat-memory test of `memory.rs`, run
//! against a real S3 server in this process (multipart in 8 MiB parts). Its
//! own binary, so peak RSS belongs to this test alone.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::duplicate_mod)]

#[path = "memory.rs"]
mod memory;
