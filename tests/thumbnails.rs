//! Thumbnails over HTTP: the spec's rules (sizes, methods, no upscaling,
//! headers, errors), safety against hostile files, and storage (snapping,
//! deduplication, a second request is a read).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;

use common::*;
use image::{DynamicImage, ImageFormat};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

fn thumb_path(s: &str, id: &str, query: &str) -> String {
    format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?{query}")
}

async fn fetch(
    t: &TestServer,
    path: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = t.get(path, Some(ALICE)).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height())
}

/// Spec 4.3 #20-21, #24: scale keeps the aspect, crop matches the requested
/// one; inline disposition with a file name; an allowed image type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_crop_follow_the_spec() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(1200, 900), Some("image/jpeg"), Some("p.jpg"))
        .await;
    let (status, headers, body) = fetch(
        &t,
        &thumb_path(&s, &id, "width=320&height=240&method=scale"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"thumbnail.jpg\""
    );
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox")
    );
    assert_eq!(dims(&body), (320, 240));
    let (_, _, body) = fetch(&t, &thumb_path(&s, &id, "width=96&height=96&method=crop")).await;
    assert_eq!(dims(&body), (96, 96));
    // Default method is scale; a 700x100 request snaps to 800x600 and keeps 4:3.
    let (_, _, body) = fetch(&t, &thumb_path(&s, &id, "width=700&height=100")).await;
    assert_eq!(dims(&body), (800, 600));
    // HEAD gives the headers and length.
    let resp = t
        .http
        .head(t.url(&thumb_path(&s, &id, "width=96&height=96&method=crop")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 100
    );
}

/// Spec 4.3 #22-23: never upscale; a small original comes back as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_originals_are_served_as_they_are() {
    let t = TestServer::start().await;
    let small = photo(200, 100);
    let (s, id) = t.upload_ok(ALICE, &small, Some("image/jpeg"), None).await;
    let (status, headers, body) = fetch(&t, &thumb_path(&s, &id, "width=320&height=240")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(body, small, "the original bytes");
    // Larger than the request in one axis: a real thumbnail, never upscaled.
    let (_, _, body) = fetch(&t, &thumb_path(&s, &id, "width=96&height=96&method=crop")).await;
    assert_eq!(dims(&body), (96, 96));
    let (_, _, body) = fetch(&t, &thumb_path(&s, &id, "width=800&height=50&method=scale")).await;
    let (w, h) = dims(&body);
    assert!(w <= 200 && h <= 100);
}

/// PNG with transparency stays PNG with its alpha.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpha_survives() {
    let t = TestServer::start().await;
    let rgba = image::RgbaImage::from_fn(600, 600, |x, _| {
        image::Rgba([0, 0, 255, if x < 300 { 0 } else { 255 }])
    });
    let (s, id) = t
        .upload_ok(
            ALICE,
            &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            Some("image/png"),
            None,
        )
        .await;
    let (_, headers, body) =
        fetch(&t, &thumb_path(&s, &id, "width=96&height=96&method=crop")).await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"thumbnail.png\""
    );
    let img = image::load_from_memory(&body).unwrap().to_rgba8();
    assert_eq!(img.get_pixel(2, 48).0[3], 0);
    assert_eq!(img.get_pixel(93, 48).0[3], 255);
}

/// GIF and WebP sources give still thumbnails (animated or not asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gif_and_webp_sources_give_still_thumbnails() {
    let t = TestServer::start().await;
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(500, 400, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    }));
    for (format, ct) in [
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let (s, id) = t
            .upload_ok(ALICE, &encode(&img, format), Some(ct), None)
            .await;
        for animated in ["", "&animated=false", "&animated=true"] {
            let (status, headers, body) = fetch(
                &t,
                &thumb_path(&s, &id, &format!("width=320&height=240{animated}")),
            )
            .await;
            assert_eq!(status, 200, "{ct}");
            assert_eq!(headers["content-type"], "image/jpeg");
            assert_eq!(dims(&body), (300, 240));
        }
    }
}

