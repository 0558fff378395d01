//! What an HTML page says about itself, read as it streams in: `og:*` and
//! `twitter:*` meta properties, `<title>`, the meta description, the first
//! paragraphs' text, the first sizeable image and an oEmbed discovery link.
//! A real HTML tokenizer (`lol_html`) does the parsing, with no tree built:
//! memory stays flat whatever the nesting, a tag too large for its memory
//! budget ends the parse with what was found so far, and every collected
//! value is capped.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex, PoisonError},
};

use lol_html::{
    ElementContentHandlers, HandlerResult, MemorySettings, Selector,
    html_content::TextChunk,
    send::{Element, HtmlRewriter, SendHandlerTypes, Settings},
};

/// Parser memory for one page (buffered tags, open elements).
const PARSER_MEMORY: usize = 1024 * 1024;
/// Meta properties kept at most.
pub const MAX_PROPERTIES: usize = 64;
/// Characters kept of one value.
pub const MAX_VALUE: usize = 1000;
/// Characters of paragraph text kept for a description.
pub const MAX_DESCRIPTION: usize = 500;

/// What the page said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// `og:*`, `twitter:*` and `description` meta values, first one of each
    /// name, in page order.
    pub properties: Vec<(String, String)>,
    pub title: Option<String>,
    /// Text of the first paragraphs, whitespace collapsed.
    pub text: String,
    /// The first image that is not a tiny one, as written in the page.
    pub image: Option<String>,
    /// An oEmbed (JSON) discovery link, as written in the page.
    pub oembed: Option<String>,
    /// The page's `<base href>`.
    pub base: Option<String>,
    /// Whether `</head>` was seen.
    pub head_done: bool,
}

impl Found {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether reading on could not add anything a preview shows.
    pub fn complete(&self) -> bool {
        self.head_done
            && self.property("og:title").is_some()
            && self.property("og:description").is_some()
            && self.property("og:image").is_some()
    }
}

/// A value as the page meant it (entities decoded), trimmed and capped.
fn capped(value: &str) -> String {
    let decoded = html_escape::decode_html_entities(value);
    let mut out: String = decoded.chars().take(MAX_VALUE).collect();
    out.truncate(out.trim_end().len());
    out.trim_start().to_owned()
}

fn collapse_into(out: &mut String, text: &str, max: usize) {
    for word in text.split_whitespace() {
        if out.chars().count() >= max {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// Whether an `<img>` says it is too small to stand for the page (a
/// tracking pixel, an icon).
fn tiny(element: &Element<'_, '_>) -> bool {
    ["width", "height"].iter().any(|side| {
        element
            .get_attribute(side)
            .and_then(|v| v.trim().trim_end_matches("px").parse::<u32>().ok())
            .is_some_and(|px| px < 32)
    })
}

type Shared = Arc<Mutex<State>>;

#[derive(Default)]
struct State {
    found: Found,
    in_title: bool,
    title_text: String,
    paragraph_text: String,
    paragraphs: usize,
}

fn with<R>(state: &Shared, f: impl FnOnce(&mut State) -> R) -> R {
    f(&mut state.lock().unwrap_or_else(PoisonError::into_inner))
}

pub(super) fn selector(css: &str) -> Cow<'static, Selector> {
    // The selectors are this file's constants.
    Cow::Owned(
        css.parse()
            .unwrap_or_else(|_| unreachable!("a valid selector")),
    )
}

type Handlers = (
    Cow<'static, Selector>,
    ElementContentHandlers<'static, SendHandlerTypes>,
);
type Rewriter = HtmlRewriter<'static, fn(&[u8])>;

/// `og:*`, `twitter:*` and `description` meta values.
fn meta_handler(state: Shared) -> Handlers {
    let handlers = ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
        let name = el
            .get_attribute("property")
            .or_else(|| el.get_attribute("name"))
            .map(|n| n.trim().to_ascii_lowercase());
        let Some(name) = name
            .filter(|n| n.starts_with("og:") || n.starts_with("twitter:") || n == "description")
        else {
            return Ok(());
        };
        let value = capped(&el.get_attribute("content").unwrap_or_default());
        with(&state, |s| {
            let props = &mut s.found.properties;
            if props.len() < MAX_PROPERTIES && !props.iter().any(|(n, _)| *n == name) {
                props.push((name, value));
            }
        });
        Ok(())
    });
    (selector("meta[content]"), handlers)
}

/// The first `<title>`'s text.
fn title_handler(state: Shared) -> Handlers {
    let text_state = state.clone();
    let handlers = ElementContentHandlers::default()
        .element(move |el: &mut Element<'_, '_>| -> HandlerResult {
            let first = with(&state, |s| {
                let first = s.found.title.is_none() && !s.in_title;
                s.in_title = first;
                first
            });
            if first && let Some(handlers) = el.end_tag_handlers() {
                let state = state.clone();
                handlers.push(Box::new(move |_| {
                    with(&state, |s| {
                        s.in_title = false;
                        s.found.title = Some(capped(&s.title_text));
                    });
                    Ok(())
                }));
            }
            Ok(())
        })
        .text(move |t: &mut TextChunk<'_>| {
            with(&text_state, |s| {
                if s.in_title && s.title_text.len() < MAX_VALUE * 4 {
                    s.title_text.push_str(t.as_str());
                }
            });
            Ok(())
        });
    (selector("title"), handlers)
}

