//! Frame counting from the container structure alone, without decoding any
//! image data, so animations over the frame budget are refused before work;
//! and the frame that stands for an animation in a still thumbnail.

use std::io::Cursor;

use image::{
    AnimationDecoder, Frame, ImageResult, RgbaImage, codecs::gif::GifDecoder,
    codecs::webp::WebPDecoder,
};

use super::{Format, ThumbnailError};

/// Frames looked at, at most, for a representative still.
pub const MAX_SCAN: u64 = 30;
/// Below this spread of brightness (0-255) a frame counts as blank.
const UNIFORM_SPREAD: f64 = 6.0;
/// Pixels sampled per frame to judge it.
const SAMPLES: u32 = 64;

/// Frames in a GIF: image descriptors, found by walking the block structure
/// and skipping every data sub-block. A truncated file counts what it holds.
pub fn gif_frames(bytes: &[u8]) -> u64 {
    let mut pos = 13; // header (6) + logical screen descriptor (7)
    if bytes.len() < pos {
        return 0;
    }
    if bytes[10] & 0x80 != 0 {
        pos += 3 << ((bytes[10] & 0x07) + 1);
    }
    let mut frames = 0;
    let skip_sub_blocks = |mut pos: usize| -> Option<usize> {
        loop {
            let len = usize::from(*bytes.get(pos)?);
            pos += 1;
            if len == 0 {
                return Some(pos);
            }
            pos += len;
        }
    };
    loop {
        match bytes.get(pos) {
            Some(0x21) => match skip_sub_blocks(pos + 2) {
                Some(next) => pos = next,
                None => return frames,
            },
            Some(0x2C) => {
                frames += 1;
                let Some(&packed) = bytes.get(pos + 9) else {
                    return frames;
                };
                pos += 10;
                if packed & 0x80 != 0 {
                    pos += 3 << ((packed & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                match skip_sub_blocks(pos + 1) {
                    Some(next) => pos = next,
                    None => return frames,
                }
            }
            _ => return frames,
        }
    }
}

/// Frames in a WebP: `ANMF` chunks of an animated file, else one.
pub fn webp_frames(bytes: &[u8]) -> u64 {
    let mut pos = 12; // "RIFF" size "WEBP"
    let mut frames = 0;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[..4] == b"ANMF" {
            frames += 1;
        }
        pos = pos
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    frames.max(1)
}

fn frames_of(
    bytes: &[u8],
    format: Format,
) -> ImageResult<Box<dyn Iterator<Item = ImageResult<Frame>> + '_>> {
    Ok(match format {
        Format::Gif => Box::new(GifDecoder::new(Cursor::new(bytes))?.into_frames()),
        _ => Box::new(WebPDecoder::new(Cursor::new(bytes))?.into_frames()),
    })
}

/// Whether a frame shows next to nothing: one colour (a blank, a fade from
/// black) or fully transparent, judged on a grid of samples.
fn nearly_uniform(frame: &RgbaImage) -> bool {
    let (width, height) = frame.dimensions();
    if width == 0 || height == 0 {
        return true;
    }
    let (columns, rows) = (SAMPLES.min(width), SAMPLES.min(height));
    let (mut count, mut sum, mut squares) = (0.0f64, 0.0f64, 0.0f64);
    for row in 0..rows {
        for column in 0..columns {
            let [red, green, blue, alpha] = frame
                .get_pixel(column * width / columns, row * height / rows)
                .0;
            // What the eye sees over black: transparent counts as dark.
            let luma =
                (0.299 * f64::from(red) + 0.587 * f64::from(green) + 0.114 * f64::from(blue))
                    * f64::from(alpha)
                    / 255.0;
            count += 1.0;
            sum += luma;
            squares += luma * luma;
        }
    }
    let mean = sum / count;
    (squares / count - mean * mean).max(0.0).sqrt() < UNIFORM_SPREAD
}

/// The frame of an animated GIF or WebP a still thumbnail shows: the first
/// of the first `scan` frames that is not nearly uniform (so no blank or
/// fade-in frame stands for the animation), else the first frame. One
/// frame is held at a time besides the decoder's canvas.
pub fn representative(
    bytes: &[u8],
    format: Format,
    scan: u64,
) -> Result<RgbaImage, ThumbnailError> {
    let decode = |e: image::ImageError| ThumbnailError::image(&e);
    let take = usize::try_from(scan.max(1)).unwrap_or(usize::MAX);
    for frame in frames_of(bytes, format).map_err(decode)?.take(take) {
        let frame = frame.map_err(decode)?.into_buffer();
        if !nearly_uniform(&frame) {
            return Ok(frame);
        }
    }
    // Every frame looked at is blank: the first one, decoded again rather
    // than held meanwhile.
    let first = frames_of(bytes, format)
        .map_err(decode)?
        .next()
        .ok_or_else(|| {
            ThumbnailError::Decode(
                super::DecodeFailure::Invalid,
                "an animation without frames".to_owned(),
            )
        })?;
    Ok(first.map_err(decode)?.into_buffer())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gif(frames: &[bool]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
            for &content in frames {
                let frame = RgbaImage::from_fn(32, 24, |x, y| {
                    if content {
                        image::Rgba([
                            u8::try_from(x * 8).unwrap(),
                            u8::try_from(y * 10).unwrap(),
                            40,
                            255,
                        ])
                    } else {
                        image::Rgba([0, 0, 0, 255])
                    }
                });
                encoder.encode_frame(Frame::new(frame)).unwrap();
            }
        }
        out
    }

    /// A fade-in's blank frames are skipped; an all-blank animation, or
    /// one whose content comes after the frames looked at, shows its first.
    #[test]
    fn the_first_frame_with_content_stands_for_an_animation() {
        let fade_in = gif(&[false, false, true, true]);
        assert!(!nearly_uniform(
            &representative(&fade_in, Format::Gif, MAX_SCAN).unwrap()
        ));
        let late = representative(&fade_in, Format::Gif, 2).unwrap();
        assert!(
            nearly_uniform(&late),
            "content beyond the scan is not looked for"
        );
        let blank = gif(&[false, false]);
        assert!(nearly_uniform(
            &representative(&blank, Format::Gif, MAX_SCAN).unwrap()
        ));
        assert!(representative(b"GIF89a", Format::Gif, MAX_SCAN).is_err());
    }

    #[test]
    fn blank_and_transparent_frames_are_uniform() {
        assert!(nearly_uniform(&RgbaImage::from_pixel(
            40,
            30,
            image::Rgba([0, 0, 0, 255])
        )));
        assert!(nearly_uniform(&RgbaImage::from_pixel(
            40,
            30,
            image::Rgba([200, 10, 10, 0])
        )));
        assert!(nearly_uniform(&RgbaImage::from_pixel(
            40,
            30,
            image::Rgba([250, 250, 250, 255])
        )));
        let gradient = RgbaImage::from_fn(40, 30, |x, y| {
            image::Rgba([
                u8::try_from(x * 6).unwrap(),
                u8::try_from(y * 8).unwrap(),
                0,
                255,
            ])
        });
        assert!(!nearly_uniform(&gradient));
    }

    /// Counting agrees with real encoders' output and survives junk.
    #[test]
    fn counts_gif_frames_and_survives_junk() {
        let mut out = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
            for i in 0..7u8 {
                let frame = image::Frame::new(image::RgbaImage::from_pixel(
                    8,
                    8,
                    image::Rgba([i * 30, 0, 0, 255]),
                ));
                encoder.encode_frame(frame).unwrap();
            }
        }
        assert_eq!(gif_frames(&out), 7);
        assert!(gif_frames(&out[..out.len() / 2]) < 7);
        assert_eq!(gif_frames(b"GIF89a"), 0);
        assert_eq!(webp_frames(b"RIFF\x04\x00\x00\x00WEBP"), 1);
        assert_eq!(
            webp_frames(b"RIFF\xff\xff\xff\xffWEBPANMF\xff\xff\xff\xff"),
            1
        );
    }
}
