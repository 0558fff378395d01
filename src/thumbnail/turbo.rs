//! JPEG through libjpeg-turbo (feature `turbojpeg`): decode scaled in the
//! DCT domain (1/8 ... 1) to the smallest size that keeps the decode target,
//! and encode with its encoder (q80, 4:2:0), several times faster than the
//! pure-Rust encoder at thumbnail sizes.

use image::{DynamicImage, RgbImage};
use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

use super::{DecodeFailure, ThumbnailError};

// Takes the error by value to serve directly as a `map_err` adapter.
#[allow(clippy::needless_pass_by_value)]
fn err(e: turbojpeg::Error) -> ThumbnailError {
    let message = e.to_string();
    ThumbnailError::Decode(DecodeFailure::of_message(&message), message)
}

/// Decodes at the largest DCT reduction whose result still covers
/// `want_w` x `want_h` (in stored orientation). `None` for colour spaces it
/// cannot hand back as RGB (CMYK, YCCK), which take another path.
pub(super) fn decode_scaled(
    bytes: &[u8],
    want_w: u32,
    want_h: u32,
) -> Result<Option<DynamicImage>, ThumbnailError> {
    let mut decompressor = Decompressor::new().map_err(err)?;
    let header = decompressor.read_header(bytes).map_err(err)?;
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return Ok(None);
    }
    let covers = |factor: ScalingFactor| {
        let scaled = header.scaled(factor);
        scaled.width as u64 >= u64::from(want_w) && scaled.height as u64 >= u64::from(want_h)
    };
    let factor = [8, 4, 2]
        .into_iter()
        .map(|denom| ScalingFactor::new(1, denom))
        .find(|f| covers(*f))
        .unwrap_or(ScalingFactor::ONE);
    decompressor.set_scaling_factor(factor).map_err(err)?;
    let scaled = header.scaled(factor);
    let mut pixels = vec![0u8; scaled.width * scaled.height * 3];
    decompressor
        .decompress(
            bytes,
            Image {
                pixels: pixels.as_mut_slice(),
                width: scaled.width,
                pitch: scaled.width * 3,
                height: scaled.height,
                format: PixelFormat::RGB,
            },
        )
        .map_err(err)?;
    let (w, h) = (
        u32::try_from(scaled.width)
            .map_err(|e| ThumbnailError::Decode(DecodeFailure::Other, e.to_string()))?,
        u32::try_from(scaled.height)
            .map_err(|e| ThumbnailError::Decode(DecodeFailure::Other, e.to_string()))?,
    );
    RgbImage::from_raw(w, h, pixels)
        .map(|img| Some(DynamicImage::ImageRgb8(img)))
        .ok_or_else(|| {
            ThumbnailError::Decode(DecodeFailure::Invalid, "short pixel buffer".to_owned())
        })
}

/// JPEG at quality 80 with 4:2:0 chroma, as other thumbnailers make them.
pub(super) fn encode_jpeg(image: &RgbImage) -> Result<Vec<u8>, ThumbnailError> {
    let encode = || -> Result<Vec<u8>, turbojpeg::Error> {
        let mut compressor = Compressor::new()?;
        compressor.set_quality(80)?;
        compressor.set_subsamp(Subsamp::Sub2x2)?;
        compressor.compress_to_vec(Image {
            pixels: image.as_raw().as_slice(),
            width: image.width() as usize,
            pitch: image.width() as usize * 3,
            height: image.height() as usize,
            format: PixelFormat::RGB,
        })
    };
    encode().map_err(|e| ThumbnailError::Encode(e.to_string()))
}