/// The first paragraphs' text.
fn paragraph_handler(state: Shared) -> Handlers {
    let handlers = ElementContentHandlers::default().text(move |t: &mut TextChunk<'_>| {
        with(&state, |s| {
            // Chunks split text anywhere: whitespace is collapsed at the end.
            if s.paragraphs < 8 && s.paragraph_text.len() < MAX_DESCRIPTION * 8 {
                s.paragraph_text.push_str(t.as_str());
            }
            if t.last_in_text_node() {
                s.paragraph_text.push(' ');
                s.paragraphs += 1;
            }
        });
        Ok(())
    });
    (selector("p"), handlers)
}

/// The first image that is neither tiny nor inline data.
fn image_handler(state: Shared) -> Handlers {
    let handlers = ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
        let src = el.get_attribute("src").unwrap_or_default();
        if !tiny(el) && !src.trim().starts_with("data:") {
            with(&state, |s| {
                s.found.image.get_or_insert_with(|| capped(&src));
            });
        }
        Ok(())
    });
    (selector("img[src]"), handlers)
}

/// An oEmbed discovery link.
fn oembed_handler(state: Shared) -> Handlers {
    let handlers = ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
        let kind = el.get_attribute("type").unwrap_or_default();
        let rel = el.get_attribute("rel").unwrap_or_default();
        if kind.trim().eq_ignore_ascii_case("application/json+oembed")
            && rel
                .split_whitespace()
                .any(|r| r.eq_ignore_ascii_case("alternate"))
        {
            let href = capped(&el.get_attribute("href").unwrap_or_default());
            with(&state, |s| {
                s.found.oembed.get_or_insert(href);
            });
        }
        Ok(())
    });
    (selector("link[href]"), handlers)
}

/// `<base href>`, and the end of `<head>`.
fn structure_handler(state: Shared) -> Handlers {
    let handlers = ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
        if el.tag_name() == "base" {
            let href = capped(&el.get_attribute("href").unwrap_or_default());
            with(&state, |s| {
                s.found.base.get_or_insert(href);
            });
        } else if let Some(handlers) = el.end_tag_handlers() {
            let state = state.clone();
            handlers.push(Box::new(move |_| {
                with(&state, |s| s.found.head_done = true);
                Ok(())
            }));
        }
        Ok(())
    });
    (selector("base[href], head"), handlers)
}

/// A page parser fed with UTF-8 text as it arrives.
pub struct PageParser {
    state: Shared,
    rewriter: Option<Rewriter>,
}

pub(super) fn discard(_: &[u8]) {}

impl Default for PageParser {
    fn default() -> Self {
        Self::new()
    }
}

impl PageParser {
    pub fn new() -> Self {
        let state: Shared = Arc::default();
        let settings = Settings::new_send()
            .with_memory_settings(
                MemorySettings::new().with_max_allowed_memory_usage(PARSER_MEMORY),
            )
            .with_strict(false)
            .append_element_content_handler(meta_handler(state.clone()))
            .append_element_content_handler(title_handler(state.clone()))
            .append_element_content_handler(paragraph_handler(state.clone()))
            .append_element_content_handler(image_handler(state.clone()))
            .append_element_content_handler(oembed_handler(state.clone()))
            .append_element_content_handler(structure_handler(state.clone()));
        Self {
            state,
            rewriter: Some(HtmlRewriter::new(settings, discard as fn(&[u8]))),
        }
    }

    /// Parses the next piece of the page; false once parsing stopped (a
    /// tag over the memory budget): what was found stands.
    pub fn write(&mut self, text: &str) -> bool {
        let Some(rewriter) = self.rewriter.as_mut() else {
            return false;
        };
        if rewriter.write(text.as_bytes()).is_err() {
            self.rewriter = None;
            return false;
        }
        true
    }

    /// Whether reading on could not add anything a preview shows.
    pub fn complete(&self) -> bool {
        with(&self.state, |s| s.found.complete())
    }

    /// What was found so far.
    pub fn found(&self) -> Found {
        with(&self.state, |s| {
            let mut found = s.found.clone();
            let text = html_escape::decode_html_entities(&s.paragraph_text);
            collapse_into(&mut found.text, &text, MAX_DESCRIPTION);
            found
        })
    }

    /// Ends the parse; what the page said.
    pub fn finish(mut self) -> Found {
        if let Some(rewriter) = self.rewriter.take() {
            let _ = rewriter.end();
        }
        let mut found = self.found();
        if found.title.is_none() {
            // A page cut off inside its <title>.
            let partial = with(&self.state, |s| s.title_text.clone());
            if !partial.trim().is_empty() {
                found.title = Some(capped(&partial));
            }
        }
        found
    }
}

#[cfg(test)]
#[path = "html_tests.rs"]
mod tests;
