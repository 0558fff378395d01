//! Response headers for served media: Content-Disposition (safe filename,
//! RFC 6266), and the fixed security and caching headers the spec asks for.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Spec "Serving inline content": only these types may be shown inline.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The CSP the spec recommends for served content.
pub const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Media ids never change content, but quarantine can withdraw them: browsers
/// may keep a day, shared caches must revalidate (with auth) every time.
pub const MEDIA_CACHE_CONTROL: &str = "public, max-age=86400, s-maxage=0, proxy-revalidate";

/// RFC 5987 `attr-char`: everything else is percent-encoded in `filename*`.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Whether `content_type` (its essence, lower-cased) is on the inline list.
/// The decision uses only the Content-Type, never the name or the bytes.
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    INLINE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(essence))
}

/// `inline` or `attachment`, with the filename when there is one. ASCII names
/// go in a quoted `filename` with `"` and `\` escaped; others also get an
/// RFC 5987 `filename*` and an ASCII stand-in, so the header is always one
/// well-formed value.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> HeaderValue {
    let kind = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename else {
        return HeaderValue::from_static(if kind == "inline" {
            "inline"
        } else {
            "attachment"
        });
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let quoted = ascii.replace('\\', "\\\\").replace('"', "\\\"");
    let value = if ascii == name {
        format!("{kind}; filename=\"{quoted}\"")
    } else {
        let encoded = utf8_percent_encode(name, ATTR_CHAR_ESCAPES);
        format!("{kind}; filename=\"{quoted}\"; filename*=UTF-8''{encoded}")
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The Content-Type to send: the stored one, or octet-stream if it cannot be
/// a header value (it was validated at upload, so that is belt and braces).
pub fn content_type(stored: &str) -> HeaderValue {
    HeaderValue::from_str(stored)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// `If-None-Match`: `*` or any listed (weak or strong) tag equal to ours.
pub fn etag_matches(value: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Headers every served media response carries, errors aside.
pub fn insert_media_security(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(MEDIA_CSP),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(MEDIA_CACHE_CONTROL),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spec §4.4 examples: inline only for the safe list.
    #[test]
    fn inline_follows_the_allowlist() {
        for t in [
            "image/png",
            "video/mp4",
            "text/plain; charset=utf-8",
            "IMAGE/JPEG",
        ] {
            assert!(is_inline(t), "{t}");
        }
        for t in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "application/javascript",
            "",
        ] {
            assert!(!is_inline(t), "{t}");
        }
    }

    /// Names with quotes, backslashes and non-ASCII stay one header value.
    #[test]
    fn filenames_are_encoded() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(content_disposition("text/html", None), "attachment");
        assert_eq!(
            content_disposition("application/pdf", Some("War and Peace.pdf")),
            "attachment; filename=\"War and Peace.pdf\""
        );
        assert_eq!(
            content_disposition("image/png", Some("a\"b\\c;d.png")),
            "inline; filename=\"a\\\"b\\\\c;d.png\""
        );
        assert_eq!(
            content_disposition("image/png", Some("café.png")),
            "inline; filename=\"caf_.png\"; filename*=UTF-8''caf%C3%A9.png"
        );
    }

    proptest! {
        /// Any name gives a valid, single-line header that carries the name.
        #[test]
        fn any_name_gives_one_valid_header(name in "\\PC{1,80}") {
            let value = content_disposition("image/png", Some(&name));
            let text = value.to_str().unwrap();
            prop_assert!(text.starts_with("inline; filename=\""));
            prop_assert!(!text.contains(['\r', '\n']));
        }
    }
}
