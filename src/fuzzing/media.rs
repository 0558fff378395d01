//! Properties of what a client's request carries: Range headers, content
//! types and file names (and the Content-Disposition sent back), media ids
//! and server names, and picture headers against the thumbnail budgets.

use std::io::Cursor;

use ruma::http_headers::ContentDisposition;

use super::{Fields, join};
use crate::{
    http::range::{RangeRequest, resolve},
    ids::{BlobKey, MAX_MEDIA_ID_LEN, MediaId, MediaKey},
    media::{MAX_NAME_BYTES, UploadMeta, disposition as content_disposition, is_inline},
    thumbnail::{Formats, Limits, Method, Spec, generate, probe, probe_head},
};

/// `size \0 max_ranges \0 Range-value`: a resolution never reaches past the
/// object, never answers more ranges than allowed, and its ranges are
/// non-empty, ascending and apart (overlapping and adjacent ones merged).
pub fn range(data: &[u8]) {
    let mut fields = Fields::new(data);
    let size = fields.next_number(1000);
    let max_ranges = usize::try_from(fields.next_number(16) % 64).unwrap_or(16);
    let header = fields.next_bytes().map(String::from_utf8_lossy);
    match resolve(header.as_deref(), size, max_ranges) {
        RangeRequest::Partial(ranges) => {
            assert!(header.is_some(), "ranges without a Range header");
            assert!(!ranges.is_empty(), "an empty partial answer");
            assert!(
                ranges.len() <= max_ranges,
                "{} ranges over {max_ranges}",
                ranges.len()
            );
            for r in &ranges {
                assert!(r.start < r.end && r.end <= size, "{r:?} of {size} bytes");
            }
            for pair in ranges.windows(2) {
                assert!(pair[0].end < pair[1].start, "{pair:?} not merged");
            }
        }
        RangeRequest::Unsatisfiable => assert!(header.is_some()),
        RangeRequest::Full => {}
    }
}

/// `Content-Type \0 client file name \0 remote Content-Disposition`: what
/// is kept of an upload's type and name is always a valid media type and
/// a safe name; the Content-Disposition sent back is one well-formed header
/// that gives exactly that name back, inline only for the safe types.
pub fn disposition(data: &[u8]) {
    let mut fields = Fields::new(data);
    let content_type = fields.next_text();
    let client_name = fields.next_text();
    let remote = fields.next_bytes().unwrap_or_default();
    let remote_name = crate::federation::file_name(remote);
    for name in [Some(client_name.as_str()), remote_name.as_deref()] {
        let meta = UploadMeta::new(Some(&content_type), name, None);
        let stored = &meta.content_type;
        assert!(stored.parse::<mime::Mime>().is_ok(), "kept type {stored:?}");
        assert!(
            http::HeaderValue::from_str(stored).is_ok(),
            "type {stored:?} is no header"
        );
        if let Some(kept) = &meta.upload_name {
            assert!(
                !kept.is_empty() && kept.len() <= MAX_NAME_BYTES,
                "name {kept:?}"
            );
            assert!(!kept.contains(['/', '\\']), "path in {kept:?}");
            assert!(
                !kept.chars().any(char::is_control),
                "control character in {kept:?}"
            );
            assert!(kept != "." && kept != "..");
        }
        let value = content_disposition(stored, meta.upload_name.as_deref());
        let header = http::HeaderValue::from_str(&value)
            .unwrap_or_else(|_| panic!("{value:?} is not a header value"));
        let parsed = ContentDisposition::try_from(header.as_bytes())
            .unwrap_or_else(|e| panic!("{value:?} does not parse back: {e}"));
        assert_eq!(parsed.filename, meta.upload_name, "{value:?}");
        if value.starts_with("inline") {
            assert!(is_inline(stored));
            let essence = stored
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            assert!(
                !essence.contains("html") && !essence.contains("svg") && !essence.contains("xml"),
                "{essence} inline"
            );
        }
    }
}

