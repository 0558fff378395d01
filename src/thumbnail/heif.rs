//! HEIC (iPhone photos) and AVIF through libheif (feature `heif`; libheif
//! built from the sources libheif-sys embeds, with the system's libde265
//! for HEVC and dav1d for AV1). The container is parsed for the primary
//! image's size before any pixel is decoded, so the pixel and memory
//! budgets apply as to every other format; libheif applies the image's
//! rotation and mirroring while decoding.

use image::{DynamicImage, RgbImage, RgbaImage};
use libheif_rs::{ColorSpace, HeifContext, ImageHandle, LibHeif, RgbChroma};

use super::{DecodeFailure, ThumbnailError};

fn failed(error: &libheif_rs::HeifError) -> ThumbnailError {
    let failure = match error.code {
        libheif_rs::HeifErrorCode::InvalidInput => DecodeFailure::Invalid,
        libheif_rs::HeifErrorCode::UnsupportedFeature
        | libheif_rs::HeifErrorCode::UnsupportedFileType => DecodeFailure::UnsupportedFeature,
        _ => DecodeFailure::Other,
    };
    ThumbnailError::Decode(failure, error.to_string())
}

fn primary(context: &HeifContext) -> Result<ImageHandle, ThumbnailError> {
    context.primary_image_handle().map_err(|e| failed(&e))
}

/// The primary image's size (after its rotation), from the container.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    let context = HeifContext::read_from_bytes(bytes).map_err(|e| failed(&e))?;
    let handle = primary(&context)?;
    Ok((handle.width(), handle.height()))
}

/// The primary image as 8-bit RGB, or RGBA when it has alpha.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, ThumbnailError> {
    let context = HeifContext::read_from_bytes(bytes).map_err(|e| failed(&e))?;
    let handle = primary(&context)?;
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    let decoded = LibHeif::new()
        .decode(&handle, ColorSpace::Rgb(chroma), None)
        .map_err(|e| failed(&e))?;
    let short = || ThumbnailError::Decode(DecodeFailure::Invalid, "short pixel buffer".to_owned());
    let plane = decoded.planes().interleaved.ok_or_else(short)?;
    let channels: usize = if alpha { 4 } else { 3 };
    let row = plane.width as usize * channels;
    // Rows may be padded: copy each without its padding.
    let mut pixels = Vec::with_capacity(row * plane.height as usize);
    for line in plane.data.chunks(plane.stride).take(plane.height as usize) {
        pixels.extend_from_slice(line.get(..row).ok_or_else(short)?);
    }
    if alpha {
        RgbaImage::from_raw(plane.width, plane.height, pixels).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(plane.width, plane.height, pixels).map(DynamicImage::ImageRgb8)
    }
    .ok_or_else(short)
}