/// Spec 4.3 #18: missing, non-integer, negative or zero sizes and a bad method are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(100, 100), Some("image/jpeg"), None)
        .await;
    assert_matrix_error(
        t.get(&thumb_path(&s, &id, "height=32"), Some(ALICE)).await,
        400,
        "M_MISSING_PARAM",
    )
    .await;
    assert_matrix_error(
        t.get(&thumb_path(&s, &id, "width=32"), Some(ALICE)).await,
        400,
        "M_MISSING_PARAM",
    )
    .await;
    for query in [
        "width=abc&height=3",
        "width=-5&height=3",
        "width=0&height=3",
        "width=3&height=3&method=stretch",
        "width=3&height=3&animated=maybe",
    ] {
        assert_matrix_error(
            t.get(&thumb_path(&s, &id, query), Some(ALICE)).await,
            400,
            "M_INVALID_PARAM",
        )
        .await;
    }
    assert_matrix_error(
        t.get(&thumb_path(&s, &id, "width=3&height=3"), None).await,
        401,
        "M_MISSING_TOKEN",
    )
    .await;
    assert_matrix_error(
        t.get(&thumb_path(&s, "nothere", "width=3&height=3"), Some(ALICE))
            .await,
        404,
        "M_NOT_FOUND",
    )
    .await;
}

/// Spec 4.3 #27: what cannot be thumbnailed is 400; a non-image labelled
/// image/png never reaches a decoder (the bytes choose, not the label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_images_are_refused_whatever_their_label() {
    let t = TestServer::start().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\n".to_vec(),
        b"%PDF-1.7\n1 0 obj\n".to_vec(),
        b"II*\x00\x08\x00\x00\x00\x01\x00\x00\x01\x03\x00".to_vec(),
        vec![0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0],
        b"PK\x03\x04zip".to_vec(),
    ];
    for body in bodies {
        let (s, id) = t.upload_ok(ALICE, &body, Some("image/png"), None).await;
        let resp = t
            .get(&thumb_path(&s, &id, "width=32&height=32"), Some(ALICE))
            .await;
        assert_matrix_error(resp, 400, "M_UNKNOWN").await;
    }
}

/// Bombs: files of a few bytes that declare 50,000 x 50,000 pixels upload
/// fine and are refused for thumbnailing with 413, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused() {
    let t = TestServer::start().await;
    let mut jpeg = photo(16, 16);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]);
    let mut png = encode(
        &DynamicImage::ImageRgb8(image::RgbImage::new(4, 4)),
        ImageFormat::Png,
    );
    png[16..24].copy_from_slice(&[0, 0, 0xC3, 0x50, 0, 0, 0xC3, 0x50]);
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let mut gif = encode(
        &DynamicImage::ImageRgb8(image::RgbImage::new(4, 4)),
        ImageFormat::Gif,
    );
    gif[6..10].copy_from_slice(&[0x50, 0xC3, 0x50, 0xC3]);
    for (bomb, ct) in [(jpeg, "image/jpeg"), (png, "image/png"), (gif, "image/gif")] {
        let (s, id) = t.upload_ok(ALICE, &bomb, Some(ct), None).await;
        let resp = t
            .get(&thumb_path(&s, &id, "width=320&height=240"), Some(ALICE))
            .await;
        assert_matrix_error(resp, 413, "M_TOO_LARGE").await;
        // The upload itself is intact.
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{s}/{id}"),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bomb.as_slice());
    }
}

/// Spec 4.7 #46: an original over the source size limit is 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sources_are_413() {
    let t =
        TestServer::start_with(|c| c.thumbnails.max_source_size = bytesize::ByteSize::kib(1)).await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(300, 300), Some("image/jpeg"), None)
        .await;
    assert_matrix_error(
        t.get(&thumb_path(&s, &id, "width=32&height=32"), Some(ALICE))
            .await,
        413,
        "M_TOO_LARGE",
    )
    .await;
}

