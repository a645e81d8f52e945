//! The learning-curve PNG: mean evaluation return against environment steps, drawn on a
//! small raster with a 3x5 digit font for the axis ranges.

use std::fs;
use std::path::Path;

const WIDTH: usize = 640;
const HEIGHT: usize = 400;
const MARGIN: usize = 48;

/// (env steps, mean return) of every `eval` record in a metrics.jsonl file.
pub fn read_eval_curve(path: &Path) -> Vec<(u64, f64)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("eval"))
        .filter_map(|v| Some((v.get("env_steps")?.as_u64()?, v.get("return")?.as_f64()?)))
        .collect()
}

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for i in 0..=steps {
            let x = x0 + (x1 - x0) * i / steps;
            let y = y0 + (y1 - y0) * i / steps;
            for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                self.set(x + dx, y + dy, rgb);
            }
        }
    }

    /// Digits, '-', '.', 'k' in a 3x5 font scaled by 2.
    fn text(&mut self, x: i64, y: i64, text: &str) {
        let mut cx = x;
        for ch in text.chars() {
            let rows: [u8; 5] = match ch {
                '0' => [7, 5, 5, 5, 7],
                '1' => [2, 6, 2, 2, 7],
                '2' => [7, 1, 7, 4, 7],
                '3' => [7, 1, 7, 1, 7],
                '4' => [5, 5, 7, 1, 1],
                '5' => [7, 4, 7, 1, 7],
                '6' => [7, 4, 7, 5, 7],
                '7' => [7, 1, 1, 1, 1],
                '8' => [7, 5, 7, 5, 7],
                '9' => [7, 5, 7, 1, 7],
                '-' => [0, 0, 7, 0, 0],
                '.' => [0, 0, 0, 0, 2],
                'k' => [4, 5, 6, 5, 5],
                _ => [0; 5],
            };
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(cx + col * 2 + dx, y + row as i64 * 2 + dy, [0, 0, 0]);
                        }
                    }
                }
            }
            cx += 8;
        }
    }
}

/// A reference score drawn as a short horizontal bar ending at `env_steps`: a published
/// figure at that point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub env_steps: u64,
    pub value: f64,
    pub rgb: [u8; 3],
}

/// Colours of successive curves (one per seed).
const CURVE_COLOURS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
];

/// Draw `points` (env steps, return) to a PNG at `path` (replaced whole, as
/// [`crate::video::write_png`] writes).
pub fn write_curve(path: &Path, points: &[(u64, f64)]) -> Result<(), crate::video::VideoError> {
    write_curves(path, &[points.to_vec()], &[])
}

/// Draw several curves (env steps, return), one colour each, and `anchors` as short
/// horizontal bars ending at their env steps, to a PNG at `path`. The axes cover every
/// point and anchor.
pub fn write_curves(
    path: &Path,
    curves: &[Vec<(u64, f64)>],
    anchors: &[Anchor],
) -> Result<(), crate::video::VideoError> {
    let mut canvas = Canvas {
        pixels: vec![255; WIDTH * HEIGHT * 3],
    };
    let xs = curves
        .iter()
        .flatten()
        .map(|p| p.0)
        .chain(anchors.iter().map(|a| a.env_steps));
    let x_max = xs.max().unwrap_or(1).max(1) as f64;
    let ys = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .chain(anchors.iter().map(|a| a.value));
    let (mut y_min, mut y_max) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !y_min.is_finite() || y_max - y_min < 1e-9 {
        y_min = y_min.min(0.0) - 1.0;
        y_max = y_max.max(0.0) + 1.0;
    }
    let (left, right) = (MARGIN as i64 + 16, (WIDTH - 16) as i64);
    let (top, bottom) = (16i64, (HEIGHT - MARGIN) as i64);
    let px = |x: f64| left + ((x / x_max) * (right - left) as f64) as i64;
    let py = |y: f64| bottom - (((y - y_min) / (y_max - y_min)) * (bottom - top) as f64) as i64;
    let grey = [120, 120, 120];
    canvas.line((left, top), (left, bottom), grey);
    canvas.line((left, bottom), (right, bottom), grey);
    canvas.text(4, top, &format!("{y_max:.0}"));
    canvas.text(4, bottom - 10, &format!("{y_min:.0}"));
    canvas.text(left, bottom + 8, "0");
    canvas.text(right - 48, bottom + 8, &format!("{:.0}k", x_max / 1000.0));
    for anchor in anchors {
        let (x, y) = (px(anchor.env_steps as f64), py(anchor.value));
        for dy in 0..3 {
            canvas.line((x - 28, y + dy - 1), (x, y + dy - 1), anchor.rgb);
        }
    }
    for (points, rgb) in curves.iter().zip(CURVE_COLOURS.iter().cycle()) {
        for pair in points.windows(2) {
            canvas.line(
                (px(pair[0].0 as f64), py(pair[0].1)),
                (px(pair[1].0 as f64), py(pair[1].1)),
                *rgb,
            );
        }
        for p in points {
            let (x, y) = (px(p.0 as f64), py(p.1));
            for dx in -2..=2 {
                for dy in -2..=2 {
                    canvas.set(x + dx, y + dy, *rgb);
                }
            }
        }
    }
    crate::video::write_png(path, &canvas.pixels, WIDTH, HEIGHT)
}
