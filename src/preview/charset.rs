//! Which encoding a page is in, decided from its first bytes and headers
//! as browsers decide it.

use std::sync::{Arc, Mutex, PoisonError};

use encoding_rs::Encoding;
use lol_html::{
    ElementContentHandlers, MemorySettings,
    send::{Element, HtmlRewriter, Settings},
};

use super::html::{discard, selector};

/// The encoding of a page: its byte order mark, else the `charset` of its
/// `Content-Type`, else a `<meta>` charset in its first bytes, else UTF-8
/// when those bytes are UTF-8, else windows-1252 (what browsers assume).
pub fn encoding_of(head: &[u8], header_charset: Option<&str>) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(head) {
        return encoding;
    }
    let label = header_charset.and_then(|c| Encoding::for_label(c.trim().as_bytes()));
    if let Some(encoding) = label.or_else(|| meta_charset(head)) {
        // A page in UTF-16 without a BOM is not read as ASCII: per the
        // HTML standard a meta naming UTF-16 means UTF-8.
        return if encoding == encoding_rs::UTF_16BE || encoding == encoding_rs::UTF_16LE {
            encoding_rs::UTF_8
        } else {
            encoding
        };
    }
    let valid_up_to = match std::str::from_utf8(head) {
        Ok(_) => head.len(),
        Err(e) => e.valid_up_to(),
    };
    // A multi-byte character cut by the end of `head` is fine.
    if head.len() - valid_up_to < 4 && std::str::from_utf8(&head[..valid_up_to]).is_ok() {
        encoding_rs::UTF_8
    } else {
        encoding_rs::WINDOWS_1252
    }
}

/// The charset a `<meta charset>` or `<meta http-equiv=content-type>` in
/// `head` names, found by the same tokenizer (its bytes read as ASCII).
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let found: Arc<Mutex<Option<&'static Encoding>>> = Arc::default();
    let sink = found.clone();
    let settings = Settings::new_send()
        .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(64 * 1024))
        .with_strict(false)
        .append_element_content_handler((
            selector("meta"),
            ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                let named = el.get_attribute("charset").or_else(|| {
                    let equiv = el.get_attribute("http-equiv")?;
                    if !equiv.trim().eq_ignore_ascii_case("content-type") {
                        return None;
                    }
                    let content = el.get_attribute("content")?;
                    let lower = content.to_ascii_lowercase();
                    let at = lower.find("charset=")?;
                    Some(
                        content[at + 8..]
                            .trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace())
                            .split([';', ' '])
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                });
                if let Some(encoding) = named.and_then(|n| Encoding::for_label(n.trim().as_bytes()))
                {
                    let mut slot = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert(encoding);
                }
                Ok(())
            }),
        ));
    let mut rewriter = HtmlRewriter::new(settings, discard as fn(&[u8]));
    // Every byte as a Latin-1 character: tags and attribute names are ASCII.
    let latin1: String = head.iter().map(|b| char::from(*b)).collect();
    let _ = rewriter.write(latin1.as_bytes());
    drop(rewriter);
    *found.lock().unwrap_or_else(PoisonError::into_inner)
}
