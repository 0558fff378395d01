//! Benchmark inputs, generated (seeded, deterministic), never downloaded:
//! photo-like pictures with texture and noise, so they compress like photos
//! and the decoders do realistic work.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A small, fast, seeded pseudo-random generator (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }
}

/// Smooth shapes (sky, hills, a sun) plus per-pixel noise of about +-8.
pub fn photo(w: u32, h: u32) -> RgbImage {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let hill = 0.6 + 0.1 * (fx * 9.0).sin() + 0.05 * (fx * 31.0).cos();
        let sun = ((fx - 0.7).powi(2) + (fy - 0.25).powi(2)).sqrt() < 0.08;
        let base = if sun {
            [250.0, 220.0, 120.0]
        } else if fy > hill {
            [
                40.0 + 60.0 * fx,
                120.0 - 40.0 * fy,
                50.0 + 30.0 * (fx * 50.0).sin(),
            ]
        } else {
            [90.0 + 100.0 * fy, 140.0 + 80.0 * fy, 230.0 - 40.0 * fx]
        };
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().zip(base) {
            *c = (v + f32::from(noise.next() % 17) - 8.0).clamp(0.0, 255.0) as u8;
        }
        Rgb(px)
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode input");
    out.into_inner()
}

/// 4000x3000 baseline JPEG, quality 90.
pub fn jpeg_12mp() -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&photo(4000, 3000))
        .expect("encode jpeg");
    out
}

/// The same picture as a progressive JPEG, quality 90.
pub fn jpeg_12mp_progressive() -> Vec<u8> {
    let img = photo(4000, 3000);
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    encoder.set_progressive(true);
    encoder
        .encode(img.as_raw(), 4000, 3000, jpeg_encoder::ColorType::Rgb)
        .expect("encode progressive jpeg");
    out
}

/// 1920x1080 RGBA PNG with a radial alpha vignette and transparent holes.
pub fn png_2mp_alpha() -> Vec<u8> {
    let photo = photo(1920, 1080);
    let rgba = RgbaImage::from_fn(1920, 1080, |x, y| {
        let Rgb([r, g, b]) = *photo.get_pixel(x, y);
        let (dx, dy) = (x as f32 / 1920.0 - 0.5, y as f32 / 1080.0 - 0.5);
        let hole = (x / 160 + y / 160) % 7 == 0;
        let alpha = if hole {
            40
        } else {
            (255.0 * (1.0 - (dx * dx + dy * dy).sqrt() * 1.2)).clamp(0.0, 255.0) as u8
        };
        Rgba([r, g, b, alpha])
    });
    encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png)
}

/// 4000x3000 lossy WebP at quality 80 (libwebp), the usual kind of WebP photo.
pub fn webp_12mp() -> Vec<u8> {
    webp::Encoder::from_rgb(photo(4000, 3000).as_raw(), 4000, 3000)
        .encode(80.0)
        .to_vec()
}

/// The same picture as lossless WebP: the decoder's worst case for memory.
pub fn webp_12mp_lossless() -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(photo(4000, 3000)),
        ImageFormat::WebP,
    )
}

/// 50 frames of 480x270, a pan over the picture, 40 ms per frame.
pub fn gif_50_frames() -> Vec<u8> {
    let big = photo(960, 540);
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .expect("repeat");
        for i in 0..50u32 {
            let frame = image::imageops::crop_imm(&big, i * 9, i * 5, 480, 270).to_image();
            let rgba = DynamicImage::ImageRgb8(frame).into_rgba8();
            let delay = image::Delay::from_numer_denom_ms(40, 1);
            encoder
                .encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))
                .expect("encode frame");
        }
    }
    out
}

/// 50 frames of 480x270, the pan of `gif_50_frames` as a lossy animated
/// WebP (libwebp's animation encoder, quality 75), fading in from black
/// over the first four frames as clips often do: a still shows a later
/// frame, so the representative-frame search does its real work.
pub fn webp_animated_50() -> Vec<u8> {
    let big = photo(960, 540);
    let frames: Vec<Vec<u8>> = (0..50u32)
        .map(|i| {
            let frame = image::imageops::crop_imm(&big, i * 9, i * 5, 480, 270).to_image();
            let fade = (i as f32 / 4.0).min(1.0);
            RgbaImage::from_fn(480, 270, |x, y| {
                let p = frame.get_pixel(x, y).0;
                Rgba([
                    (f32::from(p[0]) * fade) as u8,
                    (f32::from(p[1]) * fade) as u8,
                    (f32::from(p[2]) * fade) as u8,
                    255,
                ])
            })
            .into_raw()
        })
        .collect();
    animated_webp(&frames, 480, 270, false, 40)
}

/// A 512x512 animated sticker: 24 lossless frames with transparency (a
/// disc moving over a transparent canvas), 60 ms a frame.
pub fn webp_sticker_24() -> Vec<u8> {
    let frames: Vec<Vec<u8>> = (0..24u32)
        .map(|i| {
            let (cx, cy) = (128.0 + 10.0 * i as f32, 256.0);
            RgbaImage::from_fn(512, 512, |x, y| {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                if d < 110.0 {
                    Rgba([(x / 2) as u8, (y / 2) as u8, (i * 10) as u8, 255])
                } else {
                    Rgba([0, 0, 0, 0])
                }
            })
            .into_raw()
        })
        .collect();
    animated_webp(&frames, 512, 512, true, 60)
}

fn animated_webp(frames: &[Vec<u8>], w: u32, h: u32, lossless: bool, delay_ms: i32) -> Vec<u8> {
    let mut config = webp::WebPConfig::new().expect("webp config");
    config.lossless = i32::from(lossless);
    config.quality = 75.0;
    let mut encoder = webp::AnimEncoder::new(w, h, &config);
    for (i, frame) in frames.iter().enumerate() {
        encoder.add_frame(webp::AnimFrame::from_rgba(frame, w, h, i as i32 * delay_ms));
    }
    encoder.encode().to_vec()
}
