//! mxmedia: a media repository for Matrix homeservers.
//!
//! One application core, [`media`], owns every use case; the edges (`http`,
//! the control socket, the CLI, background jobs) call it, and it reaches
//! metadata and other servers through the ports in [`media::ports`], which
//! `repo` and `federation` implement. `storage`, `cache` and `thumbnail`
//! sit below it; `config` and `ids` are shared by all. See
//! docs/architecture.md. Tests start the real application through
//! [`app::Server`].

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub mod homeserver;
pub mod http;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod multipart;
pub mod net;
pub mod ops;
pub mod preview;
pub mod repo;
pub mod storage;
pub mod telemetry;
pub mod thumbnail;
