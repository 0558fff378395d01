//! The image pipeline, pure and synchronous: sniff the real format from the
//! bytes, check it against the allowlist, read the header and refuse
//! oversized images before any decode, decode (JPEG shrink-on-load in the
//! DCT domain), apply EXIF orientation, resize with Lanczos3, encode. It
//! knows nothing of HTTP, storage or Matrix; callers run it on blocking
//! threads behind a concurrency limit.

pub mod budget;
mod frames;
pub mod geometry;
#[cfg_attr(not(feature = "heif"), path = "heif_off.rs")]
mod heif;
mod refusal;
#[cfg(feature = "turbojpeg")]
mod turbo;

use std::io::Cursor;

use fast_image_resize::{
    FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer, images::ImageRef,
};
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader,
    codecs::gif::GifDecoder, codecs::webp::WebPDecoder, metadata::Orientation,
};

/// Formats we decode. The declared Content-Type never picks a decoder:
/// only these magic bytes do. HEIC and AVIF are decoded only in a build
/// with the `heif` feature, and only when `thumbnails.formats` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Webp,
    Heic,
    Avif,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Heic => "image/heic",
            Self::Avif => "image/avif",
        }
    }

    /// The `image` crate's decoder for it; `None` for those libheif decodes.
    fn image_format(self) -> Option<ImageFormat> {
        match self {
            Self::Jpeg => Some(ImageFormat::Jpeg),
            Self::Png => Some(ImageFormat::Png),
            Self::Gif => Some(ImageFormat::Gif),
            Self::Webp => Some(ImageFormat::WebP),
            Self::Heic | Self::Avif => None,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The formats a deployment decodes (`thumbnails.formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats(u8);

impl Formats {
    /// JPEG, PNG, GIF and WebP: the default.
    pub const SAFE: Self = Self(0b1111);

    pub fn of(formats: &[Format]) -> Self {
        Self(formats.iter().fold(0, |bits, f| bits | f.bit()))
    }

    pub fn allows(self, format: Format) -> bool {
        self.0 & format.bit() != 0
    }
}

impl Default for Formats {
    fn default() -> Self {
        Self::SAFE
    }
}

/// `crop` or `scale` (spec); `scale` is the default, as in Synapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Crop,
    Scale,
}

/// One output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

/// The configured size a request is served from: of the sizes with the
/// requested method (all sizes if none has it), the smallest that is at
/// least as large as requested, else the largest. Requests can therefore
/// only ever reach the configured sizes, however many distinct ones arrive.
pub fn snap(sizes: &[Spec], width: u32, height: u32, method: Method) -> Option<Spec> {
    let same: Vec<Spec> = sizes
        .iter()
        .copied()
        .filter(|s| s.method == method)
        .collect();
    let pool = if same.is_empty() {
        sizes.to_vec()
    } else {
        same
    };
    let area = |s: &Spec| u64::from(s.width) * u64::from(s.height);
    pool.iter()
        .copied()
        .filter(|s| s.width >= width && s.height >= height)
        .min_by_key(area)
        .or_else(|| pool.iter().copied().max_by_key(area))
}

/// Work budgets checked from the header, before decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pixels: u64,
    /// Animations with more frames are refused (counted without decoding).
    pub max_frames: u64,
    /// Peak bytes one generation may hold (see [`budget`]); a still over it
    /// is refused, an animation is cut to the frames that fit.
    pub max_bytes: u64,
    /// Pixels an animated thumbnail may decode (frames x canvas).
    pub max_animation_pixels: u64,
    /// What is decoded at all.
    pub formats: Formats,
}

/// What the header and container say, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
}

/// A finished thumbnail.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub spec: Spec,
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Not a format mxmedia thumbnails, and what it is instead.
    #[error("{0}")]
    Unsupported(Refused),
    #[error("image of {width}x{height} pixels is over the limit")]
    TooManyPixels { width: u64, height: u64 },
    #[error("animation of {0} frames is over the limit")]
    TooManyFrames(u64),
    #[error(
        "making this thumbnail would take {needed} bytes of memory, over the {budget} byte budget"
    )]
    TooExpensive { needed: u64, budget: u64 },
    #[error("cannot decode the image: {1}")]
    Decode(DecodeFailure, String),
    #[error("cannot encode the thumbnail: {0}")]
    Encode(String),
}

pub use refusal::{DecodeFailure, Refused};

impl ThumbnailError {
    /// A decoder error of the `image` crate, classified.
    pub fn image(error: &image::ImageError) -> Self {
        Self::Decode(DecodeFailure::of(error), error.to_string())
    }

    /// An error of the JPEG decoder that scales while decoding, classified.
    pub fn jpeg(error: &jpeg_decoder::Error) -> Self {
        Self::Decode(DecodeFailure::of_jpeg(error), error.to_string())
    }
}

/// The format the bytes really are, if it is one we decode.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some(Format::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Format::Png),
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Format::Gif),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some(Format::Webp),
        _ => match Refused::sniff(bytes) {
            Refused::Heif => Some(Format::Heic),
            Refused::Avif => Some(Format::Avif),
            _ => None,
        },
    }
}

/// The format of `bytes`, if it is one this deployment decodes.
fn admitted(bytes: &[u8], limits: Limits) -> Result<Format, ThumbnailError> {
    let format = sniff(bytes).ok_or_else(|| ThumbnailError::Unsupported(Refused::sniff(bytes)))?;
    if limits.formats.allows(format) {
        Ok(format)
    } else {
        Err(ThumbnailError::Unsupported(match format {
            Format::Heic => Refused::Heif,
            Format::Avif => Refused::Avif,
            _ => Refused::Disabled,
        }))
    }
}

/// Width and height from the header (and, for HEIC and AVIF, the
/// container's image properties), before any pixel is decoded.
fn dimensions(bytes: &[u8], format: Format) -> Result<(u32, u32), ThumbnailError> {
    match format.image_format() {
        Some(image_format) => ImageReader::with_format(Cursor::new(bytes), image_format)
            .into_dimensions()
            .map_err(|e| ThumbnailError::image(&e)),
        None => heif::dimensions(bytes),
    }
}

/// Format and dimensions from the first bytes of a file (a header that is
/// not complete in them gives `None`: look again with the whole file);
/// refuses non-images and oversized images before the rest is read.
pub fn probe_head(
    head: &[u8],
    limits: Limits,
) -> Result<Option<(Format, u32, u32)>, ThumbnailError> {
    let format = admitted(head, limits)?;
    let Ok((width, height)) = dimensions(head, format) else {
        return Ok(None);
    };
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ThumbnailError::TooManyPixels {
            width: width.into(),
            height: height.into(),
        });
    }
    Ok(Some((format, width, height)))
}

/// Format, dimensions and frame count from the header and container alone;
/// refuses over-budget images before any decoding.
pub fn probe(bytes: &[u8], limits: Limits) -> Result<Probe, ThumbnailError> {
    let format = admitted(bytes, limits)?;
    let (width, height) = dimensions(bytes, format)?;
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ThumbnailError::TooManyPixels {
            width: width.into(),
            height: height.into(),
        });
    }
    let frames = match format {
        Format::Gif => frames::gif_frames(bytes),
        Format::Webp => frames::webp_frames(bytes),
        Format::Jpeg | Format::Png | Format::Heic | Format::Avif => 1,
    };
    if frames > limits.max_frames {
        return Err(ThumbnailError::TooManyFrames(frames));
    }
    Ok(Probe {
        format,
        width,
        height,
        frames,
    })
}

/// An animated thumbnail (WebP, the spec's preferred animated type) of an
/// animated GIF or WebP, or `None` when the source is a still picture
/// (callers then make a still one).
pub fn generate_animated(
    bytes: &[u8],
    spec: Spec,
    limits: Limits,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let probe = probe(bytes, limits)?;
    let frames =
        budget::animation_frames(&probe, spec, limits.max_bytes, limits.max_animation_pixels);
    if frames < 2 {
        // One frame, or too large a canvas to animate within the budget.
        return Ok(None);
    }
    let decode_err = |e: image::ImageError| ThumbnailError::image(&e);
    let frames_iter: Box<dyn Iterator<Item = image::ImageResult<Frame>>> = match probe.format {
        Format::Gif => Box::new(
            GifDecoder::new(Cursor::new(bytes))
                .map_err(decode_err)?
                .into_frames(),
        ),
        Format::Webp => Box::new(
            WebPDecoder::new(Cursor::new(bytes))
                .map_err(decode_err)?
                .into_frames(),
        ),
        Format::Jpeg | Format::Png | Format::Heic | Format::Avif => return Ok(None),
    };
    let plan = plan(spec, probe.width, probe.height);
    // Each frame is decoded, resized and kept small; the encoder reads
    // them all at the end.
    let mut resizer = Resizer::new();
    let mut small_frames = Vec::new();
    let mut timestamp_ms: i32 = 0;
    // Past the budget, the animation is cut short rather than refused.
    let take = usize::try_from(frames).unwrap_or(usize::MAX);
    for frame in frames_iter.take(take) {
        let frame = frame.map_err(decode_err)?;
        let (numer, denom) = frame.delay().numer_denom_ms();
        let delay = i32::try_from(numer / denom.max(1)).unwrap_or(i32::MAX);
        let source = DynamicImage::ImageRgba8(frame.into_buffer());
        let small = resize_to(&mut resizer, &source, &plan)?;
        small_frames.push((small.into_rgba8(), timestamp_ms));
        timestamp_ms = timestamp_ms.saturating_add(delay.max(10));
    }
    let encode_err = |what: &str| ThumbnailError::Encode(format!("animated WebP: {what}"));
    let mut config = webp::WebPConfig::new().map_err(|()| encode_err("config"))?;
    // Lossy at 75, fastest method: about 2.5x faster than GIF quantising and
    // a third of the size.
    config.lossless = 0;
    config.quality = 75.0;
    config.method = 0;
    let mut encoder = webp::AnimEncoder::new(plan.width, plan.height, &config);
    encoder.set_loop_count(0);
    for (image, timestamp) in &small_frames {
        encoder.add_frame(webp::AnimFrame::from_rgba(
            image.as_raw(),
            plan.width,
            plan.height,
            *timestamp,
        ));
    }
    let webp_bytes = encoder
        .try_encode()
        .map_err(|e| encode_err(&format!("{e:?}")))?;
    Ok(Some(Thumbnail {
        spec,
        bytes: webp_bytes.to_vec(),
        content_type: "image/webp",
        width: plan.width,
        height: plan.height,
    }))
}

/// Makes every `spec` from one decode, at the scale the largest needs.
pub fn generate(
    bytes: &[u8],
    specs: &[Spec],
    limits: Limits,
) -> Result<Vec<Thumbnail>, ThumbnailError> {
    let probe = probe(bytes, limits)?;
    let needed = budget::still_cost(bytes, &probe, specs);
    if needed > limits.max_bytes {
        return Err(ThumbnailError::TooExpensive {
            needed,
            budget: limits.max_bytes,
        });
    }
    let Probe {
        format,
        width,
        height,
        ..
    } = probe;
    let source = if probe.frames > 1 {
        // A still of an animation: the frame that shows its content, within
        // the decoding work an animation may cost.
        let canvas = (u64::from(width) * u64::from(height)).max(1);
        let scan = frames::MAX_SCAN
            .min(probe.frames)
            .min(limits.max_animation_pixels / canvas);
        Decoded::Image(DynamicImage::ImageRgba8(frames::representative(
            bytes, format, scan,
        )?))
    } else {
        decode(bytes, format, width, height, specs)?
    };
    let has_alpha = source.has_alpha();
    let mut resizer = Resizer::new();
    specs
        .iter()
        .map(|spec| {
            let (source_w, source_h) = source.dimensions();
            let plan = plan(*spec, source_w, source_h);
            let out = match &source {
                Decoded::Image(image) => resize_to(&mut resizer, image, &plan)?,
                Decoded::Webp(webp) => resize_to(&mut resizer, &webp_view(webp)?, &plan)?,
            };
            // A fully opaque RGBA source still gives a JPEG.
            let out = if !has_alpha && out.color().has_alpha() {
                DynamicImage::ImageRgb8(out.into_rgb8())
            } else {
                out
            };
            let (bytes, content_type) = encode(&out, has_alpha)?;
            Ok(Thumbnail {
                spec: *spec,
                bytes,
                content_type,
                width: plan.width,
                height: plan.height,
            })
        })
        .collect()
}

/// A decoded still: ours, or libwebp's buffer read in place (a 12 MP copy
/// saved).
enum Decoded {
    Image(DynamicImage),
    Webp(webp::WebPImage),
}

impl Decoded {
    fn dimensions(&self) -> (u32, u32) {
        match self {
            Self::Image(image) => (image.width(), image.height()),
            Self::Webp(webp) => (webp.width(), webp.height()),
        }
    }

    /// Whether transparency matters: an alpha channel with any pixel
    /// below fully opaque.
    fn has_alpha(&self) -> bool {
        let opaque_rgba = |raw: &[u8]| raw.chunks_exact(4).all(|p| p[3] == 255);
        match self {
            Self::Webp(webp) => webp.is_alpha() && !opaque_rgba(webp),
            Self::Image(DynamicImage::ImageRgba8(rgba)) => !opaque_rgba(rgba.as_raw()),
            Self::Image(DynamicImage::ImageLumaA8(la)) => la.pixels().any(|p| p.0[1] != 255),
            Self::Image(other) => other.color().has_alpha(),
        }
    }
}

fn webp_view(webp: &webp::WebPImage) -> Result<ImageRef<'_>, ThumbnailError> {
    let pixel_type = if webp.is_alpha() {
        PixelType::U8x4
    } else {
        PixelType::U8x3
    };
    ImageRef::new(webp.width(), webp.height(), webp, pixel_type)
        .map_err(|e| ThumbnailError::Decode(DecodeFailure::Invalid, e.to_string()))
}

/// What to cut from a `width` x `height` source for `spec`, and the result's size.
fn plan(spec: Spec, width: u32, height: u32) -> geometry::Plan {
    match spec.method {
        Method::Scale => geometry::scale(width, height, spec.width, spec.height),
        Method::Crop => geometry::crop(width, height, spec.width, spec.height),
    }
}

/// Cuts `plan.crop` from `source` and resizes it with Lanczos3, in one pass.
fn resize_to(
    resizer: &mut Resizer,
    source: &impl IntoImageView,
    plan: &geometry::Plan,
) -> Result<DynamicImage, ThumbnailError> {
    let color = match source.pixel_type() {
        Some(PixelType::U8) => image::ColorType::L8,
        Some(PixelType::U8x2) => image::ColorType::La8,
        Some(PixelType::U8x3) => image::ColorType::Rgb8,
        Some(PixelType::U8x4) => image::ColorType::Rgba8,
        other => {
            return Err(ThumbnailError::Decode(
                DecodeFailure::Invalid,
                format!("unexpected pixel type {other:?}"),
            ));
        }
    };
    let mut out = DynamicImage::new(plan.width, plan.height, color);
    let (left, top, w, h) = plan.crop;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(left, top, w, h);
    resizer
        .resize(source, &mut out, &options)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(out)
}

/// Orientation-corrected size a spec list needs from the decoder: twice the
/// largest output (libvips' reserve), so shrink-on-load costs no quality.
pub(crate) fn decode_target(specs: &[Spec], width: u32, height: u32) -> (u32, u32) {
    specs.iter().fold((1, 1), |(w, h), spec| {
        let plan = match spec.method {
            Method::Scale => geometry::scale(width, height, spec.width, spec.height),
            Method::Crop => {
                // Crop needs the cover size of the box, not the box.
                let f = (f64::from(spec.width) / f64::from(width))
                    .max(f64::from(spec.height) / f64::from(height));
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let cover = (
                    (f64::from(width) * f).ceil() as u32,
                    (f64::from(height) * f).ceil() as u32,
                );
                geometry::scale(width, height, cover.0, cover.1)
            }
        };
        (w.max(plan.width * 2), h.max(plan.height * 2))
    })
}

fn decode(
    bytes: &[u8],
    format: Format,
    width: u32,
    height: u32,
    specs: &[Spec],
) -> Result<Decoded, ThumbnailError> {
    if format == Format::Jpeg
        && let Some(image) = decode_jpeg_scaled(bytes, width, height, specs)?
    {
        return Ok(Decoded::Image(image));
    }
    let Some(image_format) = format.image_format() else {
        return heif::decode(bytes).map(Decoded::Image);
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format)
        .into_decoder()
        .map_err(|e| ThumbnailError::image(&e))?;
    let orientation = reader.orientation().unwrap_or(Orientation::NoTransforms);
    if format == Format::Webp {
        // libwebp decodes about twice as fast as the pure-Rust decoder, and
        // its buffer is resized in place.
        let webp = webp::Decoder::new(bytes).decode().ok_or_else(|| {
            ThumbnailError::Decode(
                DecodeFailure::Invalid,
                "libwebp cannot decode the image".to_owned(),
            )
        })?;
        if orientation == Orientation::NoTransforms {
            return Ok(Decoded::Webp(webp));
        }
        let (w, h, alpha, raw) = (webp.width(), webp.height(), webp.is_alpha(), webp.to_vec());
        drop(webp);
        let mut image = if alpha {
            image::RgbaImage::from_raw(w, h, raw).map(DynamicImage::ImageRgba8)
        } else {
            image::RgbImage::from_raw(w, h, raw).map(DynamicImage::ImageRgb8)
        }
        .ok_or_else(|| {
            ThumbnailError::Decode(DecodeFailure::Invalid, "short pixel buffer".to_owned())
        })?;
        image.apply_orientation(orientation);
        return Ok(Decoded::Image(image));
    }
    // image's default Limits (512 MiB per allocation) stay on as a second line.
    let mut image = DynamicImage::from_decoder(reader).map_err(|e| ThumbnailError::image(&e))?;
    image.apply_orientation(orientation);
    // The resizer and encoders take 8-bit grey or RGB(A); 16-bit and float
    // pictures are brought down once, here.
    let image = match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.into_rgba8()),
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    };
    Ok(Decoded::Image(image))
}

/// JPEG via a DCT-domain downscale (1/2, 1/4, 1/8): libjpeg-turbo with the
/// `turbojpeg` feature, else jpeg-decoder. `None` for
/// pixel formats it does not hand back as 8-bit grey or RGB (CMYK, 16-bit),
/// which then take the full decode.
fn decode_jpeg_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    specs: &[Spec],
) -> Result<Option<DynamicImage>, ThumbnailError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(|e| ThumbnailError::jpeg(&e))?;
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // Geometry is decided on the image as shown; the decoder sees it as stored.
    let swapped = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (shown_w, shown_h) = if swapped {
        (height, width)
    } else {
        (width, height)
    };
    let (want_w, want_h) = decode_target(specs, shown_w, shown_h);
    let (want_w, want_h) = if swapped {
        (want_h, want_w)
    } else {
        (want_w, want_h)
    };
    #[cfg(feature = "turbojpeg")]
    if let Some(mut image) = turbo::decode_scaled(bytes, want_w, want_h)? {
        image.apply_orientation(orientation);
        return Ok(Some(image));
    }
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let (w, h) = decoder
        .scale(clamp(want_w), clamp(want_h))
        .map_err(|e| ThumbnailError::jpeg(&e))?;
    let pixels = decoder.decode().map_err(|e| ThumbnailError::jpeg(&e))?;
    let info = decoder.info().ok_or_else(|| {
        ThumbnailError::Decode(DecodeFailure::Invalid, "no image info".to_owned())
    })?;
    let (w, h) = (u32::from(w), u32::from(h));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        }
        jpeg_decoder::PixelFormat::CMYK32 | jpeg_decoder::PixelFormat::L16 => return Ok(None),
    };
    let mut image = image.ok_or_else(|| {
        ThumbnailError::Decode(DecodeFailure::Invalid, "short pixel buffer".to_owned())
    })?;
    image.apply_orientation(orientation);
    Ok(Some(image))
}

/// Opaque stills as JPEG (q80); anything with transparency as PNG with fast
/// compression (about 40x faster than the default, and no larger here).
fn encode(image: &DynamicImage, alpha: bool) -> Result<(Vec<u8>, &'static str), ThumbnailError> {
    let mut out = Vec::new();
    let err = |e: image::ImageError| ThumbnailError::Encode(e.to_string());
    if alpha {
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Adaptive,
        );
        image.write_with_encoder(encoder).map_err(err)?;
        Ok((out, "image/png"))
    } else {
        #[cfg(feature = "turbojpeg")]
        if let DynamicImage::ImageRgb8(rgb) = image {
            return Ok((turbo::encode_jpeg(rgb)?, "image/jpeg"));
        }
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        image.write_with_encoder(encoder).map_err(err)?;
        Ok((out, "image/jpeg"))
    }
}

#[cfg(test)]
mod tests;
