//! Test-time augmentation (issue 4, item 5): the views a prediction averages over. They are
//! the eight symmetries of the square, in a fixed order and without randomness, so a
//! prediction is reproducible: view 0 is the identity, 1 a horizontal flip, 2 a vertical flip,
//! 3 both (a half turn), 4 the transpose, 5–7 the transpose followed by 1–3 (5 and 6 are the
//! quarter turns). Skin lesions have no up, so every view is as plausible as the original.
//!
//! Beyond 8 passes the views cycle (`i mod 8`). With a model in eval mode a repeated view gives
//! the same output, so `tta_average` runs each distinct view once and weights it by how often
//! it occurs in `0..passes`: the same result as running them all, at most 8 forward passes.
//!
//! Averaging is over probabilities, not logits: the prediction is then the mean of what each
//! view predicts, and one overconfident view (a logit of +15) cannot swamp the others, which a
//! logit mean (a geometric mean of odds) lets it do. Works on `[N, C, H, W]` batches in any
//! memory format; it must not touch the model.

use tch::Tensor;

/// Distinct views; view `i` is view `i mod DISTINCT_VIEWS`.
pub const DISTINCT_VIEWS: usize = 8;

/// Flips (dims) of view `i` after its optional transpose.
fn parts(i: usize) -> (bool, &'static [i64]) {
    let v = i % DISTINCT_VIEWS;
    let flips: &'static [i64] = match v % 4 {
        0 => &[],
        1 => &[3],
        2 => &[2],
        _ => &[2, 3],
    };
    (v >= 4, flips)
}

/// View `i` of `images` (`[N, C, H, W]`; transposed views swap H and W).
pub fn tta_view(images: &Tensor, i: usize) -> Tensor {
    let (transpose, flips) = parts(i);
    let x = if transpose {
        images.transpose(2, 3)
    } else {
        images.shallow_clone()
    };
    if flips.is_empty() {
        x
    } else {
        x.flip(flips)
    }
}

/// Undoes [`tta_view`]: `tta_inverse(&tta_view(x, i), i) == x`. For spatial outputs
/// (segmentation, attention maps) that must be mapped back before averaging.
pub fn tta_inverse(view: &Tensor, i: usize) -> Tensor {
    let (transpose, flips) = parts(i);
    let x = if flips.is_empty() {
        view.shallow_clone()
    } else {
        view.flip(flips)
    };
    if transpose {
        x.transpose(2, 3)
    } else {
        x
    }
}

/// How often each distinct view occurs among `passes` passes.
pub fn view_weights(passes: usize) -> [usize; DISTINCT_VIEWS] {
    let mut w = [0; DISTINCT_VIEWS];
    for i in 0..passes {
        w[i % DISTINCT_VIEWS] += 1;
    }
    w
}

/// The mean over `passes` views (at least 1) of `predict(view)`, where `predict` returns
/// probabilities (e.g. `net.forward_t(&v, meta, false).sigmoid()`), not logits.
pub fn tta_average(
    images: &Tensor,
    passes: usize,
    mut predict: impl FnMut(&Tensor) -> Tensor,
) -> Tensor {
    let passes = passes.max(1);
    let mut sum: Option<Tensor> = None;
    for (v, &w) in view_weights(passes).iter().enumerate() {
        if w == 0 {
            continue;
        }
        let p = predict(&tta_view(images, v)) * (w as f64);
        sum = Some(match sum {
            None => p,
            Some(s) => s + p,
        });
    }
    sum.expect("at least one pass") / passes as f64
}
