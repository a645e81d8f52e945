//! `reference.safetensors`: the trainer's own forward pass on a recorded closed-loop
//! trajectory of real observations and on random inputs, for the exporter's verification
//! (docs/checkpoint-format.md, "Reference file").
//!
//! The networks run in float64 on the checkpoint's float32 weights, and every input (the
//! latent and action carried between steps included) is a float32 value, so each recorded
//! output is the exact result for float32 inputs, rounded once to float32. A float32 bundle
//! is then measured against the exact function, not against another float32 implementation
//! whose own rounding (a few ulps per matmul, amplified by trained weights) would add to its
//! error.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointError, REFERENCE_FILE};
use crate::env_loop::{make_envs, obs_tensors};
use crate::networks::{IMAGE_SIZE, Obs};
use crate::rssm::{Rssm, kl_divergence};

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("task: {0}")]
    Task(#[from] crate::envs::EnvError),
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("the trajectory needs at least 1 step and 1 random case")]
    Empty,
}

/// Seed of the recorded trajectory's resets and of the random cases.
const REFERENCE_SEED: u64 = 20_200_101;
/// Seed of the noise that moves a categorical's draw away from a tie.
const TIE_SEED: u64 = 20_200_102;
/// The smallest gap between a categorical's two largest Gumbel-max scores that the reference
/// keeps: float32 evaluations of the same scores differ by far less, so every graph draws
/// the reference's class and the comparison measures the graphs, not a coin toss at a tie.
const TIE_GAP: f64 = 1e-3;

