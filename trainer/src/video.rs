//! Animated GIFs of episodes and of open-loop predictions (context frames filtered by the
//! posterior, then frames imagined by the prior from the recorded actions, beside the truth).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::agent::Agent;
use crate::networks::IMAGE_SIZE;
use crate::replay::Batch;
use crate::rssm::{Rssm, State};

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("no frames to write")]
    Empty,
    #[error("frame {index} has {found} bytes, expected {expected} ({width}x{height} RGB)")]
    FrameSize {
        index: usize,
        found: usize,
        expected: usize,
        width: usize,
        height: usize,
    },
    #[error("GIF encoding: {0}")]
    Encode(#[from] gif::EncodingError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Persist(#[from] dreamer_persist::PersistError),
}

/// Encode RGB frames (`height x width x 3` each) as a looping GIF at 20 frames per second.
pub fn encode_gif(frames: &[Vec<u8>], width: usize, height: usize) -> Result<Vec<u8>, VideoError> {
    if frames.is_empty() {
        return Err(VideoError::Empty);
    }
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, width as u16, height as u16, &[])?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        for (index, rgb) in frames.iter().enumerate() {
            if rgb.len() != width * height * 3 {
                return Err(VideoError::FrameSize {
                    index,
                    found: rgb.len(),
                    expected: width * height * 3,
                    width,
                    height,
                });
            }
            let mut frame = gif::Frame::from_rgb_speed(width as u16, height as u16, rgb, 10);
            frame.delay = 5;
            encoder.write_frame(&frame)?;
        }
    }
    Ok(out)
}

/// Write frames as a GIF file (replaced whole through `dreamer_persist`).
pub fn write_gif(
    path: &Path,
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
) -> Result<(), VideoError> {
    let bytes = encode_gif(frames, width, height)?;
    dreamer_persist::write_file(path, &bytes)?;
    Ok(())
}

/// Open-loop prediction on the first `columns` sequences of a pixel batch: the posterior
/// filters `context` frames, then the prior rolls forward on the recorded actions (mean
/// states). Returns frames of size `(3 * 64) x (columns * 64)`: truth, model, error rows.
pub fn openloop_frames(
    agent: &Agent,
    batch: &Batch,
    context: i64,
    columns: i64,
) -> Option<Vec<Vec<u8>>> {
    let decoder = agent.decoder.pixels.as_ref()?;
    let pixels = batch.obs.pixels.as_ref()?; // [B, T, 64, 64, 3]
    let size = pixels.size();
    let (b, t) = (size[0].min(columns), size[1]);
    let context = context.min(t - 1);
    tch::no_grad(|| {
        let truth = pixels.narrow(0, 0, b); // [b, T, 64, 64, 3]
        let action = batch.action.narrow(0, 0, b);
        let obs = crate::networks::Obs {
            state: batch
                .obs
                .state
                .as_ref()
                .map(|s| s.narrow(0, 0, b).narrow(1, 0, context)),
            pixels: Some(truth.narrow(1, 0, context)),
        };
        let embed = agent
            .encoder
            .forward(&obs.flatten_time())
            .reshape([b, context, -1]);
        let zeros = Tensor::zeros(
            [b, context, agent.config.model.stoch_width()],
            (Kind::Float, embed.device()),
        );
        let (post, _) = agent
            .rssm
            .observe(&embed, &action.narrow(1, 0, context), &zeros);
        let mut feats = vec![Rssm::get_feat(&post)]; // [b, context, F]
        let mut state = State {
            h: post.h.select(1, context - 1),
            s: post.mean.select(1, context - 1),
            mean: post.mean.select(1, context - 1),
            std: post.std.select(1, context - 1),
        };
        let mut imagined = Vec::new();
        for step in context..t {
            let zeros = state.s.zeros_like();
            state = agent.rssm.img_step(&state, &action.select(1, step), &zeros);
            imagined.push(Rssm::get_feat(&state));
        }
        feats.push(Tensor::stack(&imagined, 1));
        let feat = Tensor::cat(&feats, 1); // [b, T, F]
        let model = decoder.forward(&feat.flatten(0, 1)); // [b*T, 3, 64, 64]
        let model = ((model + 0.5) * 255.0)
            .clamp(0.0, 255.0)
            .permute([0, 2, 3, 1])
            .reshape([b, t, IMAGE_SIZE, IMAGE_SIZE, 3]);
        let truth_f = truth.to_kind(Kind::Float);
        let error = ((&model - &truth_f).abs() * 2.0).clamp(0.0, 255.0);
        // rows: truth, model, error; columns: sequences -> [T, 3*64, b*64, 3]
        let grid = Tensor::stack(&[truth_f, model, error], 0) // [3, b, T, 64, 64, 3]
            .permute([2, 0, 3, 1, 4, 5])
            .reshape([t, 3 * IMAGE_SIZE, b * IMAGE_SIZE, 3])
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu);
        Some(
            (0..t)
                .map(|i| Vec::<u8>::try_from(grid.get(i).flatten(0, -1)).expect("u8 frame"))
                .collect(),
        )
    })
}

/// A still of an open-loop prediction: the first sequence's column (truth, model, error) at
/// every `stride`-th step, side by side. `frames` as from [`openloop_frames`], each
/// `height x width x 3` with 64-pixel columns. Returns (RGB bytes, width, height).
pub fn openloop_strip(
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
    stride: usize,
) -> (Vec<u8>, usize, usize) {
    let side = IMAGE_SIZE as usize;
    let picked: Vec<&Vec<u8>> = frames.iter().step_by(stride.max(1)).collect();
    let out_width = picked.len() * side;
    let mut out = vec![0u8; out_width * height * 3];
    for (k, frame) in picked.iter().enumerate() {
        for y in 0..height {
            let src = &frame[(y * width) * 3..(y * width + side) * 3];
            let dst = (y * out_width + k * side) * 3;
            out[dst..dst + side * 3].copy_from_slice(src);
        }
    }
    (out, out_width, height)
}

/// Write RGB bytes as a PNG (replaced whole through `dreamer_persist`).
pub fn write_png(path: &Path, rgb: &[u8], width: usize, height: usize) -> Result<(), VideoError> {
    let mut out = dreamer_persist::AtomicFile::create(path)?;
    {
        // Unbuffered: a BufWriter's last flush happens in its drop, where errors are lost.
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)?;
    }
    out.commit()?;
    Ok(())
}
