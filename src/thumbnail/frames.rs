//! Frame counting from the container structure alone, without decoding any
//! image data, so animations over the frame budget are refused before work.

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

#[cfg(test)]
mod tests {
    use super::*;

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
