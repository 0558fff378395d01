//! mxmedia's side of `scripts/thumb_bench.py`: `gen DIR` writes the
//! generated inputs; `run FILE OP` makes one thumbnail case six times (one
//! warm-up, five timed) and prints the median and this process's peak RSS
//! as one JSON line. One case per process, so the peak is the case's own.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/inputs.rs"]
mod inputs;

use std::time::Instant;

use mxmedia::thumbnail::{Format, Formats, Limits, Method, Spec, generate, generate_animated};

/// Every format this build decodes: HEIC and AVIF when built with the
/// `heif` feature (without it they are refused, and the bench says so).
fn limits() -> Limits {
    Limits {
        max_pixels: 32 * 1024 * 1024,
        max_frames: 1000,
        max_bytes: 256 << 20,
        max_animation_pixels: 200_000_000,
        formats: Formats::of(&[
            Format::Jpeg,
            Format::Png,
            Format::Gif,
            Format::Webp,
            Format::Heic,
            Format::Avif,
        ]),
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn spec(width: u32, height: u32, method: Method) -> Spec {
    Spec {
        width,
        height,
        method,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let dir = std::path::Path::new(&args[2]);
            std::fs::create_dir_all(dir).unwrap();
            for (name, bytes) in [
                ("photo12mp.jpg", inputs::jpeg_12mp()),
                ("photo12mp_prog.jpg", inputs::jpeg_12mp_progressive()),
                ("alpha2mp.png", inputs::png_2mp_alpha()),
                ("photo12mp.webp", inputs::webp_12mp()),
                ("photo12mp_lossless.webp", inputs::webp_12mp_lossless()),
                ("anim50.gif", inputs::gif_50_frames()),
                ("anim50.webp", inputs::webp_animated_50()),
                ("sticker24.webp", inputs::webp_sticker_24()),
            ] {
                std::fs::write(dir.join(name), &bytes).unwrap();
                println!("{name}: {} bytes", bytes.len());
            }
        }
        Some("run") => {
            let bytes = std::fs::read(&args[2]).unwrap();
            let op = args[3].as_str();
            let specs = match op {
                "scale320" => vec![spec(320, 240, Method::Scale)],
                "crop96" => vec![spec(96, 96, Method::Crop)],
                "all5" => vec![
                    spec(32, 32, Method::Crop),
                    spec(96, 96, Method::Crop),
                    spec(320, 240, Method::Scale),
                    spec(640, 480, Method::Scale),
                    spec(800, 600, Method::Scale),
                ],
                "anim" => vec![spec(320, 180, Method::Scale)],
                other => panic!("unknown op {other}"),
            };
            let limits = limits();
            let mut times = Vec::new();
            let mut out_bytes = 0;
            for _ in 0..6 {
                let start = Instant::now();
                out_bytes = if op == "anim" {
                    generate_animated(&bytes, specs[0], limits)
                        .unwrap()
                        .unwrap()
                        .bytes
                        .len()
                } else {
                    match generate(&bytes, &specs, limits) {
                        Ok(thumbnails) => thumbnails,
                        Err(e) => {
                            eprintln!("{e}");
                            std::process::exit(1);
                        }
                    }
                    .iter()
                    .map(|t| t.bytes.len())
                    .sum()
                };
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            let mut timed = times[1..].to_vec();
            timed.sort_by(f64::total_cmp);
            println!(
                "{{\"median_ms\": {:.2}, \"peak_rss_mb\": {:.1}, \"out_bytes\": {out_bytes}}}",
                timed[2],
                peak_rss_mb()
            );
        }
        _ => eprintln!("usage: thumb_compare gen DIR | run FILE OP"),
    }
}
