//! HEIC and AVIF in a build without the `heif` feature: never admitted
//! (the config refuses to list them), so never reached.

use image::DynamicImage;

use super::{Refused, ThumbnailError};

pub fn dimensions(_bytes: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    Err(ThumbnailError::Unsupported(Refused::Heif))
}

pub fn decode(_bytes: &[u8]) -> Result<DynamicImage, ThumbnailError> {
    Err(ThumbnailError::Unsupported(Refused::Heif))
}
