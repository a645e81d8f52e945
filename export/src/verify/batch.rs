//! The bundle's sizes and the batch-major tables verification moves between the reference
//! and the graphs: rows of a static batch, one row repeated, the valid rows of an output,
//! features made of `h` and `s`.

use dreamer_bundle::Manifest;

use crate::checkpoint::{PIXEL_CHANNELS, PIXEL_HW};

/// One pixel observation, u8 HWC: [64, 64, 3].
pub const PIXEL_SHAPE: [usize; 3] = [PIXEL_HW, PIXEL_HW, PIXEL_CHANNELS];
/// Bytes of one pixel observation.
pub const PIXEL_LEN: usize = PIXEL_HW * PIXEL_HW * PIXEL_CHANNELS;

/// The bundle's sizes, named as in docs/checkpoint-format.md.
pub struct Dims {
    /// `B`, the static batch of every graph.
    pub batch: usize,
    /// `D`
    pub d: usize,
    /// `S`
    pub s: usize,
    /// Classes per categorical of a discrete stochastic state; 0 for the Gaussian one.
    pub classes: usize,
    /// `A`
    pub a: usize,
    /// `E`
    pub e: usize,
    /// `O`, when the state observation is used.
    pub o: Option<usize>,
    /// Whether pixels are observed.
    pub pixels: bool,
}

impl Dims {
    pub fn of(manifest: &Manifest) -> Dims {
        Dims {
            batch: manifest.batch as usize,
            d: manifest.latent.deter as usize,
            s: manifest.latent.stoch as usize,
            classes: manifest.latent.classes as usize,
            a: manifest.action.size as usize,
            e: manifest.latent.embed as usize,
            o: manifest.observation.state.as_ref().map(|s| s.size as usize),
            pixels: manifest.observation.pixels.is_some(),
        }
    }
}

/// Rows `start..start + batch` of a `[n, width]` table: `[batch, width]`. Rows past `n`
/// repeat the last row so a static batch can be filled.
pub fn rows<T: Copy>(data: &[T], width: usize, start: usize, batch: usize) -> Vec<T> {
    let n = data.len() / width;
    (0..batch)
        .flat_map(|i| {
            let r = (start + i).min(n - 1);
            data[r * width..(r + 1) * width].iter().copied()
        })
        .collect()
}

/// One row `[width]` repeated for every batch entry: `[batch, width]`.
pub fn broadcast<T: Copy>(row: &[T], batch: usize) -> Vec<T> {
    (0..batch).flat_map(|_| row.iter().copied()).collect()
}

/// The first `valid` rows of a `[B, width]` output: `[valid, width]`.
pub fn valid(out: &[f32], width: usize, valid: usize) -> &[f32] {
    &out[..valid * width]
}

/// `concat(h, s)` row by row: `h` [B, D] and `s` [B, S] give `feat` [B, D + S].
pub fn features(h: &[f32], s: &[f32], d: &Dims) -> Vec<f32> {
    h.chunks(d.d)
        .zip(s.chunks(d.s))
        .flat_map(|(h, s)| h.iter().chain(s).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fill_a_static_batch_by_repeating_the_last_row() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
        assert_eq!(rows(&table, 2, 2, 3), vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
        assert_eq!(rows(&table, 2, 0, 2), vec![1.0, 2.0, 3.0, 4.0]);
    }
}
