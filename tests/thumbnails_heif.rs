//! HEIC (iPhone photos) and AVIF (browsers' format) thumbnails, in a build
//! with the `heif` feature: `cargo test --features heif --test
//! thumbnails_heif`. The pictures are made for the test by Debian's
//! `heif-enc` (libheif-examples: x265 for HEIC, aom for AVIF), as phones
//! and browsers make them; without it the test says so and checks nothing.
#![cfg(feature = "heif")]
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use mxmedia::thumbnail::Format;

/// `heif-enc` output for `png` (`avif`: AV1 instead of HEVC), or `None`
/// when heif-enc is not installed.
fn encode(dir: &Path, png: &[u8], name: &str, avif: bool) -> Option<Vec<u8>> {
    let input = dir.join(format!("{name}.png"));
    std::fs::write(&input, png).unwrap();
    let output = dir.join(name);
    let mut command = std::process::Command::new("heif-enc");
    if avif {
        command.arg("-A");
    }
    let status = command
        .args(["-q", "50", "-o"])
        .arg(&output)
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    assert!(status.success(), "heif-enc {name}");
    Some(std::fs::read(output).unwrap())
}

fn rgba_picture(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(width, height, |x, y| {
        let inside = (x as i64 - width as i64 / 2).pow(2) + (y as i64 - height as i64 / 2).pow(2)
            < (height as i64 / 3).pow(2);
        image::Rgba([
            (x % 256) as u8,
            (y % 256) as u8,
            90,
            if inside { 255 } else { 0 },
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn thumb(t: &TestServer, s: &str, id: &str, query: &str) -> (u16, String, Vec<u8>) {
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?{query}"),
            Some(ALICE),
        )
        .await;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heic_and_avif_give_thumbnails_when_listed() {
    let dir = tempfile::tempdir().unwrap();
    let photo = picture(1600, 1200, 40, image::ImageFormat::Png);
    let Some(heic) = encode(dir.path(), &photo, "photo.heic", false) else {
        println!("heif-enc is not installed (apt-get install libheif-examples): nothing checked");
        return;
    };
    let avif = encode(dir.path(), &photo, "photo.avif", true).unwrap();
    let alpha = encode(dir.path(), &rgba_picture(400, 300), "alpha.heic", false).unwrap();

    let t = TestServer::start_with(|c| {
        c.thumbnails.formats = vec![
            Format::Jpeg,
            Format::Png,
            Format::Gif,
            Format::Webp,
            Format::Heic,
            Format::Avif,
        ];
    })
    .await;
    for (name, bytes, claimed, still) in [
        ("heic", &heic, "image/heic", "image/jpeg"),
        ("avif", &avif, "image/avif", "image/jpeg"),
        ("heic with alpha", &alpha, "image/heic", "image/png"),
    ] {
        let (s, id) = t.upload_ok(ALICE, bytes, Some(claimed), None).await;
        for (query, want) in [
            ("width=96&height=96&method=crop", (96, 96)),
            ("width=320&height=240&method=scale", (320, 240)),
        ] {
            let (status, content_type, body) = thumb(&t, &s, &id, query).await;
            assert_eq!(
                status,
                200,
                "{name} {query}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(content_type, still, "{name} {query}");
            let img = image::load_from_memory(&body).unwrap();
            assert_eq!((img.width(), img.height()), want, "{name} {query}");
        }
    }
    t.stop().await;

    // Not listed (the default): the same clear refusal as any other format.
    let t = TestServer::start().await;
    let (s, id) = t.upload_ok(ALICE, &heic, Some("image/heic"), None).await;
    let (status, _, body) = thumb(&t, &s, &id, "width=96&height=96&method=crop").await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("HEIC/HEIF images are not thumbnailed on this server"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    t.stop().await;

    // The pixel budget is read from the container, before decoding.
    let t = TestServer::start_with(|c| {
        c.thumbnails.formats = vec![Format::Heic, Format::Avif];
        c.thumbnails.max_pixels = 1_000_000;
    })
    .await;
    for (name, bytes) in [("heic", &heic), ("avif", &avif)] {
        let (s, id) = t.upload_ok(ALICE, bytes, None, None).await;
        let (status, _, body) = thumb(&t, &s, &id, "width=96&height=96&method=crop").await;
        assert_eq!(status, 413, "{name}: {}", String::from_utf8_lossy(&body));
    }
    t.stop().await;
}
