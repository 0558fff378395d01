//! URL previews against a web site on loopback (allowed by the test config
//! only): ordinary pages written for the tests (an article, a video page
//! with oEmbed discovery, a page with only a title, images, charsets) in
//! `pages.rs`, and hostile ones (redirects into private and metadata
//! addresses, endless and huge bodies, a zip bomb, decompression-bomb and
//! oversized images, oEmbed garbage, denied URLs) in `attacks.rs`.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/process.rs"]
mod process;

mod attacks;
mod pages;
mod site;

use std::time::Duration;

use common::*;
use mxmedia::config::{Config, OEmbedConfig, OEmbedProvider, UrlPreviewConfig};
use serde_json::Value;

/// Previews on, loopback allowed, small budgets, one oEmbed provider on
/// the site, `/denied/` URLs denied, no rate limit.
pub fn previews_on(config: &mut Config, site: &site::Site) {
    config.url_previews = UrlPreviewConfig {
        enabled: true,
        allowed_private_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        url_deny: vec!["/denied(/|$)".to_owned()],
        max_page_size: bytesize::ByteSize::kib(256),
        max_image_size: bytesize::ByteSize::mib(1),
        timeout: Duration::from_secs(5),
        oembed: OEmbedConfig {
            providers: vec![OEmbedProvider {
                name: "Loop".to_owned(),
                urls: vec![site.url("/watch*")],
                endpoint: site.url("/provider-oembed"),
            }],
            discovery: true,
        },
        ..UrlPreviewConfig::default()
    };
    config.rate_limits.previews = None;
}

/// `GET /_matrix/client/v1/media/preview_url?url=…` as Alice.
pub async fn preview(t: &TestServer, url: &str) -> reqwest::Response {
    t.http
        .get(t.url("/_matrix/client/v1/media/preview_url"))
        .query(&[("url", url)])
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

/// A preview that must succeed; its JSON.
pub async fn preview_ok(t: &TestServer, url: &str) -> Value {
    let resp = preview(t, url).await;
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}