/// 1,000 distinct requested sizes store at most one thumbnail per configured
/// size; identical thumbnails share a blob; the second request is a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_sizes_store_at_most_the_configured_count() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(1000, 800), Some("image/jpeg"), None)
        .await;
    let before = t.counts().await.blobs;
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000u32 {
        let (w, h) = (1 + (i * 7) % 900, 1 + (i * 13) % 700);
        let method = if i % 2 == 0 { "crop" } else { "scale" };
        let (status, _, body) = fetch(
            &t,
            &thumb_path(&s, &id, &format!("width={w}&height={h}&method={method}")),
        )
        .await;
        assert_eq!(status, 200);
        seen.insert(body);
    }
    let added = t.counts().await.blobs - before;
    assert!(added <= 5, "{added} thumbnail blobs for 5 configured sizes");
    assert!(seen.len() <= 5);
    // A second media with the same content shares the thumbnails' blobs.
    let (_, id2) = t
        .upload_ok(BOB, &photo(1000, 800), Some("image/jpeg"), None)
        .await;
    let _ = fetch(&t, &thumb_path(&s, &id2, "width=96&height=96&method=crop")).await;
    assert_eq!(t.counts().await.blobs - before, added);
}

/// Concurrent identical requests share one generation and one stored blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_generation() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(2000, 1500), Some("image/jpeg"), None)
        .await;
    let before = t.counts().await.blobs;
    let path = thumb_path(&s, &id, "width=640&height=480");
    let results = futures::future::join_all((0..20).map(|_| fetch(&t, &path))).await;
    let first = &results[0].2;
    assert!(
        results
            .iter()
            .all(|(status, _, body)| *status == 200 && body == first)
    );
    assert_eq!(t.counts().await.blobs - before, 1);
    let left = t.wait_for_blob_files(2, false).await;
    assert_eq!(left.len(), 2, "one original, one thumbnail: {left:?}");
}

/// Freeze: frozen media has no legacy thumbnail; unfrozen media does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_thumbnails_respect_the_freeze() {
    let mut t = TestServer::start_with(|c| c.media.freeze_unauthenticated = false).await;
    let (s, old) = t
        .upload_ok(ALICE, &photo(400, 400), Some("image/jpeg"), None)
        .await;
    t.config.media.freeze_unauthenticated = true;
    t.restart().await;
    let (_, new) = t
        .upload_ok(ALICE, &photo(400, 400), Some("image/jpeg"), None)
        .await;
    for version in ["r0", "v1", "v3"] {
        let resp = t
            .get(
                &format!(
                    "/_matrix/media/{version}/thumbnail/{s}/{old}?width=96&height=96&method=crop"
                ),
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
        let resp = t
            .get(
                &format!(
                    "/_matrix/media/{version}/thumbnail/{s}/{new}?width=96&height=96&method=crop"
                ),
                None,
            )
            .await;
        assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
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

fn frame_count(bytes: &[u8]) -> usize {
    use image::AnimationDecoder;
    image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .count()
}

/// Spec 4.3 #25: animated=true animates an animated source; false or absent never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animation_only_when_asked() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &animated_gif(6, 400, 300), Some("image/gif"), None)
        .await;
    let (status, headers, body) = fetch(
        &t,
        &thumb_path(&s, &id, "width=320&height=240&animated=true"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename=\"thumbnail.webp\""
    );
    assert_eq!(frame_count(&body), 6);
    assert_eq!(dims(&body), (320, 240));
    for query in [
        "width=320&height=240&animated=false",
        "width=320&height=240",
    ] {
        let (_, headers, body) = fetch(&t, &thumb_path(&s, &id, query)).await;
        assert_eq!(headers["content-type"], "image/jpeg", "{query}");
        assert_eq!(dims(&body), (320, 240));
    }
    // A still source asked for animation gives its still thumbnail.
    let (s2, id2) = t
        .upload_ok(ALICE, &photo(400, 300), Some("image/jpeg"), None)
        .await;
    let (_, headers, _) = fetch(
        &t,
        &thumb_path(&s2, &id2, "width=96&height=96&method=crop&animated=true"),
    )
    .await;
    assert_eq!(headers["content-type"], "image/jpeg");
}

/// A GIF of 10,000 tiny frames is refused from its structure, before decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_bombs_are_refused() {
    let t = TestServer::start().await;
    // Header, a 64x64 screen without colour table, then 10,000 minimal 1x1 frames.
    let mut gif = b"GIF89a\x40\x00\x40\x00\x00\x00\x00".to_vec();
    for _ in 0..10_000 {
        gif.extend_from_slice(&[
            0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00,
        ]);
    }
    gif.push(0x3B);
    let (s, id) = t.upload_ok(ALICE, &gif, Some("image/gif"), None).await;
    for animated in ["true", "false"] {
        let resp = t
            .get(
                &thumb_path(&s, &id, &format!("width=32&height=32&animated={animated}")),
                Some(ALICE),
            )
            .await;
        assert_matrix_error(resp, 413, "M_TOO_LARGE").await;
    }
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.bytes().await.unwrap().len(), gif.len());
}

