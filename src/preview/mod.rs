//! URL previews adapter: fetches pages, oEmbed answers and images for the
//! core's preview use case. Every request, redirect and image goes through
//! the address guard (resolved addresses checked at connect time, IP
//! literals and redirects checked before they are followed) and the URL
//! patterns; bodies are read only for allowed content types, pages only up
//! to their byte cap and parsed as they arrive, everything within the
//! configured time.

mod charset;
pub mod html;
pub mod oembed;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use regex::RegexSet;
use url::Url;

use self::{
    charset::encoding_of,
    html::{Found, PageParser},
};
use crate::{
    config::UrlPreviewConfig,
    federation::{AddressGuard, GuardedResolver},
    media::ports::{Fetched, PreviewError, Previewer},
};

/// Bytes read to decide a page's encoding before parsing starts.
const SNIFF: usize = 1024;
/// Largest oEmbed answer read.
const MAX_OEMBED: usize = 256 * 1024;
/// Image types stored for previews (those thumbnails are made of).
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The configured previewer.
pub struct HttpPreviewer {
    client: reqwest::Client,
    guard: AddressGuard,
    allow: Option<RegexSet>,
    deny: RegexSet,
    providers: oembed::Providers,
    discovery: bool,
    max_page: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("url_previews: {0}")]
pub struct PreviewSetupError(String);

/// Whether `url` may be fetched: http(s), no credentials, allowed and not
/// denied by the patterns.
fn permitted(url: &Url, allow: Option<&RegexSet>, deny: &RegexSet) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.host().is_some()
        && allow.is_none_or(|a| a.is_match(url.as_str()))
        && !deny.is_match(url.as_str())
}

impl HttpPreviewer {
    pub fn new(config: &UrlPreviewConfig) -> Result<Self, PreviewSetupError> {
        let err = |e: &dyn std::fmt::Display| PreviewSetupError(e.to_string());
        let allow = if config.url_allow.is_empty() {
            None
        } else {
            Some(RegexSet::new(&config.url_allow).map_err(|e| err(&e))?)
        };
        let deny = RegexSet::new(&config.url_deny).map_err(|e| err(&e))?;
        let guard = AddressGuard::new(&config.allowed_private_ranges);
        let (redirect_guard, redirect_allow, redirect_deny, max) = (
            guard.clone(),
            allow.clone(),
            deny.clone(),
            config.max_redirects,
        );
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(format!("more than {max} redirects"));
            }
            if !permitted(attempt.url(), redirect_allow.as_ref(), &redirect_deny) {
                return attempt.error("a redirect to a URL that is not previewed");
            }
            match redirect_guard.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(language) = config.accept_language.join(", ").parse() {
            headers.insert(reqwest::header::ACCEPT_LANGUAGE, language);
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(guard.clone())))
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout)
            .redirect(policy)
            .user_agent(config.user_agent.clone())
            .default_headers(headers)
            .build()
            .map_err(|e| err(&e))?;
        Ok(Self {
            client,
            guard,
            allow,
            deny,
            providers: oembed::Providers::new(&config.oembed.providers),
            discovery: config.oembed.discovery,
            max_page: usize::try_from(config.max_page_size.as_u64()).unwrap_or(usize::MAX),
        })
    }

    /// GET `url` after every check; the response once its headers are in.
    async fn get(&self, url: &Url, accept: &str) -> Result<reqwest::Response, PreviewError> {
        if !permitted(url, self.allow.as_ref(), &self.deny) {
            return Err(PreviewError::Blocked(
                "URL blocked by the URL preview patterns".to_owned(),
            ));
        }
        self.guard
            .check_url(url)
            .map_err(|e| PreviewError::Blocked(format!("IP address blocked: {e}")))?;
        let response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| PreviewError::Failed(describe(&e)))?;
        if !response.status().is_success() {
            return Err(PreviewError::Failed(format!(
                "the site answered {}",
                response.status()
            )));
        }
        Ok(response)
    }

    /// The oEmbed answer at `request`, as Open Graph.
    async fn oembed(&self, request: &Url) -> Option<(Vec<(String, String)>, Option<Url>)> {
        let response = self.get(request, "application/json").await.ok()?;
        let base = response.url().clone();
        let body = read_capped(response, MAX_OEMBED).await.ok()?;
        let said = oembed::open_graph(&body)?;
        Some((said.og, said.image.and_then(|i| base.join(&i).ok())))
    }

    /// Parses a page as it streams in, up to the byte cap, stopping early
    /// once nothing more could be shown.
    async fn parse_page(&self, response: reqwest::Response) -> Result<Found, PreviewError> {
        let charset = content_type(&response)
            .and_then(|m| m.get_param(mime::CHARSET).map(|c| c.as_str().to_owned()));
        let mut stream = response.bytes_stream();
        let mut head = Vec::new();
        let mut read = 0;
        let mut rest: Option<Bytes> = None;
        while head.len() < SNIFF {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    let take = (SNIFF - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if take < chunk.len() {
                        rest = Some(chunk.slice(take..));
                    }
                }
                Some(Err(e)) => return Err(PreviewError::Failed(describe(&e))),
                None => break,
            }
        }
        let encoding = encoding_of(&head, charset.as_deref());
        let mut decoder = encoding.new_decoder_with_bom_removal();
        let mut parser = PageParser::new();
        let mut text = String::new();
        let mut feed = |bytes: &[u8], last: bool, parser: &mut PageParser| {
            text.clear();
            text.reserve(
                decoder
                    .max_utf8_buffer_length(bytes.len())
                    .unwrap_or(bytes.len() * 3),
            );
            let _ = decoder.decode_to_string(bytes, &mut text, last);
            parser.write(&text)
        };
        let mut pending = Some(Bytes::from(head)).into_iter().chain(rest);
        loop {
            let chunk = match pending.next() {
                Some(chunk) => chunk,
                None => match stream.next().await {
                    Some(Ok(chunk)) => chunk,
                    // A page cut off by its server or by the time cap: what
                    // arrived is previewed.
                    Some(Err(_)) | None => break,
                },
            };
            let room = self.max_page - read;
            let chunk = &chunk[..chunk.len().min(room)];
            read += chunk.len();
            if !feed(chunk, false, &mut parser) || read >= self.max_page || parser.complete() {
                break;
            }
        }
        feed(&[], true, &mut parser);
        Ok(parser.finish())
    }
}

