//! `url_previews:`: link previews (`/preview_url`), off by default. Every
//! fetch goes through the same address guard as federation; these settings
//! add which URLs may be previewed and the budgets of one preview.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// URL previews: what may be fetched, and what one preview may spend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    /// Serve `/preview_url`. Default false (404 `M_UNRECOGNIZED`, as
    /// Synapse without `url_preview_enabled`).
    pub enabled: bool,
    /// Regular expressions over the whole URL: when any is given, only
    /// URLs matching one are previewed. Default: none (every URL).
    pub url_allow: Vec<String>,
    /// Regular expressions over the whole URL that are never previewed,
    /// checked after `url_allow`, for the page, its redirects, its image
    /// and its oEmbed endpoint alike. Default: none.
    pub url_deny: Vec<String>,
    /// Address ranges (CIDR) previews may reach although they are not
    /// public. Loopback, private, link-local, metadata and the like are
    /// refused otherwise, whatever the URL says. Default: none.
    pub allowed_private_ranges: Vec<ipnet::IpNet>,
    /// The `User-Agent` of preview fetches. Default `mxmedia/<version>
    /// (URL previews)`.
    pub user_agent: String,
    /// The `Accept-Language` of preview fetches. Default `en`.
    pub accept_language: Vec<String>,
    /// Bytes of one page read at most; the parse stops there. Default 10MiB
    /// (Synapse's `max_spider_size`).
    pub max_page_size: ByteSize,
    /// Largest image stored for a preview (`og:image`, or an image URL
    /// itself). Default 10MiB.
    pub max_image_size: ByteSize,
    /// One fetch, connection to last byte. Default 10s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Redirects followed at most, each one checked. Default 5.
    pub max_redirects: usize,
    /// How long a preview is served from the cache. Default 1h.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long a failed preview is remembered. Default 1m.
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// Previews kept in the cache at most. Default 10000.
    pub cache_entries: u64,
    /// Previews fetched at once; more wait. Default 8.
    pub concurrency: usize,
    /// oEmbed providers asked instead of scraping the page.
    pub oembed: OEmbedConfig,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url_allow: Vec::new(),
            url_deny: Vec::new(),
            allowed_private_ranges: Vec::new(),
            user_agent: concat!("mxmedia/", env!("CARGO_PKG_VERSION"), " (URL previews)")
                .to_owned(),
            accept_language: vec!["en".to_owned()],
            max_page_size: ByteSize::mib(10),
            max_image_size: ByteSize::mib(10),
            timeout: Duration::from_secs(10),
            max_redirects: 5,
            cache_ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(60),
            cache_entries: 10_000,
            concurrency: 8,
            oembed: OEmbedConfig::default(),
        }
    }
}

/// oEmbed: for URLs of a listed provider the provider's endpoint is asked
/// (through the same guard and patterns); pages elsewhere that link an
/// oEmbed endpoint are followed when `discovery` is on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OEmbedConfig {
    /// Default: `YouTube`, Twitter/X, Vimeo, `SoundCloud`, Flickr.
    pub providers: Vec<OEmbedProvider>,
    /// Follow `<link rel="alternate" type="application/json+oembed">` of
    /// any page. Default true.
    pub discovery: bool,
}

/// One oEmbed provider: URL patterns (`*` matches anything) and its
/// endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OEmbedProvider {
    pub name: String,
    pub urls: Vec<String>,
    pub endpoint: String,
}

impl Default for OEmbedConfig {
    fn default() -> Self {
        let provider = |name: &str, urls: &[&str], endpoint: &str| OEmbedProvider {
            name: name.to_owned(),
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            endpoint: endpoint.to_owned(),
        };
        Self {
            providers: vec![
                provider(
                    "YouTube",
                    &[
                        "https://*.youtube.com/watch*",
                        "https://*.youtube.com/shorts/*",
                        "https://youtu.be/*",
                    ],
                    "https://www.youtube.com/oembed",
                ),
                provider(
                    "Twitter",
                    &[
                        "https://twitter.com/*/status/*",
                        "https://*.twitter.com/*/status/*",
                        "https://x.com/*/status/*",
                    ],
                    "https://publish.twitter.com/oembed",
                ),
                provider(
                    "Vimeo",
                    &["https://vimeo.com/*"],
                    "https://vimeo.com/api/oembed.json",
                ),
                provider(
                    "SoundCloud",
                    &["https://soundcloud.com/*"],
                    "https://soundcloud.com/oembed",
                ),
                provider(
                    "Flickr",
                    &["https://*.flickr.com/photos/*", "https://flic.kr/p/*"],
                    "https://www.flickr.com/services/oembed/",
                ),
            ],
            discovery: true,
        }
    }
}

/// Problems in this section, for `Config::problems`.
pub(super) fn check(config: &UrlPreviewConfig, problems: &mut Vec<String>) {
    for (field, patterns) in [
        ("url_allow", &config.url_allow),
        ("url_deny", &config.url_deny),
    ] {
        for pattern in patterns {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!("url_previews.{field}: {pattern:?}: {e}"));
            }
        }
    }
    if config.max_page_size.as_u64() == 0 || config.max_image_size.as_u64() == 0 {
        problems.push(
            "url_previews.max_page_size, url_previews.max_image_size: must be greater than zero"
                .to_owned(),
        );
    }
    if config.timeout.is_zero() {
        problems.push("url_previews.timeout: must be greater than zero".to_owned());
    }
    if config.concurrency == 0 {
        problems.push("url_previews.concurrency: must be at least 1".to_owned());
    }
    for provider in &config.oembed.providers {
        if url::Url::parse(&provider.endpoint).is_err() {
            problems.push(format!(
                "url_previews.oembed.providers: {}: endpoint {:?} is not a URL",
                provider.name, provider.endpoint
            ));
        }
    }
}