/// Load the checkpoint in `checkpoint_dir` on the CPU, record a closed-loop trajectory of
/// `steps` decisions of the deterministic policy in the real task (episodes are chained:
/// the latent carries on across resets, exactly as the policy step equations read), evaluate
/// `cases` random inputs, and write `<checkpoint_dir>/reference.safetensors`.
pub fn write_reference(
    checkpoint_dir: &Path,
    steps: usize,
    cases: i64,
) -> Result<PathBuf, ReferenceError> {
    if steps == 0 || cases < 1 {
        return Err(ReferenceError::Empty);
    }
    let (mut agent, _) = checkpoint::load(checkpoint_dir, Device::Cpu)?;
    // A NaN weight would only show up as a NaN action of the recorded trajectory (or of the
    // exporter's verification), without the tensor that holds it.
    checkpoint::check_finite(checkpoint_dir, &agent)?;
    agent.vs.double();
    let dims = agent.dims;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    tch::no_grad(|| -> Result<(), ReferenceError> {
        // Closed-loop trajectory.
        let mut envs = make_envs(&agent.config, 1, false)?;
        envs.check_dims(&agent.config, dims)?;
        let mut rng = ChaCha8Rng::seed_from_u64(REFERENCE_SEED);
        let mut tie_rng = ChaCha8Rng::seed_from_u64(TIE_SEED);
        let mut obs = envs.reset_all(&[rng.random()])?;
        let mut latent = agent.rssm.initial(1, Device::Cpu);
        let mut action = Tensor::zeros([1, dims.action], (Kind::Double, Device::Cpu));
        let mut columns: Vec<Vec<Tensor>> = (0..11).map(|_| Vec::with_capacity(steps)).collect();
        for _ in 0..steps {
            let input = exact(obs_tensors(&obs, dims, Device::Cpu));
            let embed = agent.encoder.forward(&input);
            // Zero noise: the Gaussian's mean, the categoricals' most likely classes (where
            // two are not nearly tied).
            let zeros = latent.s.zeros_like();
            let (mut post, mut prior) = agent.rssm.obs_step(&latent, &action, &embed, &zeros);
            let mut noise = zeros;
            if agent.rssm.classes() > 0 {
                noise = clear_of_ties(&agent.rssm, noise, &[&post.mean], TieBreak::Lead);
                (post, prior) = agent.rssm.obs_step(&latent, &action, &embed, &noise);
            }
            let next_action = agent.actor.mode(&Rssm::get_feat(&post));
            let surprise = kl_divergence(&post, &prior, agent.rssm.classes());
            let row = [
                input.pixels.as_ref().map(|p| p.shallow_clone()),
                input.state.as_ref().map(|s| s.shallow_clone()),
                Some(next_action.shallow_clone()),
                Some(post.h.shallow_clone()),
                Some(post.s.shallow_clone()),
                Some(post.mean.shallow_clone()),
                Some(post.std.shallow_clone()),
                Some(prior.mean.shallow_clone()),
                Some(prior.std.shallow_clone()),
                Some(surprise),
                Some(noise),
            ];
            for (column, value) in columns.iter_mut().zip(row) {
                if let Some(value) = value {
                    column.push(value);
                }
            }
            let next_action = next_action.to_kind(Kind::Float);
            let actions: Vec<f32> = Vec::try_from(next_action.flatten(0, -1)).expect("f32 action");
            let step = envs.step_all(&actions)?.remove(0);
            obs = if step.terminated || step.truncated {
                vec![envs.reset_one(0, rng.random())?]
            } else {
                vec![step.obs]
            };
            // The next step starts from float32 values, as the bundle's does.
            latent = crate::rssm::State {
                h: to_f32_values(&post.h),
                s: to_f32_values(&post.s),
                ..post
            };
            action = next_action.to_kind(Kind::Double);
        }
        let names = [
            "traj.obs.pixels",
            "traj.obs.state",
            "traj.action",
            "traj.h",
            "traj.s",
            "traj.post_mean",
            "traj.post_std",
            "traj.prior_mean",
            "traj.prior_std",
            "traj.surprise",
            "traj.noise",
        ];
        for (name, column) in names.iter().zip(&columns) {
            if !column.is_empty() {
                named.push((name.to_string(), Tensor::cat(column, 0)));
            }
        }

        // Random cases.
        let m = &agent.config.model;
        let embed_size = dims.embed(m.units, m.cnn_depth);
        let mut normal = |shape: &[i64]| {
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
            Tensor::from_slice(&values)
                .reshape(shape)
                .to_kind(Kind::Double)
        };
        let h = normal(&[cases, m.deter]);
        let s = normal(&[cases, m.stoch_width()]);
        let embed = normal(&[cases, embed_size]);
        let noise = normal(&[cases, m.stoch_width()]);
        let state_obs = dims.state.map(|o| normal(&[cases, o]));
        let a = (normal(&[cases, dims.action]) * 0.5).tanh();
        let pixels_obs = dims.pixels.then(|| {
            let n = (cases * IMAGE_SIZE * IMAGE_SIZE * 3) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            Tensor::from_slice(&bytes).reshape([cases, IMAGE_SIZE, IMAGE_SIZE, 3])
        });
        let obs = Obs {
            state: state_obs,
            pixels: pixels_obs,
        };
        let a = to_f32_values(&a);
        let prev = agent.rssm.initial(cases, Device::Cpu);
        let prev = crate::rssm::State {
            h: h.shallow_clone(),
            s: s.shallow_clone(),
            ..prev
        };
        let encoded = agent.encoder.forward(&obs);
        let mut noise = noise;
        if agent.rssm.classes() > 0 {
            // Every categorical the noise draws from: the prior, the posterior on
            // `rand.embed` and the posterior on the encoded observations (`policy_step`'s).
            let tables = [
                agent.rssm.img_step(&prev, &a, &noise).mean,
                agent.rssm.obs_step(&prev, &a, &embed, &noise).0.mean,
                agent.rssm.obs_step(&prev, &a, &encoded, &noise).0.mean,
            ];
            let tables: Vec<&Tensor> = tables.iter().collect();
            noise = clear_of_ties(&agent.rssm, noise, &tables, TieBreak::Redraw(&mut tie_rng));
        }
        let img = agent.rssm.img_step(&prev, &a, &noise);
        let (post, prior) = agent.rssm.obs_step(&prev, &a, &embed, &noise);
        let (mean, std) = agent.actor.dist(&Tensor::cat(&[&h, &s], 1));
        let mode = mean.tanh();
        let mut push = |name: &str, t: &Tensor| named.push((name.to_string(), t.shallow_clone()));
        push("rand.h", &h);
        push("rand.s", &s);
        push("rand.a", &a);
        push("rand.embed", &embed);
        push("rand.noise", &noise);
        if let Some(p) = &obs.pixels {
            push("rand.obs.pixels", p);
        }
        if let Some(o) = &obs.state {
            push("rand.obs.state", o);
        }
        push("rand.encoder.embed", &encoded);
        push("rand.img_step.h", &img.h);
        push("rand.img_step.s", &img.s);
        push("rand.img_step.mean", &img.mean);
        push("rand.img_step.std", &img.std);
        push("rand.obs_step.h", &post.h);
        push("rand.obs_step.s", &post.s);
        push("rand.obs_step.mean", &post.mean);
        push("rand.obs_step.std", &post.std);
        push("rand.obs_step.prior_mean", &prior.mean);
        push("rand.obs_step.prior_std", &prior.std);
        push("rand.actor.mode", &mode);
        push("rand.actor.mean", &mean);
        push("rand.actor.std", &std);
        Ok(())
    })?;
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| {
            let t = if t.kind() == Kind::Double {
                t.to_kind(Kind::Float)
            } else {
                t
            };
            (n, t.contiguous())
        })
        .collect();
    let path = checkpoint_dir.join(REFERENCE_FILE);
    let write_err = |message: String| ReferenceError::Write {
        path: path.clone(),
        message,
    };
    // libtorch writes by path: to the temporary one, which commit syncs and renames.
    let file = dreamer_persist::AtomicFile::create(&path).map_err(|e| write_err(e.to_string()))?;
    Tensor::write_safetensors(&named, file.tmp_path()).map_err(|e| write_err(e.to_string()))?;
    file.commit().map_err(|e| write_err(e.to_string()))?;
    Ok(path)
}

