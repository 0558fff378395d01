//! Response headers for served media: the fixed security and caching
//! headers the spec asks for, validators and content types. (Which media
//! may be shown inline is the core's rule: `media::disposition`.)

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// The CSP the spec recommends for served content.
pub const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Media ids never change content, but quarantine can withdraw them: browsers
/// may keep a day, shared caches must revalidate (with auth) every time.
pub const MEDIA_CACHE_CONTROL: &str = "public, max-age=86400, s-maxage=0, proxy-revalidate";

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