/// Pre-generation: every configured size is made after upload, from one
/// decode, in the background; bombs and non-images still upload fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pregeneration_makes_every_size_without_delaying_uploads() {
    let t = TestServer::start_with(|c| c.thumbnails.pregenerate = true).await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(1600, 1200), Some("image/jpeg"), None)
        .await;
    let mut blobs = 0;
    for _ in 0..200 {
        blobs = t.counts().await.blobs;
        if blobs == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(blobs, 6, "the original and five thumbnails");
    let (status, _, body) = fetch(&t, &thumb_path(&s, &id, "width=96&height=96&method=crop")).await;
    assert_eq!((status.as_u16(), dims(&body)), (200, (96, 96)));
    assert_eq!(
        t.counts().await.blobs,
        6,
        "served from what was pre-generated"
    );

    let mut bomb = photo(16, 16);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]);
    t.upload_ok(ALICE, &bomb, Some("image/jpeg"), None).await;
    t.upload_ok(ALICE, b"%PDF-1.7", Some("image/png"), None)
        .await;
    // Both pre-generations have ended (refused), so nothing more can come.
    t.wait_for_metric(
        "mxmedia_thumbnail_pregenerations_total",
        "outcome=\"refused\"",
        2.0,
    )
    .await;
    assert_eq!(
        t.counts().await.blobs,
        8,
        "two originals more, no thumbnails"
    );
}

/// Conditional requests work as for downloads: a listed or weak matching ETag is 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_revalidate_with_etags() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &photo(400, 300), Some("image/jpeg"), None)
        .await;
    let path = thumb_path(&s, &id, "width=96&height=96&method=crop");
    let (_, headers, _) = fetch(&t, &path).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    for value in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let resp = t
            .http
            .get(t.url(&path))
            .bearer_auth(ALICE)
            .header("if-none-match", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{value}");
    }
    let resp = t
        .http
        .get(t.url(&path))
        .bearer_auth(ALICE)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An animated WebP as libwebp's animation encoder writes it (frames
/// stored as changed sub-rectangles at their own offsets): 12 frames of
/// 400x300, the first `blank` ones black, lossless or lossy, with alpha
/// when asked.
fn animated_webp(lossless: bool, alpha: bool, blank: usize) -> Vec<u8> {
    let (w, h) = (400u32, 300u32);
    let frames: Vec<Vec<u8>> = (0..12usize)
        .map(|i| {
            image::RgbaImage::from_fn(w, h, |x, y| {
                if i < blank {
                    image::Rgba([0, 0, 0, 255])
                } else {
                    let a = if alpha && x < 50 { 0 } else { 255 };
                    image::Rgba([(x as usize + i * 20) as u8, y as u8, (i * 20) as u8, a])
                }
            })
            .into_raw()
        })
        .collect();
    let mut config = webp::WebPConfig::new().unwrap();
    config.lossless = i32::from(lossless);
    config.quality = 75.0;
    let mut encoder = webp::AnimEncoder::new(w, h, &config);
    for (i, frame) in frames.iter().enumerate() {
        encoder.add_frame(webp::AnimFrame::from_rgba(frame, w, h, i as i32 * 80));
    }
    encoder.encode().to_vec()
}

