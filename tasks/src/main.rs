//! `dreamer-tasks`: list the built-in tasks, or run a simple policy on one and save what it
//! looks like (animated GIF or a PNG strip of frames) together with the episode return.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dreamer_cli::say;
use dreamer_cli::stdout::closed_pipe_is_success;
use dreamer_persist::AtomicFile;
use dreamer_tasks::policy::{Policy, PolicyKind};
use dreamer_tasks::{
    EnvOptions, FRAME_BYTES, FRAME_SIZE, ObsMode, TASK_NAMES, make, task_description,
};

#[derive(Parser)]
#[command(
    name = "dreamer-tasks",
    about = "Native control tasks: list them or watch one"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the available tasks with their spaces and timing.
    List,
    /// Run a policy for one episode (or --steps decisions) and save the frames.
    Show {
        /// Task name (see `list`).
        #[arg(long)]
        task: String,
        /// zero, random or scripted (a hand-written controller).
        #[arg(long, default_value = "random")]
        policy: String,
        /// Seed of the initial state and of the random policy.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Agent decisions to run (default: the whole episode).
        #[arg(long)]
        steps: Option<u32>,
        /// Physics steps per decision.
        #[arg(long, default_value_t = 1)]
        action_repeat: u32,
        /// Output file: .gif (animation) or .png (strip of evenly spaced frames).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Pixel upscaling factor of the saved frames.
        #[arg(long, default_value_t = 4)]
        scale: usize,
        /// Frames in a PNG strip.
        #[arg(long, default_value_t = 10)]
        strip_frames: usize,
    },
}

fn main() -> Result<()> {
    // The reader stopped reading (`dreamer-tasks list | head -1`); what it did not read it
    // did not want.
    closed_pipe_is_success(run())
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::List => list(),
        Command::Show {
            task,
            policy,
            seed,
            steps,
            action_repeat,
            out,
            scale,
            strip_frames,
        } => show(
            &task,
            &policy,
            seed,
            steps,
            action_repeat,
            out.as_deref(),
            scale,
            strip_frames,
        ),
    }
}

fn list() -> Result<()> {
    for &name in TASK_NAMES {
        let env = make(name, EnvOptions::default())?;
        let spec = env.spec();
        say!("{name}");
        say!("  {}", task_description(name).unwrap_or(""));
        say!(
            "  state [{}]: {}",
            spec.state_size,
            spec.state_fields.join(", ")
        );
        say!(
            "  action [{}]: normalised [-1, 1] -> physical [{:?}, {:?}]",
            spec.action_size,
            spec.physical_action_low,
            spec.physical_action_high
        );
        say!(
            "  physical state: {}",
            spec.physical_state_fields.join(", ")
        );
        say!(
            "  physics dt {} s, {} steps per episode",
            spec.physics_dt,
            spec.max_env_steps
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn show(
    task: &str,
    policy: &str,
    seed: u64,
    steps: Option<u32>,
    action_repeat: u32,
    out: Option<&Path>,
    scale: usize,
    strip_frames: usize,
) -> Result<()> {
    let kind: PolicyKind = policy.parse()?;
    if !(1..=16).contains(&scale) {
        bail!("--scale must be between 1 and 16, got {scale}");
    }
    let mut env = make(
        task,
        EnvOptions {
            obs_mode: ObsMode::State,
            action_repeat,
        },
    )?;
    let spec = env.spec().clone();
    let mut controller = Policy::new(kind, &spec, seed.wrapping_add(1));
    let decisions = steps.unwrap_or(spec.max_decisions).min(spec.max_decisions);

    env.reset(seed);
    let mut frames = Vec::with_capacity(decisions as usize + 1);
    let mut frame = vec![0u8; FRAME_BYTES];
    env.render(&mut frame);
    frames.push(frame.clone());
    let mut episode_return = 0.0;
    let mut taken = 0;
    for _ in 0..decisions {
        let action = controller.act(&env.physical_state());
        let step = env.step(&action)?;
        episode_return += step.reward;
        taken += 1;
        env.render(&mut frame);
        frames.push(frame.clone());
        if step.terminated || step.truncated {
            break;
        }
    }
    // The file first, the lines after: a reader that stops early (`| head -1`) must not
    // cost the frames.
    if let Some(path) = out {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gif") => write_gif(path, &frames, spec.control_period_s, scale)?,
            Some("png") => write_png_strip(path, &frames, strip_frames.max(1), scale)?,
            _ => bail!("--out {}: use a .gif or .png file name", path.display()),
        }
    }
    say!(
        "task {task}, policy {policy:?}, seed {seed}: {taken} decisions ({} physics steps), return {episode_return:.3}",
        taken * action_repeat.max(1),
    );
    if let Some(path) = out {
        say!("wrote {}", path.display());
    }
    Ok(())
}

/// Nearest-neighbour upscaling of one `[64, 64, 3]` frame to `[64 s, 64 s, 3]`.
fn upscale(frame: &[u8], scale: usize) -> Vec<u8> {
    let side = FRAME_SIZE * scale;
    let mut out = Vec::with_capacity(side * side * 3);
    for row in 0..side {
        for column in 0..side {
            let start = ((row / scale) * FRAME_SIZE + column / scale) * 3;
            out.extend_from_slice(&frame[start..start + 3]);
        }
    }
    out
}

/// Writes `path` whole through `dreamer_persist` (a temporary file beside it, synced and
/// renamed into place at the end; removed when `write` fails).
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut AtomicFile>) -> Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let mut writer = BufWriter::new(&mut file);
    write(&mut writer)
        .and_then(|()| Ok(writer.flush()?))
        .with_context(|| format!("writing {}", path.display()))?;
    drop(writer);
    file.commit()?;
    Ok(())
}

fn write_gif(path: &Path, frames: &[Vec<u8>], control_period_s: f64, scale: usize) -> Result<()> {
    // Viewers slow down delays under 2/100 s, so fast tasks keep every k-th frame.
    let keep_every = (0.04 / control_period_s).ceil().max(1.0) as usize;
    let delay_cs = (control_period_s * keep_every as f64 * 100.0)
        .round()
        .max(2.0) as u16;
    let side = (FRAME_SIZE * scale) as u16;
    write_atomically(path, |writer| {
        let mut encoder = gif::Encoder::new(writer, side, side, &[])?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        for frame in frames.iter().step_by(keep_every) {
            let mut gif_frame = gif::Frame::from_rgb_speed(side, side, &upscale(frame, scale), 10);
            gif_frame.delay = delay_cs;
            encoder.write_frame(&gif_frame)?;
        }
        Ok(())
    })
}

fn write_png_strip(path: &Path, frames: &[Vec<u8>], count: usize, scale: usize) -> Result<()> {
    let count = count.min(frames.len());
    let gap = 2 * scale;
    let side = FRAME_SIZE * scale;
    let width = count * side + (count - 1) * gap;
    let mut strip = vec![255u8; width * side * 3];
    for slot in 0..count {
        // Evenly spaced over the episode, first and last frame included.
        let index = if count == 1 {
            0
        } else {
            slot * (frames.len() - 1) / (count - 1)
        };
        let big = upscale(&frames[index], scale);
        let left = slot * (side + gap);
        for row in 0..side {
            let destination = (row * width + left) * 3;
            strip[destination..destination + side * 3]
                .copy_from_slice(&big[row * side * 3..(row + 1) * side * 3]);
        }
    }
    write_atomically(path, |writer| {
        let mut encoder = png::Encoder::new(writer, width as u32, side as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&strip)?;
        Ok(())
    })
}
