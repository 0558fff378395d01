//! mxmedia: a media repository for Matrix homeservers.
//!
//! Layers point down only: `http -> {auth, media} -> {storage, repo}`, with
//! `config` and `ids` shared by all; see DESIGN.md. Tests start the real
//! application through [`app::Server`].

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod federation;
pub mod http;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod multipart;
pub mod net;
pub mod ops;
pub mod repo;
pub mod storage;
pub mod telemetry;
pub mod thumbnail;
