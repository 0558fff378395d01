//! Test harness, one file per component: the real mxmedia server
//! (`server.rs`), a stand-in for the homeserver's `/account/whoami`
//! (`homeserver.rs`), a real S3 server in-process (`s3.rs`), and raw socket
//! helpers (`sockets.rs`).
//!
//! The same contract tests run on both datastores and both metadata stores:
//! a test binary whose name starts with `s3_` (see `tests/s3_contract.rs`)
//! uses S3, others the local directory (`MXMEDIA_TEST_BACKEND=s3|local`
//! overrides that); one whose name contains `pg_` keeps its metadata in a
//! real PostgreSQL (`postgres.rs`), others in sled
//! (`MXMEDIA_TEST_DATABASE=postgres|sled` overrides that).
#![allow(dead_code)]

mod homeserver;
mod postgres;
mod s3;
mod server;
mod sockets;

// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use self::{homeserver::*, postgres::Postgres, s3::*, server::*, sockets::*};

/// A picture of `width` x `height` with a gradient (so it compresses like
/// a photo) in `format`; `shade` makes pictures with different bytes.
pub fn picture(width: u32, height: u32, shade: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, shade])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}
