//! The tabular features the metadata head joins to the image embedding, as top ISIC 2020
//! solutions did: sex (one-hot), approximate age (scaled, with a missing flag) and the anatomic
//! site (one-hot over the six ISIC 2020 sites, with a missing flag). Missing values encode as
//! all-zero one-hots plus their flag, never as a guessed category. Pure encoding: it must not
//! see images or tensors.

use stackhive_data::isic::{Sex, TestRow, TrainRow};

/// ISIC 2020's six sites. ISIC 2019 splits the torso into anterior/posterior/lateral; those map
/// to `torso`. Anything else counts as missing.
pub const SITES: [&str; 6] = [
    "torso",
    "lower extremity",
    "upper extremity",
    "head/neck",
    "palms/soles",
    "oral/genital",
];

/// Features per row: male, female, age, age missing, six sites, site missing.
pub const META_DIM: usize = 2 + 2 + SITES.len() + 1;

/// Ages are 0..90 in steps of 5 in ISIC; scaled to about 0..1.
const AGE_SCALE: f32 = 90.0;
/// The value a missing age takes (ISIC 2020's mean age is about 49), next to its flag.
const AGE_FILL: f32 = 50.0;

/// Encodes one row's metadata.
pub fn encode(sex: Option<Sex>, age: Option<f32>, site: Option<&str>) -> [f32; META_DIM] {
    let mut out = [0.0; META_DIM];
    match sex {
        Some(Sex::Male) => out[0] = 1.0,
        Some(Sex::Female) => out[1] = 1.0,
        None => {}
    }
    match age.filter(|a| a.is_finite()) {
        Some(a) => out[2] = a / AGE_SCALE,
        None => {
            out[2] = AGE_FILL / AGE_SCALE;
            out[3] = 1.0;
        }
    }
    match site.and_then(site_index) {
        Some(i) => out[4 + i] = 1.0,
        None => out[4 + SITES.len()] = 1.0,
    }
    out
}

pub fn encode_train(row: &TrainRow) -> [f32; META_DIM] {
    encode(row.sex, row.age_approx, row.site.as_deref())
}

pub fn encode_test(row: &TestRow) -> [f32; META_DIM] {
    encode(row.sex, row.age_approx, row.site.as_deref())
}

fn site_index(site: &str) -> Option<usize> {
    let s = site.trim().to_ascii_lowercase();
    let s = if s.ends_with("torso") {
        "torso"
    } else {
        s.as_str()
    };
    SITES.iter().position(|&known| known == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hots_and_missing_flags() {
        let v = encode(Some(Sex::Female), Some(45.0), Some("posterior torso"));
        assert_eq!(&v[..4], &[0.0, 1.0, 0.5, 0.0]);
        assert_eq!(v[4], 1.0);
        let v = encode(None, None, Some("nowhere"));
        assert_eq!(&v[..2], &[0.0, 0.0]);
        assert_eq!(v[3], 1.0);
        assert_eq!(v[META_DIM - 1], 1.0);
        assert_eq!(v.iter().filter(|&&x| x == 1.0).count(), 2);
    }
}
