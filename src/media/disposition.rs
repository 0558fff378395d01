//! How served media presents itself (RFC 6266 `Content-Disposition`):
//! inline only for the spec's safe types, decided by the Content-Type
//! alone, and the file name encoded so the value is always one well-formed
//! header.

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
pub fn disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename else {
        return kind.to_owned();
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
    if ascii == name {
        format!("{kind}; filename=\"{quoted}\"")
    } else {
        let encoded = utf8_percent_encode(name, ATTR_CHAR_ESCAPES);
        format!("{kind}; filename=\"{quoted}\"; filename*=UTF-8''{encoded}")
    }
}

/// Thumbnails are always inline, with a file name (spec).
pub fn thumbnail_disposition(content_type: &str) -> String {
    let extension = match content_type {
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "jpg",
    };
    format!("inline; filename=\"thumbnail.{extension}\"")
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
        assert_eq!(disposition("image/png", None), "inline");
        assert_eq!(disposition("text/html", None), "attachment");
        assert_eq!(
            disposition("application/pdf", Some("War and Peace.pdf")),
            "attachment; filename=\"War and Peace.pdf\""
        );
        assert_eq!(
            disposition("image/png", Some("a\"b\\c;d.png")),
            "inline; filename=\"a\\\"b\\\\c;d.png\""
        );
        assert_eq!(
            disposition("image/png", Some("café.png")),
            "inline; filename=\"caf_.png\"; filename*=UTF-8''caf%C3%A9.png"
        );
    }

    proptest! {
        /// Any name gives a valid, single-line header that carries the name.
        #[test]
        fn any_name_gives_one_valid_header(name in "\\PC{1,80}") {
            let value = disposition("image/png", Some(&name));
            let header = http::HeaderValue::from_str(&value).unwrap();
            let text = header.to_str().unwrap();
            prop_assert!(text.starts_with("inline; filename=\""));
            prop_assert!(!text.contains(['\r', '\n']));
        }
    }
}
