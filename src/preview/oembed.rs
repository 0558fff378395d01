//! oEmbed: which provider serves a URL, and what its JSON answer says, as
//! Open Graph properties. The answer is untrusted: every field is optional,
//! type-checked and capped, and anything else makes no preview from it.

use regex::Regex;
use serde::Deserialize;
use url::Url;

use super::html::PageParser;
use crate::config::OEmbedProvider;

/// Characters kept of one field.
pub const MAX_FIELD: usize = 1000;

/// The configured providers, their URL patterns compiled.
pub struct Providers {
    providers: Vec<(Regex, Url)>,
}

/// `*` matches anything; everything else literally, the whole URL.
fn glob(pattern: &str) -> Option<Regex> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join(".*"))).ok()
}

impl Providers {
    pub fn new(configured: &[OEmbedProvider]) -> Self {
        let mut providers = Vec::new();
        for provider in configured {
            let Ok(endpoint) = Url::parse(&provider.endpoint) else {
                continue;
            };
            for pattern in &provider.urls {
                if let Some(re) = glob(pattern) {
                    providers.push((re, endpoint.clone()));
                }
            }
        }
        Self { providers }
    }

    /// The oEmbed request for `url`, when a provider serves it.
    pub fn request_for(&self, url: &Url) -> Option<Url> {
        let (_, endpoint) = self
            .providers
            .iter()
            .find(|(re, _)| re.is_match(url.as_str()))?;
        let mut request = endpoint.clone();
        request
            .query_pairs_mut()
            .append_pair("url", url.as_str())
            .append_pair("format", "json");
        Some(request)
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<serde_json::Value>,
    #[serde(default)]
    provider_name: Option<serde_json::Value>,
    #[serde(default)]
    author_name: Option<serde_json::Value>,
    #[serde(default)]
    thumbnail_url: Option<serde_json::Value>,
    #[serde(default)]
    url: Option<serde_json::Value>,
    #[serde(default)]
    html: Option<serde_json::Value>,
}

/// A string field, capped; anything else is absent.
fn field(value: Option<&serde_json::Value>) -> Option<String> {
    let text = value?.as_str()?.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_FIELD).collect())
}

/// What an oEmbed answer says.
pub struct Said {
    /// Open Graph properties.
    pub og: Vec<(String, String)>,
    /// The image to show, as the provider wrote it.
    pub image: Option<String>,
}

/// What an oEmbed answer says; `None` when it is not an oEmbed answer.
pub fn open_graph(json: &[u8]) -> Option<Said> {
    let answer: Answer = serde_json::from_slice(json).ok()?;
    let kind = field(answer.kind.as_ref())?;
    let mut og = Vec::new();
    let mut push = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            og.push((name.to_owned(), value));
        }
    };
    push("og:title", field(answer.title.as_ref()));
    push("og:site_name", field(answer.provider_name.as_ref()));
    let description = field(answer.html.as_ref()).and_then(|html| {
        let mut parser = PageParser::new();
        parser.write(&html);
        Some(parser.finish().text).filter(|t| !t.is_empty())
    });
    push(
        "og:description",
        description.or_else(|| field(answer.author_name.as_ref())),
    );
    let image = match kind.as_str() {
        "photo" => field(answer.url.as_ref()),
        _ => None,
    }
    .or_else(|| field(answer.thumbnail_url.as_ref()));
    if kind == "video" {
        push("og:type", Some("video.other".to_owned()));
    }
    Some(Said { og, image })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_match_their_patterns_only() {
        let providers = Providers::new(&crate::config::OEmbedConfig::default().providers);
        let asked = providers
            .request_for(&Url::parse("https://www.youtube.com/watch?v=abc").unwrap())
            .unwrap();
        assert_eq!(asked.host_str(), Some("www.youtube.com"));
        assert!(asked.query().unwrap().contains("format=json"));
        assert!(
            providers
                .request_for(&Url::parse("https://www.youtube.com.evil.example/watch").unwrap())
                .is_none()
        );
        assert!(
            providers
                .request_for(&Url::parse("https://example.org/watch?v=1").unwrap())
                .is_none()
        );
    }

    #[test]
    fn answers_become_open_graph_and_garbage_becomes_nothing() {
        let Said { og, image } = open_graph(
            br#"{"type":"video","title":"A video","provider_name":"Tube","thumbnail_url":"https://i.example/t.jpg","html":"<iframe></iframe>"}"#,
        )
        .unwrap();
        assert!(og.contains(&("og:title".into(), "A video".into())));
        assert!(og.contains(&("og:site_name".into(), "Tube".into())));
        assert!(og.contains(&("og:type".into(), "video.other".into())));
        assert_eq!(image.as_deref(), Some("https://i.example/t.jpg"));
        let Said { og, .. } = open_graph(
            br#"{"type":"rich","html":"<blockquote><p>The tweet's text</p></blockquote>","author_name":"someone"}"#,
        )
        .unwrap();
        assert!(og.contains(&("og:description".into(), "The tweet's text".into())));
        let Said { image, .. } =
            open_graph(br#"{"type":"photo","url":"https://i.example/p.png","title":7}"#).unwrap();
        assert_eq!(image.as_deref(), Some("https://i.example/p.png"));
        for garbage in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"type\": 5}",
            b"\xff\xfe",
        ] {
            assert!(open_graph(garbage).is_none());
        }
    }
}
