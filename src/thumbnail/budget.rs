//! What a thumbnail will cost in memory and work, decided from the header
//! and container before any pixel is decoded. Estimates are upper bounds of
//! what the decoders, the resizer and the encoders hold at once, so a job
//! that passes cannot grow past its budget whatever the picture says.

use super::{Format, Method, Probe, Spec, geometry};

/// Bytes per pixel of an RGBA buffer.
const RGBA: u64 = 4;

/// Peak bytes to make the still thumbnails `specs` of a picture: the
/// decoded source (at its DCT-scaled size for JPEG), the decoder's own
/// planes, the resizer's intermediate and every output with its encoding.
pub fn still_cost(bytes: &[u8], probe: &Probe, specs: &[Spec]) -> u64 {
    let (w, h) = (u64::from(probe.width), u64::from(probe.height));
    let pixels = w * h;
    let decode = match probe.format {
        Format::Jpeg => {
            let (want_w, want_h) = super::decode_target(specs, probe.width, probe.height);
            // The decoder shrinks by 1/2, 1/4 or 1/8 while decoding.
            let scale = [8u64, 4, 2]
                .into_iter()
                .find(|s| w / s >= u64::from(want_w) && h / s >= u64::from(want_h))
                .unwrap_or(1);
            // Three components (CMYK, rarer, takes the full path below).
            let decoded = w.div_ceil(scale) * h.div_ceil(scale) * 4;
            // A progressive decoder holds every DCT coefficient (2 bytes a
            // sample) of up to 4 components at full size.
            let coefficients = if is_progressive_jpeg(bytes) {
                pixels * 4 * 2
            } else {
                0
            };
            decoded + coefficients
        }
        // 16-bit samples are decoded wide, then brought down to 8 bits.
        Format::Png if png_bit_depth(bytes) == Some(16) => pixels * (8 + RGBA),
        // PNG: the decoded picture and its 8-bit RGBA conversion; GIF: the
        // composed canvas and the frame drawn on it; WebP: libwebp's output
        // and, for lossless pictures, its ARGB plane.
        Format::Png | Format::Gif | Format::Webp => pixels * RGBA * 2,
        // libheif's YCbCr planes, its interleaved RGB(A) and our copy of it.
        Format::Heic | Format::Avif => pixels * RGBA * 3,
    };
    decode + outputs(specs, probe.width, probe.height, probe.height)
}

/// How many frames of an animation to make into an animated thumbnail at
/// `spec` within `max_bytes` and `max_pixels` of decoding work (frames x
/// canvas). Fewer than two means: make a still thumbnail instead.
pub fn animation_frames(probe: &Probe, spec: Spec, max_bytes: u64, max_pixels: u64) -> u64 {
    let canvas = u64::from(probe.width) * u64::from(probe.height);
    let plan = plan(spec, probe.width, probe.height);
    let frame_out = u64::from(plan.width) * u64::from(plan.height) * RGBA;
    // Per decoded frame, freed before the next: the decoder's canvas, the
    // frame it returns, our RGBA copy, and the resizer's intermediate.
    let transient = canvas * RGBA * 3 + u64::from(plan.width) * u64::from(probe.height) * RGBA;
    // The encoder's working frames and its output.
    let encoder = frame_out * 6;
    let Some(room) = max_bytes.checked_sub(transient + encoder) else {
        return 0;
    };
    let by_memory = room / frame_out.max(1);
    let by_work = max_pixels / canvas.max(1);
    probe.frames.min(by_memory).min(by_work)
}

/// Resized images, the resizer's intermediate and the encoded outputs.
fn outputs(specs: &[Spec], width: u32, height: u32, source_rows: u32) -> u64 {
    specs
        .iter()
        .map(|spec| {
            let plan = plan(*spec, width, height);
            let out = u64::from(plan.width) * u64::from(plan.height) * RGBA;
            let intermediate = u64::from(plan.width) * u64::from(source_rows) * RGBA;
            out * 2 + intermediate
        })
        .max()
        .unwrap_or(0)
        // Outputs made one after another, the largest counted for all.
        * u64::try_from(specs.len()).unwrap_or(u64::MAX).min(2)
}

fn plan(spec: Spec, width: u32, height: u32) -> geometry::Plan {
    match spec.method {
        Method::Scale => geometry::scale(width, height, spec.width, spec.height),
        Method::Crop => geometry::crop(width, height, spec.width, spec.height),
    }
}

/// Whether a JPEG's frame header is progressive (SOF2) rather than
/// baseline or extended sequential, read from its marker segments.
pub fn is_progressive_jpeg(bytes: &[u8]) -> bool {
    let mut pos = 2;
    while let Some(&[0xFF, marker]) = bytes.get(pos..pos + 2) {
        match marker {
            0xC2 | 0xC6 | 0xCA | 0xCE => return true,
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF | 0xDA => return false,
            // Fill bytes before a marker.
            0xFF => pos += 1,
            _ => {
                let Some(len) = bytes.get(pos + 2..pos + 4) else {
                    return false;
                };
                pos += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    false
}

/// A PNG's bit depth, from its IHDR chunk.
fn png_bit_depth(bytes: &[u8]) -> Option<u8> {
    (bytes.get(12..16)? == b"IHDR").then(|| bytes.get(24).copied())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(format: Format, width: u32, height: u32, frames: u64) -> Probe {
        Probe {
            format,
            width,
            height,
            frames,
        }
    }

    const THUMB: Spec = Spec {
        width: 320,
        height: 240,
        method: Method::Scale,
    };

    /// The reported attack: hundreds of tiny frames on a huge canvas. Its
    /// work is bounded by frames x canvas, and a canvas too large for the
    /// budget gives a still.
    #[test]
    fn huge_canvases_get_few_frames_or_a_still() {
        let attack = probe(Format::Gif, 5000, 5000, 500);
        assert_eq!(animation_frames(&attack, THUMB, 256 << 20, 200_000_000), 0);
        let attack = probe(Format::Gif, 2000, 2000, 500);
        let frames = animation_frames(&attack, THUMB, 256 << 20, 200_000_000);
        assert_eq!(frames, 50, "bounded by work: 200 M pixels / 4 M");
        // A normal sticker keeps every frame.
        let sticker = probe(Format::Webp, 512, 512, 60);
        assert_eq!(
            animation_frames(&sticker, THUMB, 256 << 20, 200_000_000),
            60
        );
    }

    /// Frames held for the encoder are what bounds a long small animation.
    #[test]
    fn long_animations_are_cut_to_the_memory_budget() {
        let long = probe(Format::Gif, 640, 480, 1000);
        let frames = animation_frames(&long, THUMB, 64 << 20, u64::MAX);
        assert!((100..1000).contains(&frames), "{frames}");
        let out = 320 * 240 * 4;
        assert!(frames * out <= 64 << 20);
    }

    /// JPEG costs follow the DCT scale; progressive files pay for their
    /// coefficients.
    #[test]
    fn jpeg_costs_follow_the_decoder() {
        let big = probe(Format::Jpeg, 4000, 3000, 1);
        let baseline = b"\xFF\xD8\xFF\xC0\x00\x11";
        let progressive = b"\xFF\xD8\xFF\xE0\x00\x04ab\xFF\xC2\x00\x11";
        assert!(!is_progressive_jpeg(baseline));
        assert!(is_progressive_jpeg(progressive));
        let cheap = still_cost(baseline, &big, &[THUMB]);
        let dear = still_cost(progressive, &big, &[THUMB]);
        assert!(cheap < 16 << 20, "{cheap}");
        assert!(dear > 90 << 20, "{dear}");
    }
}