/// How [`clear_of_ties`] moves a categorical out of a tie.
enum TieBreak<'r> {
    /// Raise the noise of the class with the largest score (in the first table) by
    /// [`LEAD_NUDGE`]: the class drawn stays the same, only further ahead. For zero noise,
    /// whose draw is the most likely class, so that a runtime's zero-noise step draws the
    /// same classes.
    Lead,
    /// Draw the categorical's noise again (float32 standard-normal values).
    Redraw(&'r mut ChaCha8Rng),
}

/// Raises a class's Gumbel score by about 0.054 from zero noise (3/64: a float32 value, as
/// every recorded input is).
const LEAD_NUDGE: f64 = 0.046_875;

/// `noise` [N, W] for categorical latents whose probabilities are `tables` ([N, W] each,
/// drawn with the same noise), with each categorical whose two largest Gumbel-max scores in
/// any table are within [`TIE_GAP`] moved apart by `tie_break` until none is.
fn clear_of_ties(
    rssm: &Rssm,
    noise: Tensor,
    tables: &[&Tensor],
    mut tie_break: TieBreak,
) -> Tensor {
    let classes = rssm.classes();
    let shape = noise.size();
    let k = classes as usize;
    let mut values: Vec<f64> = Vec::try_from(noise.flatten(0, -1)).expect("f64 noise");
    // Redraws until no tie is left; each redraw of a categorical lands in a tie with
    // probability about TIE_GAP, so a handful of rounds suffices.
    for _ in 0..1000 {
        let current = Tensor::from_slice(&values).reshape(&shape[..]);
        let mut tied = vec![false; values.len() / k];
        let mut leaders: Vec<i64> = Vec::new();
        for (t, probs) in tables.iter().enumerate() {
            let grouped = probs.reshape([-1, classes]);
            let scores = rssm.gumbel_scores(&grouped, &current); // [N * S, K]
            let (top, index) = scores.topk(2, -1, true, true);
            let gap: Vec<f64> =
                Vec::try_from(top.select(-1, 0) - top.select(-1, 1)).expect("f64 gaps");
            for (tie, gap) in tied.iter_mut().zip(gap) {
                *tie |= gap < TIE_GAP;
            }
            if t == 0 {
                leaders = Vec::try_from(index.select(-1, 0)).expect("i64 classes");
            }
        }
        if !tied.contains(&true) {
            return current;
        }
        for (i, _) in tied.iter().enumerate().filter(|(_, tie)| **tie) {
            let group = &mut values[i * k..(i + 1) * k];
            match &mut tie_break {
                TieBreak::Lead => group[leaders[i] as usize] += LEAD_NUDGE,
                TieBreak::Redraw(rng) => {
                    for value in group {
                        *value = f64::from(rng.sample::<f32, _>(StandardNormal));
                    }
                }
            }
        }
    }
    Tensor::from_slice(&values).reshape(&shape[..])
}

/// Float64 values that are exactly representable in float32 (rounded once).
fn to_f32_values(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float).to_kind(Kind::Double)
}

/// Observations as the float64 networks take them (pixels stay u8).
fn exact(obs: Obs) -> Obs {
    Obs {
        state: obs.state.map(|s| s.to_kind(Kind::Double)),
        pixels: obs.pixels,
    }
}
