// Test pictures use small, known sizes: truncating casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

use super::*;

fn limits() -> Limits {
    Limits {
        max_pixels: 32 * 1024 * 1024,
        max_frames: 1000,
        max_bytes: 256 << 20,
        max_animation_pixels: 200_000_000,
        formats: Formats::SAFE,
    }
}

fn spec(width: u32, height: u32, method: Method) -> Spec {
    Spec {
        width,
        height,
        method,
    }
}

/// A test picture: a horizontal gradient, so orientation is visible.
fn picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    })
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(picture(w, h))
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, 90,
        ))
        .unwrap();
    out
}

fn encode_as(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// The decoder comes from the bytes, never from a declared type.
#[test]
fn sniffing_picks_only_allowlisted_formats() {
    assert_eq!(sniff(&jpeg(8, 8)), Some(Format::Jpeg));
    let img = DynamicImage::ImageRgb8(picture(8, 8));
    assert_eq!(sniff(&encode_as(&img, ImageFormat::Png)), Some(Format::Png));
    assert_eq!(sniff(&encode_as(&img, ImageFormat::Gif)), Some(Format::Gif));
    assert_eq!(
        sniff(&encode_as(&img, ImageFormat::WebP)),
        Some(Format::Webp)
    );
    for (other, kind) in [
        (&b"%!PS-Adobe-3.0"[..], Refused::Other),
        (b"%PDF-1.7", Refused::Pdf),
        (b"II*\0tiff", Refused::Tiff),
        (b"\0\0\x01\0ico", Refused::Ico),
        (b"BM bmp", Refused::Bmp),
        (b"<svg", Refused::Svg),
        (b"", Refused::Other),
    ] {
        assert_eq!(sniff(other), None);
        assert_eq!(
            probe(other, limits()).unwrap_err(),
            ThumbnailError::Unsupported(kind)
        );
    }
}

/// Scale keeps aspect, crop fills the box, both from one decode.
#[test]
fn sizes_and_methods() {
    let out = generate(
        &jpeg(400, 300),
        &[
            spec(32, 32, Method::Crop),
            spec(96, 96, Method::Crop),
            spec(320, 240, Method::Scale),
            spec(100, 100, Method::Scale),
        ],
        limits(),
    )
    .unwrap();
    let dims: Vec<_> = out
        .iter()
        .map(|t| (t.width, t.height, t.content_type))
        .collect();
    assert_eq!(
        dims,
        vec![
            (32, 32, "image/jpeg"),
            (96, 96, "image/jpeg"),
            (320, 240, "image/jpeg"),
            (100, 75, "image/jpeg")
        ]
    );
    for t in &out {
        let decoded = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (t.width, t.height));
    }
}

/// No upscaling: a small original comes back at its own size.
#[test]
fn never_upscales() {
    let out = generate(
        &jpeg(50, 40),
        &[spec(320, 240, Method::Scale), spec(96, 96, Method::Crop)],
        limits(),
    )
    .unwrap();
    assert_eq!((out[0].width, out[0].height), (50, 40));
    assert_eq!((out[1].width, out[1].height), (40, 40));
}

