//! A small software rasteriser for 64x64 RGB frames (u8, HWC).
//!
//! Shapes are described by signed distance functions in pixel units; a pixel's coverage is
//! `clamp(0.5 - distance, 0, 1)` at its centre, which gives one pixel of anti-aliased edge.
//! Only a shape's bounding box is visited, and each task keeps its static scenery (sky, floor,
//! rail, target) in a cached background frame that is copied in before the moving parts.

/// Frame side in pixels.
pub const FRAME_SIZE: usize = 64;
/// Bytes of one frame: `[FRAME_SIZE, FRAME_SIZE, 3]`, row-major, RGB.
pub const FRAME_BYTES: usize = FRAME_SIZE * FRAME_SIZE * 3;

pub type Rgb = [u8; 3];

/// A fixed orthographic camera: the square of world half-width `half_extent` around
/// `(center_x, center_z)` fills the frame. The scenes are planar (x right, z up), so this is
/// what a perspective camera looking straight at the plane sees.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub center_x: f64,
    pub center_z: f64,
    pub half_extent: f64,
}

impl View {
    /// Pixels per world metre.
    pub fn scale(&self) -> f32 {
        (FRAME_SIZE as f64 / (2.0 * self.half_extent)) as f32
    }

    /// World (x, z) to continuous pixel coordinates (column, row), row 0 at the top.
    pub fn to_pixel(&self, x: f64, z: f64) -> (f32, f32) {
        let s = FRAME_SIZE as f64 / (2.0 * self.half_extent);
        let column = (x - self.center_x) * s + FRAME_SIZE as f64 / 2.0;
        let row = FRAME_SIZE as f64 / 2.0 - (z - self.center_z) * s;
        (column as f32, row as f32)
    }

    /// The world z of the centre of pixel row `row`.
    pub fn row_to_z(&self, row: usize) -> f64 {
        let s = FRAME_SIZE as f64 / (2.0 * self.half_extent);
        self.center_z + (FRAME_SIZE as f64 / 2.0 - (row as f64 + 0.5)) / s
    }

    /// The world x of the centre of pixel column `column`.
    pub fn column_to_x(&self, column: usize) -> f64 {
        let s = FRAME_SIZE as f64 / (2.0 * self.half_extent);
        self.center_x + (column as f64 + 0.5 - FRAME_SIZE as f64 / 2.0) / s
    }
}

/// Drawing target over one frame buffer of exactly `FRAME_BYTES` bytes.
pub struct Canvas<'a> {
    pixels: &'a mut [u8], // [64, 64, 3]
    view: View,
}

