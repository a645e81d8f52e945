//! Int8 quantization arithmetic, as ONNX's `QuantizeLinear` / `DequantizeLinear` define it
//! (`q = saturate(round(x / scale) + zero_point)`, `x = (q - zero_point) * scale`):
//! activations as uint8 with a per-tensor scale and zero point from a calibrated range,
//! weights as int8, symmetric, one scale per output channel, and biases as int32 on the
//! product of the two scales (what ONNX Runtime's integer kernels add to the accumulator).

/// How one activation tensor is quantized: uint8, per tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationQuant {
    /// The uint8 quantization covering the calibrated range `[lo, hi]` widened to include
    /// zero (so that zero, the padding and the ReLU floor, is exact). A range of one point
    /// gets scale 1.
    pub fn from_range(lo: f32, hi: f32) -> ActivationQuant {
        let lo = f64::from(lo.min(0.0));
        let hi = f64::from(hi.max(0.0));
        let span = hi - lo;
        if span.is_nan() || span <= 0.0 || span.is_infinite() {
            return ActivationQuant {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (span / 255.0) as f32;
        let zero_point = (-lo / f64::from(scale)).round().clamp(0.0, 255.0) as u8;
        ActivationQuant { scale, zero_point }
    }
}

/// A weight tensor quantized per output channel (its first axis).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightQuant {
    /// Same layout as the float tensor, in [-127, 127].
    pub values: Vec<i8>,
    /// [channels]
    pub scales: Vec<f32>,
}

/// Symmetric int8 per row of `data` viewed as `[channels, rest]`: scale = max |w| / 127
/// (1 for an all-zero row), values rounded to nearest and kept within +-127 so that
/// negation never overflows.
pub fn quantize_rows(data: &[f32], channels: usize) -> WeightQuant {
    let per = data.len() / channels.max(1);
    let mut values = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(channels);
    for row in data.chunks(per.max(1)) {
        let max = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        values.extend(row.iter().map(|&x| {
            (f64::from(x) / f64::from(scale))
                .round()
                .clamp(-127.0, 127.0) as i8
        }));
        scales.push(scale);
    }
    WeightQuant { values, scales }
}

/// A bias as int32 on the scale `x_scale * w_scale[c]` per output channel; returns (values,
/// scales).
pub fn quantize_bias(bias: &[f32], x_scale: f32, w_scales: &[f32]) -> (Vec<i32>, Vec<f32>) {
    let scales: Vec<f32> = w_scales.iter().map(|&w| x_scale * w).collect();
    let values = bias
        .iter()
        .zip(&scales)
        .map(|(&b, &s)| {
            (f64::from(b) / f64::from(s))
                .round()
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect();
    (values, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_range_maps_onto_0_to_255_with_zero_exact() {
        let q = ActivationQuant::from_range(-1.0, 3.0);
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(q.zero_point, 64);
        // A range above zero is widened to start at zero (the ReLU case).
        let relu = ActivationQuant::from_range(0.5, 2.0);
        assert_eq!(relu.zero_point, 0);
        assert!((relu.scale - 2.0 / 255.0).abs() < 1e-7);
        assert_eq!(ActivationQuant::from_range(0.0, 0.0).scale, 1.0);
        // A NaN bound counts as zero (the widening ignores it).
        assert_eq!(ActivationQuant::from_range(f32::NAN, 1.0), relu_to(1.0));
        assert_eq!(ActivationQuant::from_range(0.0, f32::NAN).scale, 1.0);
    }

    fn relu_to(hi: f32) -> ActivationQuant {
        ActivationQuant {
            scale: hi / 255.0,
            zero_point: 0,
        }
    }

    #[test]
    fn weights_are_symmetric_per_row_and_round_trip_within_half_a_step() {
        let data = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -0.3];
        let q = quantize_rows(&data, 3);
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(&q.values[..3], &[64, -127, 32]);
        assert_eq!(&q.values[3..6], &[0, 0, 0]);
        for (i, (&x, &v)) in data.iter().zip(&q.values).enumerate() {
            let s = q.scales[i / 3];
            assert!((f32::from(v) * s - x).abs() <= s / 2.0 + 1e-7);
        }
    }

    #[test]
    fn a_bias_is_stored_on_the_product_scale() {
        let (values, scales) = quantize_bias(&[1.0, -0.5], 0.5, &[0.01, 0.1]);
        assert_eq!(scales, vec![0.005, 0.05]);
        assert_eq!(values, vec![200, -10]);
    }
}
