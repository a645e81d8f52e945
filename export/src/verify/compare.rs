//! How far a graph's output is from what it should be: the error measures behind every
//! verification figure.

/// Largest absolute difference of two `[..]` tables of one shape; a NaN anywhere counts as
/// infinitely wrong.
pub fn max_abs_err(actual: &[f32], expected: &[f32]) -> f64 {
    max_err(actual, expected, |_| 1.0)
}

/// Largest `|a - e| / max(1, |e|)`: absolute below magnitude 1, relative above. Used for the
/// surprise, a sum of S terms that can be large.
pub fn max_rel_err(actual: &[f32], expected: &[f32]) -> f64 {
    max_err(actual, expected, |e| e.abs().max(1.0))
}

/// Largest `|a - e| / scale(e)`, NaN counted as infinity.
fn max_err(actual: &[f32], expected: &[f32], scale: impl Fn(f64) -> f64) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let (a, e) = (f64::from(a), f64::from(e));
            let d = (a - e).abs() / scale(e);
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_counts_as_infinitely_wrong() {
        assert_eq!(max_abs_err(&[1.0, f32::NAN], &[1.0, 0.0]), f64::INFINITY);
        assert_eq!(max_rel_err(&[110.0], &[100.0]), 0.1);
        assert_eq!(max_rel_err(&[0.5], &[0.25]), 0.25);
    }
}