/// The spread of brightness of a picture: near 0 for a blank one.
fn spread(bytes: &[u8]) -> f64 {
    let img = image::load_from_memory(bytes).unwrap().into_luma8();
    let n = img.len() as f64;
    let mean = img.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / n;
    (img.pixels()
        .map(|p| (f64::from(p.0[0]) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// The reported defect: still thumbnails of an animated WebP (what stickers
/// and bridged animations are) answered 400 "libwebp cannot decode the
/// image". Every kind of animated WebP now gives a still, in the sizes of
/// any still, showing a frame with content rather than a blank first one;
/// `animated=true` still animates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animated_webp_gives_still_thumbnails_of_a_representative_frame() {
    let t = TestServer::start().await;
    for (lossless, alpha, blank) in [
        (false, false, 0),
        (true, false, 3),
        (false, true, 2),
        (true, true, 0),
    ] {
        let source = animated_webp(lossless, alpha, blank);
        let (s, id) = t.upload_ok(ALICE, &source, Some("image/webp"), None).await;
        let case = format!("lossless={lossless} alpha={alpha} blank={blank}");
        for query in [
            "width=96&height=96&method=crop",
            "width=96&height=96&method=crop&animated=false",
            "width=320&height=240",
        ] {
            let (status, headers, body) = fetch(&t, &thumb_path(&s, &id, query)).await;
            assert_eq!(
                status,
                200,
                "{case} {query}: {}",
                String::from_utf8_lossy(&body)
            );
            // Transparency survives into the still when the frame shown has
            // it; a crop may cut the transparent strip away, and a strip drawn
            // over earlier opaque frames is composited onto them.
            let content_type = headers["content-type"].to_str().unwrap();
            if alpha && blank == 0 && !query.contains("crop") {
                assert_eq!(content_type, "image/png", "{case} {query}");
            } else if !alpha {
                assert_eq!(content_type, "image/jpeg", "{case} {query}");
            }
            let want = if query.contains("crop") {
                (96, 96)
            } else {
                (320, 240)
            };
            assert_eq!(dims(&body), want, "{case} {query}");
            assert!(
                spread(&body) > 20.0,
                "{case}: a blank frame stands for the animation"
            );
        }
        let (status, headers, body) = fetch(
            &t,
            &thumb_path(&s, &id, "width=96&height=96&method=crop&animated=true"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "image/webp");
        assert!(frame_count(&body) > 1, "{case}");
    }
}

/// Animated WebP made by Pillow, as the defect was first seen (see
/// `tests/fixtures/make_animated_webp.py`): 12 lossy frames of 400x300 that
/// fade in from black, and 8 lossless frames of 161x121 on a transparent
/// background. Still thumbnails come back in every method, showing content;
/// `animated=true` keeps them moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pillow_made_animated_webp_gives_stills() {
    const LOSSY: &[u8] = include_bytes!("fixtures/pillow-animated-lossy.webp");
    const ALPHA: &[u8] = include_bytes!("fixtures/pillow-animated-alpha.webp");
    let t = TestServer::start().await;
    for (name, source, still_type) in [
        ("lossy", LOSSY, "image/jpeg"),
        ("alpha", ALPHA, "image/png"),
    ] {
        let (s, id) = t.upload_ok(ALICE, source, Some("image/webp"), None).await;
        for (query, want) in [
            ("width=96&height=96&method=crop", (96, 96)),
            ("width=96&height=96&method=crop&animated=false", (96, 96)),
            ("width=320&height=240&method=scale", (320, 240)),
        ] {
            let (status, headers, body) = fetch(&t, &thumb_path(&s, &id, query)).await;
            assert_eq!(
                status,
                200,
                "{name} {query}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(headers["content-type"], still_type, "{name} {query}");
            let (w, h) = dims(&body);
            if name == "alpha" && query.contains("scale") {
                // Scale never enlarges: the 161x121 source comes back as is.
                assert_eq!((w, h), (161, 121), "{name} {query}");
            } else {
                assert_eq!((w, h), want, "{name} {query}");
            }
            assert!(spread(&body) > 10.0, "{name} {query}: a blank frame");
        }
        let (status, headers, body) = fetch(
            &t,
            &thumb_path(&s, &id, "width=96&height=96&method=crop&animated=true"),
        )
        .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(headers["content-type"], "image/webp");
        assert!(frame_count(&body) > 1, "{name}");
    }
}

/// Files mxmedia does not thumbnail get one clear answer each, the same
/// every time, whatever type the uploader claimed: 400 `M_UNKNOWN` naming
/// what the file is (SVG is never rasterised). Decoding failures of the
/// formats it does thumbnail are counted by kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_the_file_is() {
    let t = TestServer::start().await;
    let mut mp4 = vec![0, 0, 0, 0x18];
    mp4.extend_from_slice(b"ftypisom\0\0\0\0isommp41");
    let mut heic = vec![0, 0, 0, 0x18];
    heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0u8; 60]);
    let cases: [(&str, Vec<u8>, &str, &str); 6] = [
        (
            "svg",
            b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>".to_vec(),
            "image/svg+xml",
            "never thumbnailed",
        ),
        ("pdf", b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec(), "application/pdf", "PDF documents"),
        ("bmp", bmp, "image/bmp", "BMP images"),
        ("tiff", b"II*\0\x08\0\0\0\0\0".to_vec(), "image/png", "TIFF images"),
        ("video", mp4, "video/mp4", "videos are not thumbnailed"),
        ("heif", heic, "image/heic", "HEIC/HEIF images"),
    ];
    for (kind, bytes, claimed, says) in &cases {
        let (s, id) = t.upload_ok(ALICE, bytes, Some(claimed), None).await;
        for query in ["width=96&height=96&method=crop", "width=320&height=240"] {
            for _ in 0..2 {
                let (status, _, body) = fetch(&t, &thumb_path(&s, &id, query)).await;
                assert_eq!(status, 400, "{kind} {query}");
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(error["errcode"], "M_UNKNOWN", "{kind}");
                let text = error["error"].as_str().unwrap();
                assert!(text.contains(says), "{kind}: {text}");
                assert!(text.contains("JPEG, PNG, GIF and WebP"), "{kind}: {text}");
            }
        }
    }
    // A JPEG cut short: a decoding failure of a thumbnailed format.
    let photo = picture(640, 480, 9, image::ImageFormat::Jpeg);
    let cut = &photo[..photo.len() / 2];
    let (s, id) = t.upload_ok(ALICE, cut, Some("image/jpeg"), None).await;
    let (status, _, body) = fetch(&t, &thumb_path(&s, &id, "width=96&height=96")).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    let count = |labels: &str| t.metric("mxmedia_thumbnails_refused_total", labels);
    for (kind, ..) in &cases {
        assert_eq!(
            count(&format!("reason=\"unsupported\",detail=\"{kind}\"")),
            4.0,
            "{kind}"
        );
    }
    let decode: f64 = ["truncated", "invalid", "unsupported_feature", "other"]
        .iter()
        .map(|d| count(&format!("reason=\"decode_failed\",detail=\"{d}\"")))
        .sum();
    assert_eq!(decode, 1.0);
    assert_eq!(
        count("reason=\"decode_failed\",detail=\"truncated\""),
        1.0,
        "a cut JPEG is truncated"
    );
}
