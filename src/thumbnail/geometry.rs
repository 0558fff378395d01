//! Thumbnail geometry (spec "Thumbnails"): `scale` fits inside the requested
//! box keeping the original's aspect; `crop` fills the requested box and
//! cuts the overflow, keeping the requested aspect. Neither ever upscales.

/// What to cut from the source and how big the result is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Source rectangle (left, top, width, height), in source pixels.
    pub crop: (f64, f64, f64, f64),
    pub width: u32,
    pub height: u32,
}

fn at_least_one(v: f64) -> u32 {
    // Dimensions here are at most the source's, which fit in u32.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = v.round().max(1.0) as u32;
    v
}

/// `scale`: the largest size with the source's aspect inside `tw` x `th`,
/// or the source itself if it already fits.
pub fn scale(sw: u32, sh: u32, tw: u32, th: u32) -> Plan {
    let full = (0.0, 0.0, f64::from(sw), f64::from(sh));
    if sw <= tw && sh <= th {
        return Plan {
            crop: full,
            width: sw,
            height: sh,
        };
    }
    let ratio = (f64::from(tw) / f64::from(sw)).min(f64::from(th) / f64::from(sh));
    Plan {
        crop: full,
        width: at_least_one(f64::from(sw) * ratio).min(tw).min(sw),
        height: at_least_one(f64::from(sh) * ratio).min(th).min(sh),
    }
}

/// `crop`: a centred cut with the requested aspect, resized to `tw` x `th`
/// when the source is large enough, otherwise kept at the cut's own size.
pub fn crop(sw: u32, sh: u32, tw: u32, th: u32) -> Plan {
    let (src_w, src_h) = (f64::from(sw), f64::from(sh));
    let (box_w, box_h) = (f64::from(tw), f64::from(th));
    let (cut_w, cut_h) = if src_w * box_h > src_h * box_w {
        (src_h * box_w / box_h, src_h)
    } else {
        (src_w, src_w * box_h / box_w)
    };
    let crop = ((src_w - cut_w) / 2.0, (src_h - cut_h) / 2.0, cut_w, cut_h);
    if cut_w >= box_w && cut_h >= box_h {
        Plan {
            crop,
            width: tw,
            height: th,
        }
    } else {
        Plan {
            crop,
            width: at_least_one(cut_w).min(sw),
            height: at_least_one(cut_h).min(sh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Synapse's default sizes on a 4000x3000 photo.
    #[test]
    fn known_sizes() {
        assert_eq!(
            (
                scale(4000, 3000, 320, 240).width,
                scale(4000, 3000, 320, 240).height
            ),
            (320, 240)
        );
        assert_eq!(
            (
                scale(4000, 3000, 800, 800).width,
                scale(4000, 3000, 800, 800).height
            ),
            (800, 600)
        );
        let c = crop(4000, 3000, 96, 96);
        assert_eq!((c.width, c.height), (96, 96));
        assert_eq!(c.crop, (500.0, 0.0, 3000.0, 3000.0));
        let small = scale(100, 50, 320, 240);
        assert_eq!((small.width, small.height), (100, 50));
    }

    proptest! {
        /// Spec: servers MUST NOT upscale, in either method.
        #[test]
        fn never_upscales(sw in 1u32..5000, sh in 1u32..5000, tw in 1u32..2000, th in 1u32..2000) {
            for plan in [scale(sw, sh, tw, th), crop(sw, sh, tw, th)] {
                prop_assert!(plan.width <= sw && plan.height <= sh);
                prop_assert!(plan.width >= 1 && plan.height >= 1);
            }
        }

        /// `scale` keeps the original aspect: each side within 1 px of the
        /// exactly scaled size (spec: aspect kept within +-1 px), inside the box.
        #[test]
        fn scale_keeps_aspect(sw in 1u32..5000, sh in 1u32..5000, tw in 1u32..2000, th in 1u32..2000) {
            let p = scale(sw, sh, tw, th);
            let ratio = (f64::from(tw) / f64::from(sw)).min(f64::from(th) / f64::from(sh)).min(1.0);
            prop_assert!((f64::from(p.width) - f64::from(sw) * ratio).abs() <= 1.0);
            prop_assert!((f64::from(p.height) - f64::from(sh) * ratio).abs() <= 1.0);
            prop_assert!(p.width <= tw.max(1) && p.height <= th.max(1) || (sw <= tw && sh <= th));
        }

        /// `crop` matches the requested aspect and is the requested size when the source allows.
        #[test]
        fn crop_matches_requested_aspect(sw in 16u32..5000, sh in 16u32..5000, tw in 8u32..1000, th in 8u32..1000) {
            let p = crop(sw, sh, tw, th);
            if sw >= tw && sh >= th && p.crop.2 >= f64::from(tw) && p.crop.3 >= f64::from(th) {
                prop_assert_eq!((p.width, p.height), (tw, th));
            }
            let want = f64::from(tw) / f64::from(th);
            let got = f64::from(p.width) / f64::from(p.height);
            prop_assert!((got - want).abs() / want < 0.1 || p.width < 16 || p.height < 16, "{} vs {}", got, want);
            let (l, t, w, h) = p.crop;
            prop_assert!(l >= 0.0 && t >= 0.0 && l + w <= f64::from(sw) + 1e-6 && t + h <= f64::from(sh) + 1e-6);
        }
    }
}
