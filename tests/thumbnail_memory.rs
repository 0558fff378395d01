//! Rule 8 and 10 on the real process: hostile pictures and concurrent
//! thumbnail requests keep the server's extra memory under the documented
//! bound, thumbnail permits x (`max_job_memory` + `max_source_size`). Its own
//! test binary, so nothing else runs in the measured process's lifetime.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use common::*;
use process::RealServer;

const MIB: u64 = 1024 * 1024;

/// A GIF of `frames` one-pixel frames on a `width` x `height` canvas: a few
/// bytes per frame, a full canvas per frame for a decoder that composes.
fn tiny_frames_on_a_huge_canvas(width: u16, height: u16, frames: usize) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    // Global colour table of two entries: black, white.
    gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    // Loop forever (NETSCAPE2.0), so it reads as an animation.
    gif.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00");
    for i in 0..frames {
        // Graphic control: 20 ms delay.
        gif.extend_from_slice(&[0x21, 0xF9, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00]);
        let x = (i % usize::from(width)) as u16;
        gif.push(0x2C);
        gif.extend_from_slice(&x.to_le_bytes());
        gif.extend_from_slice(&0u16.to_le_bytes());
        gif.extend_from_slice(&1u16.to_le_bytes());
        gif.extend_from_slice(&1u16.to_le_bytes());
        gif.push(0);
        // LZW, minimum code size 2: clear, index 0, end.
        gif.extend_from_slice(&[0x02, 0x02, 0x44, 0x01, 0x00]);
    }
    gif.push(0x3B);
    gif
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

async fn upload(s: &RealServer, body: Vec<u8>, content_type: &str) -> String {
    let resp = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mxc: serde_json::Value = resp.json().await.unwrap();
    split_mxc(mxc["content_uri"].as_str().unwrap()).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_thumbnails_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let (permits, job, source) = (2, 64 * MIB, 16 * MIB);
    let s = RealServer::start(
        dir.path(),
        &format!(
            "server_name: {SERVER_NAME}\ndata_dir: ./data\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\nthumbnails: {{concurrency: {permits}, max_job_memory: {job}, max_source_size: {source}, max_animation_pixels: 20000000}}\n",
            hs.url
        ),
    )
    .await;

    // The reported attack: 999 one-pixel frames on a 4000 x 4000 canvas.
    let attack = tiny_frames_on_a_huge_canvas(4000, 4000, 999);
    println!("attack GIF: {} KB", attack.len() / 1024);
    assert!(attack.len() < 32 * 1024);
    let attack = upload(&s, attack, "image/gif").await;
    // The same on a canvas small enough to animate: cut to what fits.
    let long = upload(
        &s,
        tiny_frames_on_a_huge_canvas(1500, 1500, 999),
        "image/gif",
    )
    .await;
    // Not an image at all, but as large as a source may be.
    let junk: Vec<u8> = (0..source as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let junk = upload(&s, junk, "image/png").await;
    // A real photo, within every budget.
    let photo = upload(&s, jpeg(3000, 2000), "image/jpeg").await;

    let (baseline, _) = s.rss();
    let sizes = [
        "32&height=32&method=crop",
        "96&height=96&method=crop",
        "320&height=240",
        "640&height=480",
        "800&height=600",
    ];
    let mut requests = Vec::new();
    for round in 0..3 {
        for id in [&attack, &long, &junk, &photo] {
            for (i, size) in sizes.iter().enumerate() {
                let animated = (i + round) % 2 == 0;
                let url = s.url(&format!(
                    "/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?width={size}&animated={animated}"
                ));
                let http = s.http.clone();
                requests.push(tokio::spawn(async move {
                    let resp = http.get(url).bearer_auth(ALICE).send().await.unwrap();
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap();
                    (status, body)
                }));
            }
        }
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        if status != 200 {
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{status} without a Matrix body"));
            assert!(json["errcode"].is_string());
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    let (_, peak) = s.rss();
    let grown = peak.saturating_sub(baseline);
    let bound = permits * (job + source);
    println!(
        "outcomes {outcomes:?}; peak RSS grew by {} MiB over {} MiB (bound {} MiB)",
        grown / MIB,
        baseline / MIB,
        bound / MIB
    );
    assert!(
        outcomes.get(&200).copied().unwrap_or(0) >= 15,
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains_key(&413),
        "the attack is refused: {outcomes:?}"
    );
    assert!(grown < bound, "grew by {} MiB", grown / MIB);

    // The degraded animation is animated, with fewer frames than the source.
    let resp = s
        .http
        .get(s.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{long}?width=320&height=240&animated=true"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/webp");
    let bytes = resp.bytes().await.unwrap();
    let frames = image::AnimationDecoder::into_frames(
        image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap(),
    )
    .count();
    println!("999-frame animation on a 1500 x 1500 canvas: {frames} frames made");
    assert!((2..999).contains(&frames), "{frames}");
}
