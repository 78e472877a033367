//! Cropping and resizing of one decoded image, the step the cache applies to every image. A
//! dermatoscope often leaves a circular field of view with black corners; a plain centre crop
//! would feed those corners to the network, so the crop is the largest centred square whose
//! corners are not near black, falling back to the plain centre square when nothing is dark. It
//! must stay deterministic: the cache's round trip is checked against it pixel for pixel.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// Luminance below which a corner patch counts as the vignette's black. Dark skin and dark
/// lesions stay well above it; the vignette is close to 0.
const DARK_LUMA: f32 = 40.0;
/// Extra inset once a vignette was found, because the circle's rim fades over a few pixels.
const RIM_INSET: f32 = 0.03;
/// A square smaller than this share of the short side is not believed; then the plain centre
/// crop is used (the image may be dark all over).
const MIN_SIDE_SHARE: u32 = 4;

/// The square to keep, in source pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub side: u32,
    /// Whether black vignette corners were found and cut away.
    pub vignette: bool,
}

/// Finds the crop: the largest centred square whose four corners are not near black.
pub fn crop_box(img: &RgbImage) -> CropBox {
    let (w, h) = img.dimensions();
    let full = w.min(h);
    let plain = centred(w, h, full, false);
    if full < 8 {
        return plain;
    }
    // Patch around each corner, sampled on a 5×5 grid; its median ignores a hair or ruler line
    // crossing the corner.
    let patch = (full as f32 / 60.0).max(2.0);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let corners_ok = |half: f32| -> bool {
        [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)]
            .iter()
            .all(|&(sx, sy)| {
                let mut lumas = [0.0f32; 25];
                for (k, l) in lumas.iter_mut().enumerate() {
                    // Offsets run inwards from the corner, so the patch lies inside the square.
                    let ox = (k % 5) as f32 / 4.0 * patch;
                    let oy = (k / 5) as f32 / 4.0 * patch;
                    let x = (cx + sx * (half - ox - 0.5)).clamp(0.0, (w - 1) as f32) as u32;
                    let y = (cy + sy * (half - oy - 0.5)).clamp(0.0, (h - 1) as f32) as u32;
                    let p = img.get_pixel(x, y).0;
                    *l =
                        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                }
                lumas.sort_by(f32::total_cmp);
                lumas[12] >= DARK_LUMA
            })
    };
    let step = (full / 512).max(1);
    let mut side = full;
    while side >= full / MIN_SIDE_SHARE {
        if corners_ok(side as f32 / 2.0) {
            if side == full {
                return plain;
            }
            let inset = ((side as f32 * RIM_INSET).ceil() as u32).max(1) * 2;
            return centred(w, h, side.saturating_sub(inset).max(1), true);
        }
        side = side.saturating_sub(step * 2);
    }
    plain
}

fn centred(w: u32, h: u32, side: u32, vignette: bool) -> CropBox {
    CropBox {
        x: (w - side) / 2,
        y: (h - side) / 2,
        side,
        vignette,
    }
}

/// Crops (see [`crop_box`]) and resizes to `size`×`size` with `fast_image_resize`'s bilinear
/// convolution, whose kernel widens when shrinking, so downscaling does not alias. Its SIMD
/// paths make resizing cheaper than decoding; the pixels are identical on one machine, which
/// is all a per-machine cache needs.
pub fn preprocess(img: &RgbImage, size: u32) -> (RgbImage, CropBox) {
    assert!(
        size > 0,
        "preprocess needs a target size of at least 1 pixel, found 0"
    );
    let b = crop_box(img);
    let mut out = RgbImage::new(size, size);
    let side = f64::from(b.side);
    let options = ResizeOptions::new()
        .crop(f64::from(b.x), f64::from(b.y), side, side)
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(img, &mut out, &options)
        .expect("source and destination are both RGB8 and the crop lies inside the source");
    (out, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn plain_image_keeps_the_centre_square() {
        let img = RgbImage::from_pixel(120, 80, Rgb([200, 150, 120]));
        assert_eq!(
            crop_box(&img),
            CropBox {
                x: 20,
                y: 0,
                side: 80,
                vignette: false
            }
        );
    }

    #[test]
    fn all_dark_image_falls_back_to_the_centre_square() {
        let img = RgbImage::from_pixel(64, 64, Rgb([5, 5, 5]));
        assert_eq!(
            crop_box(&img),
            CropBox {
                x: 0,
                y: 0,
                side: 64,
                vignette: false
            }
        );
    }
}