/// A reqwest error with its causes, which say what the guard refused.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn content_type(response: &reqwest::Response) -> Option<mime::Mime> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A whole small body, refused past `limit` bytes.
async fn read_capped(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, PreviewError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PreviewError::Failed(describe(&e)))?;
        if body.len() + chunk.len() > limit {
            return Err(PreviewError::Failed("the answer is too large".to_owned()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn image_of(response: reqwest::Response, essence: &str) -> Fetched {
    Fetched::Media {
        content_type: essence.to_owned(),
        length: response.content_length(),
        body: response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed(),
    }
}

/// The Open Graph of a parsed page, with the usual fallbacks: `<title>`
/// and `twitter:title`, the meta description, `twitter:description` and
/// the first paragraphs, `twitter:image` and the first sizeable image.
fn summarize(found: &Found, page: &Url) -> (Vec<(String, String)>, Option<Url>) {
    let base = found
        .base
        .as_deref()
        .and_then(|b| page.join(b).ok())
        .unwrap_or_else(|| page.clone());
    let mut og: Vec<(String, String)> = found
        .properties
        .iter()
        .filter(|(name, _)| name.starts_with("og:") && !name.starts_with("og:image"))
        .cloned()
        .collect();
    let has = |og: &[(String, String)], name: &str| og.iter().any(|(n, _)| n == name);
    if !has(&og, "og:title")
        && let Some(title) = found
            .title
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| found.property("twitter:title").map(str::to_owned))
    {
        og.push(("og:title".to_owned(), title));
    }
    if !has(&og, "og:description")
        && let Some(description) = found
            .property("description")
            .or_else(|| found.property("twitter:description"))
            .map(str::to_owned)
            .or_else(|| Some(found.text.clone()).filter(|t| !t.is_empty()))
    {
        og.push(("og:description".to_owned(), description));
    }
    let image = [
        "og:image",
        "og:image:url",
        "og:image:secure_url",
        "twitter:image",
    ]
    .iter()
    .find_map(|name| found.property(name))
    .or(found.image.as_deref())
    .and_then(|i| base.join(i).ok());
    (og, image)
}

#[async_trait]
impl Previewer for HttpPreviewer {
    fn permits(&self, url: &Url) -> bool {
        permitted(url, self.allow.as_ref(), &self.deny)
    }

    async fn page(&self, url: &Url) -> Result<Fetched, PreviewError> {
        if let Some(request) = self.providers.request_for(url)
            && let Some((og, image)) = self.oembed(&request).await
        {
            return Ok(Fetched::Page { og, image });
        }
        let response = self
            .get(
                url,
                "text/html, application/xhtml+xml, image/*;q=0.9, */*;q=0.1",
            )
            .await?;
        let essence = content_type(&response).map(|m| m.essence_str().to_ascii_lowercase());
        match essence.as_deref() {
            Some("text/html" | "application/xhtml+xml") => {
                let page = response.url().clone();
                let found = self.parse_page(response).await?;
                let (mut og, mut image) = summarize(&found, &page);
                let discovered = found
                    .oembed
                    .as_deref()
                    .filter(|_| self.discovery)
                    .and_then(|link| page.join(link).ok());
                if let Some(request) = discovered
                    && let Some((from_oembed, oembed_image)) = self.oembed(&request).await
                {
                    // The provider's answer wins over the page's own tags.
                    og.retain(|(name, _)| !from_oembed.iter().any(|(n, _)| n == name));
                    og.extend(from_oembed);
                    image = oembed_image.or(image);
                }
                Ok(Fetched::Page { og, image })
            }
            Some(kind) if IMAGE_TYPES.contains(&kind) => Ok(image_of(response, kind)),
            _ => Ok(Fetched::Other),
        }
    }

    async fn image(&self, url: &Url) -> Result<Fetched, PreviewError> {
        let response = self.get(url, "image/*").await?;
        let essence = content_type(&response).map(|m| m.essence_str().to_ascii_lowercase());
        Ok(match essence.as_deref() {
            Some(kind) if IMAGE_TYPES.contains(&kind) => image_of(response, kind),
            _ => Fetched::Other,
        })
    }
}
