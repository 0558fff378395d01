//! Thumbnail pipeline benchmarks (criterion): decode + resize + encode per
//! input and size, on generated inputs. `scripts/thumb-bench` runs the same
//! cases single-core next to Synapse's Pillow code and libvips, with peak
//! memory, and writes docs/benchmarks.md.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/inputs.rs"]
mod inputs;

use criterion::{Criterion, criterion_group, criterion_main};
use mxmedia::thumbnail::{Limits, Method, Spec, generate, generate_animated};

const LIMITS: Limits = Limits {
    max_pixels: 32 * 1024 * 1024,
    max_frames: 1000,
    max_bytes: 256 << 20,
    max_animation_pixels: 200_000_000,
    formats: mxmedia::thumbnail::Formats::SAFE,
};

fn spec(width: u32, height: u32, method: Method) -> Spec {
    Spec {
        width,
        height,
        method,
    }
}

fn all_five() -> Vec<Spec> {
    vec![
        spec(32, 32, Method::Crop),
        spec(96, 96, Method::Crop),
        spec(320, 240, Method::Scale),
        spec(640, 480, Method::Scale),
        spec(800, 600, Method::Scale),
    ]
}

fn thumbnails(c: &mut Criterion) {
    let mut group = c.benchmark_group("thumbnail");
    group.sample_size(10);
    let cases = [
        ("jpeg12mp", inputs::jpeg_12mp()),
        ("jpeg12mp_progressive", inputs::jpeg_12mp_progressive()),
        ("png2mp_alpha", inputs::png_2mp_alpha()),
        ("webp12mp", inputs::webp_12mp()),
        ("webp12mp_lossless", inputs::webp_12mp_lossless()),
    ];
    for (name, bytes) in &cases {
        group.bench_function(format!("{name}/scale320x240"), |b| {
            b.iter(|| generate(bytes, &[spec(320, 240, Method::Scale)], LIMITS).unwrap())
        });
        group.bench_function(format!("{name}/crop96"), |b| {
            b.iter(|| generate(bytes, &[spec(96, 96, Method::Crop)], LIMITS).unwrap())
        });
    }
    let (_, jpeg) = &cases[0];
    group.bench_function("jpeg12mp/all5", |b| {
        b.iter(|| generate(jpeg, &all_five(), LIMITS).unwrap())
    });
    let gif = inputs::gif_50_frames();
    group.bench_function("gif50/first_frame320", |b| {
        b.iter(|| generate(&gif, &[spec(320, 240, Method::Scale)], LIMITS).unwrap())
    });
    group.bench_function("gif50/animated320", |b| {
        b.iter(|| {
            generate_animated(&gif, spec(320, 180, Method::Scale), LIMITS)
                .unwrap()
                .unwrap()
        })
    });
    let webp = inputs::webp_animated_50();
    group.bench_function("webp50/still320", |b| {
        b.iter(|| generate(&webp, &[spec(320, 240, Method::Scale)], LIMITS).unwrap())
    });
    group.bench_function("webp50/animated320", |b| {
        b.iter(|| {
            generate_animated(&webp, spec(320, 180, Method::Scale), LIMITS)
                .unwrap()
                .unwrap()
        })
    });
    let sticker = inputs::webp_sticker_24();
    group.bench_function("sticker24/still96", |b| {
        b.iter(|| generate(&sticker, &[spec(96, 96, Method::Crop)], LIMITS).unwrap())
    });
    group.finish();
}

criterion_group!(benches, thumbnails);
criterion_main!(benches);