/// Transparency is kept (PNG out); opaque PNGs become JPEG.
#[test]
fn alpha_is_kept() {
    let rgba = image::RgbaImage::from_fn(64, 64, |x, _| {
        image::Rgba([255, 0, 0, if x < 32 { 0 } else { 255 }])
    });
    let png = encode_as(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    let out = generate(&png, &[spec(32, 32, Method::Scale)], limits()).unwrap();
    assert_eq!(out[0].content_type, "image/png");
    let decoded = image::load_from_memory(&out[0].bytes).unwrap().to_rgba8();
    assert_eq!(decoded.get_pixel(0, 16).0[3], 0);
    assert_eq!(decoded.get_pixel(31, 16).0[3], 255);
    let opaque = encode_as(&DynamicImage::ImageRgb8(picture(64, 64)), ImageFormat::Png);
    assert_eq!(
        generate(&opaque, &[spec(32, 32, Method::Scale)], limits()).unwrap()[0].content_type,
        "image/jpeg"
    );
}

/// WebP stills go through libwebp: lossy opaque gives JPEG, alpha gives PNG
/// with the transparency where it was, and a cut-off file is an error.
#[test]
fn webp_stills_keep_geometry_and_alpha() {
    let rgb = picture(400, 300);
    let lossy = webp::Encoder::from_rgb(rgb.as_raw(), 400, 300).encode(80.0);
    let out = generate(
        &lossy,
        &[spec(320, 240, Method::Scale), spec(96, 96, Method::Crop)],
        limits(),
    )
    .unwrap();
    let got: Vec<_> = out
        .iter()
        .map(|t| (t.width, t.height, t.content_type))
        .collect();
    assert_eq!(got, vec![(320, 240, "image/jpeg"), (96, 96, "image/jpeg")]);
    let decoded = image::load_from_memory(&out[0].bytes).unwrap().to_rgb8();
    // The gradient survives: dark on the left, bright on the right.
    assert!(decoded.get_pixel(4, 120).0[0] < 30);
    assert!(decoded.get_pixel(315, 120).0[0] > 220);

    let rgba = image::RgbaImage::from_fn(64, 64, |x, _| {
        image::Rgba([0, 0, 255, if x < 32 { 0 } else { 255 }])
    });
    let alpha = webp::Encoder::from_rgba(rgba.as_raw(), 64, 64).encode_lossless();
    let out = generate(&alpha, &[spec(32, 32, Method::Scale)], limits()).unwrap();
    assert_eq!(out[0].content_type, "image/png");
    let decoded = image::load_from_memory(&out[0].bytes).unwrap().to_rgba8();
    assert_eq!(decoded.get_pixel(0, 16).0[3], 0);
    assert_eq!(decoded.get_pixel(31, 16).0[3], 255);

    assert!(matches!(
        generate(
            &lossy[..lossy.len() / 2],
            &[spec(32, 32, Method::Crop)],
            limits()
        ),
        Err(ThumbnailError::Decode(..))
    ));
}

/// EXIF orientation 6 (rotate 90): a 400x200 stored image is shown 200x400.
#[test]
fn exif_orientation_is_applied() {
    let base = jpeg(400, 200);
    // APP1 "Exif" with a little-endian TIFF header and one IFD entry: Orientation (0x0112) = 6.
    let tiff: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &0x0112u16.to_le_bytes(),
        &3u16.to_le_bytes(),
        &1u32.to_le_bytes(),
        &6u16.to_le_bytes(),
        &[0, 0],
        &0u32.to_le_bytes(),
    ]
    .concat();
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut with_exif = vec![0xFF, 0xD8, 0xFF, 0xE1];
    with_exif.extend_from_slice(&len.to_be_bytes());
    with_exif.extend_from_slice(&app1);
    with_exif.extend_from_slice(&base[2..]);
    let out = generate(&with_exif, &[spec(100, 100, Method::Scale)], limits()).unwrap();
    assert_eq!((out[0].width, out[0].height), (50, 100));
}

/// Bombs: a few bytes declaring 50,000 x 50,000 are refused from the header, fast.
#[test]
fn bombs_are_refused_before_decoding() {
    // JPEG: patch the SOF0 dimensions of a tiny real JPEG.
    let mut bomb = jpeg(16, 16);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 7].copy_from_slice(&50_000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&50_000u16.to_be_bytes());
    // PNG: a valid IHDR (CRC recomputed) saying 50,000 x 50,000.
    let mut png = encode_as(&DynamicImage::ImageRgb8(picture(4, 4)), ImageFormat::Png);
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    // GIF: logical screen 50,000 x 50,000 (u16 max 65,535) around a tiny frame.
    let mut gif = encode_as(&DynamicImage::ImageRgb8(picture(4, 4)), ImageFormat::Gif);
    gif[6..8].copy_from_slice(&50_000u16.to_le_bytes());
    gif[8..10].copy_from_slice(&50_000u16.to_le_bytes());
    for bytes in [bomb, png, gif] {
        let err = generate(&bytes, &[spec(320, 240, Method::Scale)], limits()).unwrap_err();
        assert!(
            matches!(
                err,
                ThumbnailError::TooManyPixels {
                    width: 50_000,
                    height: 50_000
                }
            ),
            "{err:?}"
        );
    }
}