impl<'a> Canvas<'a> {
    /// `pixels` must be `FRAME_BYTES` long; callers guarantee it (see [`render_into`]).
    pub fn new(pixels: &'a mut [u8], view: View) -> Self {
        debug_assert_eq!(pixels.len(), FRAME_BYTES);
        Self { pixels, view }
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// Fills every row with a colour blended from `top` to `bottom`.
    pub fn vertical_gradient(&mut self, top: Rgb, bottom: Rgb) {
        for (row, line) in self.pixels.chunks_exact_mut(FRAME_SIZE * 3).enumerate() {
            let t = row as f32 / (FRAME_SIZE - 1) as f32;
            let color = mix(top, bottom, t);
            for pixel in line.chunks_exact_mut(3) {
                pixel.copy_from_slice(&color);
            }
        }
    }

    /// Paints everything below world height `z` (anti-aliased along the edge).
    pub fn fill_below(&mut self, z: f64, color: Rgb) {
        let (_, edge_row) = self.view.to_pixel(0.0, z);
        for row in 0..FRAME_SIZE {
            let coverage = (row as f32 + 0.5 - edge_row + 0.5).clamp(0.0, 1.0);
            if coverage > 0.0 {
                for column in 0..FRAME_SIZE {
                    self.blend(row, column, color, coverage);
                }
            }
        }
    }

    /// A segment with rounded ends: all points within `radius` of the segment a-b (world units).
    pub fn capsule(&mut self, a: (f64, f64), b: (f64, f64), radius: f64, color: Rgb) {
        let (ax, ay) = self.view.to_pixel(a.0, a.1);
        let (bx, by) = self.view.to_pixel(b.0, b.1);
        let r = radius as f32 * self.view.scale();
        let (dx, dy) = (bx - ax, by - ay);
        let length_sq = (dx * dx + dy * dy).max(1e-12);
        let bounds = (
            ax.min(bx) - r,
            ay.min(by) - r,
            ax.max(bx) + r,
            ay.max(by) + r,
        );
        self.fill_shape(bounds, color, |px, py| {
            let (qx, qy) = (px - ax, py - ay);
            let h = ((qx * dx + qy * dy) / length_sq).clamp(0.0, 1.0);
            let (ex, ey) = (qx - h * dx, qy - h * dy);
            (ex * ex + ey * ey).sqrt() - r
        });
    }

    /// A filled circle (world units).
    pub fn disc(&mut self, center: (f64, f64), radius: f64, color: Rgb) {
        self.capsule(center, center, radius, color);
    }

    /// An axis-aligned rectangle with centre and half sizes in world units.
    pub fn rect(&mut self, center: (f64, f64), half_width: f64, half_height: f64, color: Rgb) {
        let (cx, cy) = self.view.to_pixel(center.0, center.1);
        let hw = half_width as f32 * self.view.scale();
        let hh = half_height as f32 * self.view.scale();
        let bounds = (cx - hw, cy - hh, cx + hw, cy + hh);
        self.fill_shape(bounds, color, |px, py| {
            let qx = (px - cx).abs() - hw;
            let qy = (py - cy).abs() - hh;
            let (ox, oy) = (qx.max(0.0), qy.max(0.0));
            (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0)
        });
    }

    /// Blends `color` into every pixel of the (pixel-space) bounding box by the coverage that
    /// the signed distance `distance(px, py)` gives at the pixel centre.
    fn fill_shape(
        &mut self,
        (x0, y0, x1, y1): (f32, f32, f32, f32),
        color: Rgb,
        distance: impl Fn(f32, f32) -> f32,
    ) {
        // One extra pixel each side holds the anti-aliased fringe.
        let first_column = (x0 - 1.0).floor().max(0.0) as usize;
        let last_column = ((x1 + 1.0).ceil().max(0.0) as usize).min(FRAME_SIZE);
        let first_row = (y0 - 1.0).floor().max(0.0) as usize;
        let last_row = ((y1 + 1.0).ceil().max(0.0) as usize).min(FRAME_SIZE);
        for row in first_row..last_row {
            let py = row as f32 + 0.5;
            for column in first_column..last_column {
                let coverage = (0.5 - distance(column as f32 + 0.5, py)).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    self.blend(row, column, color, coverage);
                }
            }
        }
    }

    #[inline]
    fn blend(&mut self, row: usize, column: usize, color: Rgb, coverage: f32) {
        let start = (row * FRAME_SIZE + column) * 3;
        let pixel = &mut self.pixels[start..start + 3];
        if coverage >= 1.0 {
            pixel.copy_from_slice(&color);
            return;
        }
        for (channel, &target) in pixel.iter_mut().zip(color.iter()) {
            let old = *channel as f32;
            *channel = (old + (target as f32 - old) * coverage + 0.5) as u8;
        }
    }
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let channel = |i: usize| (a[i] as f32 + (b[i] as f32 - a[i] as f32) * t + 0.5) as u8;
    [channel(0), channel(1), channel(2)]
}

/// Runs `draw` on `out` when it has the frame size; otherwise draws into a scratch frame and
/// copies the overlapping prefix, so a wrongly sized buffer never panics.
pub fn render_into(out: &mut [u8], draw: impl FnOnce(&mut [u8])) {
    if out.len() == FRAME_BYTES {
        draw(out);
    } else {
        let mut scratch = vec![0u8; FRAME_BYTES];
        draw(&mut scratch);
        let n = out.len().min(FRAME_BYTES);
        out[..n].copy_from_slice(&scratch[..n]);
        out[n..].fill(0);
    }
}