/// `media id \0 server name \0 listed object name`: an accepted id keeps
/// the spec's alphabet and round-trips; an mxc key prints as itself; only
/// object names of mxmedia's own shape are taken for blob keys.
pub fn ids(data: &[u8]) {
    let mut fields = Fields::new(data);
    let id = fields.next_text();
    let server = fields.next_text();
    let listed = fields.next_text();
    match MediaId::parse(&id) {
        Ok(parsed) => {
            assert_eq!(parsed.as_str(), id);
            assert!((1..=MAX_MEDIA_ID_LEN).contains(&id.len()));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
            let again: MediaId = serde_json::from_value(serde_json::json!(id)).expect("serde");
            assert_eq!(again, parsed);
        }
        Err(_) => {
            assert!(
                id.is_empty()
                    || id.len() > MAX_MEDIA_ID_LEN
                    || id
                        .bytes()
                        .any(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            );
            assert!(serde_json::from_value::<MediaId>(serde_json::json!(id)).is_err());
        }
    }
    if let Ok(key) = MediaKey::parse(&server, &id) {
        assert_eq!(key.to_string(), format!("mxc://{server}/{id}"));
        assert!(!server.contains(['/', '\\', '?', '#', '@']) && !server.is_empty());
        let json = serde_json::to_string(&key).expect("serialise");
        assert_eq!(
            serde_json::from_str::<MediaKey>(&json).expect("parse back"),
            key
        );
    }
    if let Some(key) = BlobKey::from_listed(&listed) {
        assert_eq!(key.as_str(), listed);
        assert!(listed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'/'));
        assert!(!listed.contains(".."));
    }
}

/// Tight budgets, so anything admitted is cheap to decode.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 18,
    max_frames: 64,
    max_bytes: 16 << 20,
    max_animation_pixels: 1 << 22,
    formats: Formats::SAFE,
};

/// A picture's bytes: the budget check never admits a picture whose decoded
/// size exceeds the budget (what the header promised is what decodes), the
/// first bytes alone never claim more than the whole file, and every
/// thumbnail made fits the size asked for.
pub fn image_probe(data: &[u8]) {
    let Ok(probed) = probe(data, LIMITS) else {
        return;
    };
    let pixels = u64::from(probed.width) * u64::from(probed.height);
    assert!(pixels <= LIMITS.max_pixels, "{probed:?} admitted");
    assert!(probed.frames <= LIMITS.max_frames, "{probed:?} admitted");
    if let Ok(Some((format, width, height))) = probe_head(&data[..data.len().min(4096)], LIMITS) {
        assert_eq!(format, probed.format);
        assert_eq!(
            (width, height),
            (probed.width, probed.height),
            "head and whole disagree"
        );
    }
    if let Ok(decoded) = image::ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)
        .and_then(image::ImageReader::decode)
    {
        assert!(
            u64::from(decoded.width()) * u64::from(decoded.height()) <= LIMITS.max_pixels,
            "{probed:?} decoded to {}x{}",
            decoded.width(),
            decoded.height()
        );
    }
    let specs = [
        Spec {
            width: 32,
            height: 32,
            method: Method::Crop,
        },
        Spec {
            width: 40,
            height: 30,
            method: Method::Scale,
        },
    ];
    if let Ok(thumbnails) = generate(data, &specs, LIMITS) {
        for thumbnail in thumbnails {
            let made = image::load_from_memory(&thumbnail.bytes).expect("a thumbnail decodes");
            assert!(
                made.width() <= thumbnail.spec.width.max(1)
                    && made.height() <= thumbnail.spec.height.max(1),
                "{}x{} for {:?}",
                made.width(),
                made.height(),
                thumbnail.spec
            );
        }
    }
}

/// Seeds for the picture target (encoded by the image crate and libwebp)
/// and Range/disposition/ids inputs with binary parts.
pub(super) fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let picture = image::RgbaImage::from_fn(24, 16, |x, y| {
        image::Rgba([
            (x * 10) as u8,
            (y * 15) as u8,
            90,
            if x < 4 { 0 } else { 255 },
        ])
    });
    let encode = |format| {
        let mut out = Cursor::new(Vec::new());
        let image = if format == image::ImageFormat::Jpeg {
            image::DynamicImage::ImageRgb8(
                image::DynamicImage::ImageRgba8(picture.clone()).into_rgb8(),
            )
        } else {
            image::DynamicImage::ImageRgba8(picture.clone())
        };
        image.write_to(&mut out, format).expect("encode seed");
        out.into_inner()
    };
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        for i in 0..3u8 {
            let frame = image::RgbaImage::from_fn(12, 8, |x, _| {
                image::Rgba([x as u8 * 20, i * 80, 0, 255])
            });
            encoder
                .encode_frame(image::Frame::new(frame))
                .expect("encode seed frame");
        }
    }
    vec![
        ("image_probe", "tiny.jpg", encode(image::ImageFormat::Jpeg)),
        ("image_probe", "tiny.png", encode(image::ImageFormat::Png)),
        ("image_probe", "tiny.webp", encode(image::ImageFormat::WebP)),
        ("image_probe", "tiny-animated.gif", gif),
        (
            "disposition",
            "nul-in-name",
            join(&[b"image/png", b"a\x01b.png", b"inline"]),
        ),
        (
            "ids",
            "non-ascii",
            join(&[b"\xc3\xa9t\xc3\xa9", b"example.org", b"ab/cd/abcd"]),
        ),
    ]
}
