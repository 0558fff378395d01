//! Why a file gets no thumbnail, said the same way every time: what the
//! bytes are when they are a format mxmedia does not thumbnail (told by
//! their signature, whatever the uploader called them), and why a picture
//! of a format it does thumbnail could not be decoded. Both feed the
//! metrics with labels from fixed sets.

use std::fmt;

/// A file of a kind mxmedia does not thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Never rasterised: an SVG can carry scripts and pull in other
    /// resources, and rendering one is a large attack surface.
    Svg,
    Pdf,
    Bmp,
    Tiff,
    Ico,
    /// HEIC/HEIF (iPhone photos).
    Heif,
    Avif,
    Video,
    Audio,
    /// Anything else that is not JPEG, PNG, GIF or WebP.
    Other,
    /// No thumbnail size is configured for the method asked.
    NoSize,
    /// A format mxmedia can decode, left out of `thumbnails.formats` here.
    Disabled,
}

impl Refused {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [Self; 12] = [
        Self::Svg,
        Self::Pdf,
        Self::Bmp,
        Self::Tiff,
        Self::Ico,
        Self::Heif,
        Self::Avif,
        Self::Video,
        Self::Audio,
        Self::Other,
        Self::NoSize,
        Self::Disabled,
    ];

    /// What `bytes` (the start of a file) are, among the kinds refused.
    pub fn sniff(bytes: &[u8]) -> Self {
        let ftyp_brand = (bytes.len() >= 12 && &bytes[4..8] == b"ftyp").then(|| &bytes[8..12]);
        match (bytes, ftyp_brand) {
            (_, Some(b"avif" | b"avis")) => Self::Avif,
            (
                _,
                Some(b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"),
            ) => Self::Heif,
            (_, Some(b"M4A " | b"M4B ")) => Self::Audio,
            (_, Some(_))
            | (
                [0x1A, 0x45, 0xDF, 0xA3, ..]
                | [
                    b'R',
                    b'I',
                    b'F',
                    b'F',
                    _,
                    _,
                    _,
                    _,
                    b'A',
                    b'V',
                    b'I',
                    b' ',
                    ..,
                ],
                _,
            ) => Self::Video,
            ([b'%', b'P', b'D', b'F', b'-', ..], _) => Self::Pdf,
            ([b'B', b'M', ..], _) => Self::Bmp,
            ([b'I', b'I', 0x2A, 0x00, ..] | [b'M', b'M', 0x00, 0x2A, ..], _) => Self::Tiff,
            ([0x00, 0x00, 0x01 | 0x02, 0x00, ..], _) => Self::Ico,
            (
                [
                    b'R',
                    b'I',
                    b'F',
                    b'F',
                    _,
                    _,
                    _,
                    _,
                    b'W',
                    b'A',
                    b'V',
                    b'E',
                    ..,
                ]
                | [b'I', b'D', b'3', ..]
                | [b'O', b'g', b'g', b'S', ..]
                | [b'f', b'L', b'a', b'C', ..],
                _,
            ) => Self::Audio,
            _ if looks_like_svg(bytes) => Self::Svg,
            _ => Self::Other,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Pdf => "pdf",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
            Self::Ico => "ico",
            Self::Heif => "heif",
            Self::Avif => "avif",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Other => "other",
            Self::NoSize => "no_size",
            Self::Disabled => "disabled",
        }
    }
}

const THUMBNAILED: &str = "thumbnails are made of JPEG, PNG, GIF and WebP images";

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Svg => {
                "SVG images are never thumbnailed: mxmedia does not rasterise SVG, which can carry scripts and load other resources"
            }
            Self::NoSize => return f.write_str("no thumbnail size is configured for this method"),
            Self::Disabled => {
                return f.write_str(
                    "this server does not thumbnail this image format (thumbnails.formats)",
                );
            }
            Self::Pdf => "PDF documents are not thumbnailed",
            Self::Bmp => "BMP images are not thumbnailed",
            Self::Tiff => "TIFF images are not thumbnailed",
            Self::Ico => "icon files are not thumbnailed",
            Self::Heif => "HEIC/HEIF images are not thumbnailed on this server",
            Self::Avif => "AVIF images are not thumbnailed on this server",
            Self::Video => "videos are not thumbnailed",
            Self::Audio => "audio files are not thumbnailed",
            Self::Other => "this file is not an image format mxmedia thumbnails",
        };
        write!(f, "{what} ({THUMBNAILED})")
    }
}