/// A truncated file is a decode error, not a panic.
#[test]
fn truncated_files_are_errors() {
    let full = jpeg(200, 200);
    // A truncated JPEG may decode to a partial picture or fail: either is
    // fine, as long as nothing panics.
    let _ = generate(
        &full[..full.len() / 3],
        &[spec(32, 32, Method::Crop)],
        limits(),
    );
    let png = encode_as(&DynamicImage::ImageRgb8(picture(64, 64)), ImageFormat::Png);
    assert!(matches!(
        generate(&png[..60], &[spec(32, 32, Method::Crop)], limits()),
        Err(ThumbnailError::Decode(..))
    ));
}

/// The spec's default sizes.
fn defaults() -> Vec<Spec> {
    vec![
        spec(32, 32, Method::Crop),
        spec(96, 96, Method::Crop),
        spec(320, 240, Method::Scale),
        spec(640, 480, Method::Scale),
        spec(800, 600, Method::Scale),
    ]
}

/// Requests snap to the smallest configured size at least as large.
#[test]
fn requests_snap_to_configured_sizes() {
    let sizes = defaults();
    assert_eq!(
        snap(&sizes, 30, 30, Method::Crop),
        Some(spec(32, 32, Method::Crop))
    );
    assert_eq!(
        snap(&sizes, 33, 20, Method::Crop),
        Some(spec(96, 96, Method::Crop))
    );
    assert_eq!(
        snap(&sizes, 500, 100, Method::Scale),
        Some(spec(640, 480, Method::Scale))
    );
    assert_eq!(
        snap(&sizes, 5000, 5000, Method::Scale),
        Some(spec(800, 600, Method::Scale))
    );
    assert_eq!(
        snap(&[spec(320, 240, Method::Scale)], 10, 10, Method::Crop),
        Some(spec(320, 240, Method::Scale))
    );
    assert_eq!(snap(&[], 10, 10, Method::Crop), None);
}

proptest::proptest! {
    /// However many distinct sizes are asked for, only configured ones come out.
    #[test]
    fn any_request_gets_a_configured_size(w in 1u32..10_000, h in 1u32..10_000, crop in proptest::bool::ANY) {
        let sizes = defaults();
        let method = if crop { Method::Crop } else { Method::Scale };
        let got = snap(&sizes, w, h, method).unwrap();
        proptest::prop_assert!(sizes.contains(&got));
        proptest::prop_assert_eq!(got.method, method);
    }
}

fn animated_gif(frames: u8, w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30);
        for i in 0..frames {
            let img = image::RgbaImage::from_fn(w, h, |x, _| {
                image::Rgba([i.wrapping_mul(40), (x % 256) as u8, 0, 255])
            });
            encoder.encode_frame(image::Frame::new(img)).unwrap();
        }
    }
    out
}

/// animated=true on an animated GIF gives an animated WebP thumbnail of the right size.
#[test]
fn animated_gifs_stay_animated_when_asked() {
    let gif = animated_gif(5, 200, 100);
    let out = generate_animated(&gif, spec(96, 96, Method::Scale), limits())
        .unwrap()
        .unwrap();
    assert_eq!(
        (out.content_type, out.width, out.height),
        ("image/webp", 96, 48)
    );
    let frames = image::codecs::webp::WebPDecoder::new(Cursor::new(&out.bytes))
        .unwrap()
        .into_frames()
        .count();
    assert_eq!(frames, 5);
    // A still source has no animated thumbnail; the still path handles it.
    assert!(
        generate_animated(&jpeg(64, 64), spec(32, 32, Method::Crop), limits())
            .unwrap()
            .is_none()
    );
}

/// A GIF with more frames than the budget is refused before decoding.
#[test]
fn frame_budget_is_enforced_from_the_container() {
    let gif = animated_gif(30, 4, 4);
    let tight = Limits {
        max_pixels: 1 << 20,
        max_frames: 10,
        max_bytes: 256 << 20,
        max_animation_pixels: 200_000_000,
        formats: Formats::SAFE,
    };
    assert_eq!(
        probe(&gif, tight).unwrap_err(),
        ThumbnailError::TooManyFrames(30)
    );
    assert_eq!(
        generate(&gif, &[spec(2, 2, Method::Crop)], tight).unwrap_err(),
        ThumbnailError::TooManyFrames(30)
    );
}