/// Text that opens (after an optional BOM, XML declaration, comments or
/// doctype) with an `<svg` element.
fn looks_like_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let Ok(text) =
        std::str::from_utf8(head).or_else(|e| std::str::from_utf8(&head[..e.valid_up_to()]))
    else {
        return false;
    };
    let text = text.trim_start();
    (text.starts_with('<') && text.contains("<svg")) || text.starts_with("<svg")
}

/// Why a picture of a thumbnailed format could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeFailure {
    /// The file ends before the picture does.
    Truncated,
    /// The bytes break the format's rules.
    Invalid,
    /// A legal feature the decoder does not support (e.g. an unusual
    /// colour type or bit depth).
    UnsupportedFeature,
    Other,
}

impl DecodeFailure {
    pub const ALL: [Self; 4] = [
        Self::Truncated,
        Self::Invalid,
        Self::UnsupportedFeature,
        Self::Other,
    ];

    /// Classifies an `image` decoder error.
    pub fn of(error: &image::ImageError) -> Self {
        use image::ImageError as E;
        match error {
            E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Self::Truncated,
            E::Decoding(_) if mentions_end(&error.to_string()) => Self::Truncated,
            E::Decoding(_) | E::Parameter(_) => Self::Invalid,
            E::Unsupported(_) => Self::UnsupportedFeature,
            _ => Self::Other,
        }
    }

    /// Classifies a decoder's message (libjpeg-turbo's errors are text).
    pub fn of_message(message: &str) -> Self {
        if mentions_end(message) {
            Self::Truncated
        } else {
            Self::Invalid
        }
    }

    /// Classifies an error of the JPEG decoder that scales while decoding.
    pub fn of_jpeg(error: &jpeg_decoder::Error) -> Self {
        use jpeg_decoder::Error as E;
        match error {
            E::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Self::Truncated,
            E::Format(message) if mentions_end(message) => Self::Truncated,
            E::Format(_) => Self::Invalid,
            E::Unsupported(_) => Self::UnsupportedFeature,
            _ => Self::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Invalid => "invalid",
            Self::UnsupportedFeature => "unsupported_feature",
            Self::Other => "other",
        }
    }
}

/// Decoders say "unexpected end", "EOF", "truncated" or "not enough data"
/// for a file cut short.
fn mentions_end(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "eof",
        "end of",
        "truncated",
        "not enough data",
        "unexpected end",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_formats_are_told_by_their_bytes() {
        let mut mp4 = vec![0, 0, 0, 0x18];
        mp4.extend_from_slice(b"ftypisom\0\0\0\0");
        let mut heic = vec![0, 0, 0, 0x18];
        heic.extend_from_slice(b"ftypheic\0\0\0\0");
        let mut avif = vec![0, 0, 0, 0x1c];
        avif.extend_from_slice(b"ftypavif\0\0\0\0");
        let cases: [(&[u8], Refused); 12] = [
            (
                b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
                Refused::Svg,
            ),
            (b"\xEF\xBB\xBF  <svg width=\"1\"/>", Refused::Svg),
            (
                b"<!-- made by hand -->\n<!DOCTYPE svg>\n<svg/>",
                Refused::Svg,
            ),
            (b"%PDF-1.7\n", Refused::Pdf),
            (b"BM\x36\x00\x00\x00", Refused::Bmp),
            (b"II*\0\x08\0\0\0", Refused::Tiff),
            (b"MM\0*\0\0\0\x08", Refused::Tiff),
            (&mp4, Refused::Video),
            (&heic, Refused::Heif),
            (&avif, Refused::Avif),
            (b"\x1A\x45\xDF\xA3\x01", Refused::Video),
            (b"hello, world", Refused::Other),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Refused::sniff(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(Refused::Svg.to_string().contains("never"));
        assert!(Refused::Bmp.to_string().contains("JPEG, PNG, GIF and WebP"));
    }

    #[test]
    fn decode_failures_are_classified() {
        let cut = image::load_from_memory(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0])
            .unwrap_err();
        assert_eq!(DecodeFailure::of(&cut), DecodeFailure::Truncated, "{cut}");
    }
}
