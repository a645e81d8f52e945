//! The closed-loop return of a reduced-precision bundle next to the float32 bundle's: both
//! `policy_step` graphs drive the checkpoint's own task for the same noise-free episodes
//! (zero noise inputs; the environment seeded alike), and the bundle is refused when its
//! mean return drops by more than the tolerance.

use dreamer_bridge::{BridgeOptions, BridgeVecEnv};
use dreamer_bundle::{ReturnCheck, names};
use dreamer_tasks::{EnvOptions, Observation, Step};

use super::batch::{Dims, broadcast};
use super::feeds::{self, Feed, Latent, Noise};
use super::session::Graph;
use crate::checkpoint::Checkpoint;
use crate::error::ExportError;

/// Seed of the first evaluation episode; far from the trainer's collection and evaluation
/// seeds, so the episodes are new to the agent.
pub const FIRST_SEED: u64 = 1_000_000;

/// The checkpoint's task, built in or in a Python worker.
enum TaskEnv {
    BuiltIn(Box<dyn dreamer_tasks::Env>),
    Bridged(Box<BridgeVecEnv>),
}

impl TaskEnv {
    fn new(ckpt: &Checkpoint) -> Result<TaskEnv, String> {
        let options = EnvOptions {
            obs_mode: ckpt.obs,
            action_repeat: ckpt.action_repeat,
        };
        match &ckpt.env {
            None => dreamer_tasks::make(&ckpt.task_name, options)
                .map(TaskEnv::BuiltIn)
                .map_err(|e| e.to_string()),
            Some(record) => {
                let python = ckpt
                    .config_summary
                    .get("run.python")
                    .filter(|p| !p.is_empty())
                    .map(Into::into);
                let bridge = BridgeOptions {
                    python,
                    kwargs: record.kwargs.clone(),
                    ..BridgeOptions::default()
                };
                BridgeVecEnv::new(&record.task, options, 1, &bridge)
                    .map(|env| TaskEnv::Bridged(Box::new(env)))
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, String> {
        match self {
            TaskEnv::BuiltIn(env) => Ok(env.reset(seed)),
            TaskEnv::Bridged(env) => env
                .reset_all(&[seed])
                .map_err(|e| e.to_string())
                .and_then(|mut obs| obs.pop().ok_or_else(|| "no observation".to_string())),
        }
    }

    fn step(&mut self, action: &[f32]) -> Result<Step, String> {
        match self {
            TaskEnv::BuiltIn(env) => env.step(action).map_err(|e| e.to_string()),
            TaskEnv::Bridged(env) => env
                .step_all(action)
                .map_err(|e| e.to_string())
                .and_then(|mut steps| steps.pop().ok_or_else(|| "no step".to_string())),
        }
    }
}

/// Runs `episodes` noise-free episodes with each `policy_step` graph and compares the mean
/// returns; an error when the bundle's drop exceeds `tolerance`.
pub fn compare_returns(
    ckpt: &Checkpoint,
    [float32, bundle]: [&mut Graph; 2],
    d: &Dims,
    episodes: usize,
    (precision, tolerance): (&str, f64),
) -> Result<ReturnCheck, ExportError> {
    let mut env = TaskEnv::new(ckpt).map_err(|message| ExportError::Evaluation {
        task: ckpt.task_name.clone(),
        episode: 0,
        message,
    })?;
    let mut float32_returns = Vec::with_capacity(episodes);
    let mut bundle_returns = Vec::with_capacity(episodes);
    for episode in 0..episodes {
        let seed = FIRST_SEED + episode as u64;
        let fail = |message: String| ExportError::Evaluation {
            task: ckpt.task_name.clone(),
            episode,
            message,
        };
        float32_returns.push(episode_return(&mut env, float32, d, seed).map_err(|e| e.or(fail))?);
        bundle_returns.push(episode_return(&mut env, bundle, d, seed).map_err(|e| e.or(fail))?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (float32_mean, bundle_mean) = (mean(&float32_returns), mean(&bundle_returns));
    let check = ReturnCheck {
        episodes: episodes as u32,
        first_seed: FIRST_SEED,
        drop: (float32_mean - bundle_mean) / float32_mean.abs().max(1.0),
        float32_returns,
        bundle_returns,
        float32_mean,
        bundle_mean,
        tolerance,
    };
    if check.drop.is_nan() || check.drop > tolerance {
        return Err(ExportError::ReturnDrop {
            precision: precision.to_string(),
            episodes,
            float32: check.float32_mean,
            bundle: check.bundle_mean,
            drop: check.drop,
            tolerance,
        });
    }
    Ok(check)
}

/// Why an episode stopped: the graph failed (an export error as is) or the env did.
enum EpisodeFailure {
    Graph(ExportError),
    Env(String),
}

impl EpisodeFailure {
    fn or(self, env_error: impl FnOnce(String) -> ExportError) -> ExportError {
        match self {
            EpisodeFailure::Graph(e) => e,
            EpisodeFailure::Env(message) => env_error(message),
        }
    }
}

/// One noise-free episode of `policy` from the env seeded `seed`; every batch row gets the
/// same observation and row 0's action is applied.
fn episode_return(
    env: &mut TaskEnv,
    policy: &mut Graph,
    d: &Dims,
    seed: u64,
) -> Result<f64, EpisodeFailure> {
    let b = d.batch;
    let mut obs = env.reset(seed).map_err(EpisodeFailure::Env)?;
    let mut latent = Latent {
        h: vec![0.0; b * d.d],
        s: vec![0.0; b * d.s],
        action: vec![0.0; b * d.a],
    };
    let mut total = 0.0;
    loop {
        let mut observation = Vec::new();
        if d.pixels {
            observation.push((names::OBS_PIXELS, Feed::U8(broadcast(&obs.pixels, b))));
        }
        if d.o.is_some() {
            observation.push((names::OBS_STATE, Feed::F32(broadcast(&obs.state, b))));
        }
        let mut out = policy
            .run(feeds::policy_step(observation, latent, Noise::zeros(d)))
            .map_err(EpisodeFailure::Graph)?;
        let action = out.remove(names::ACTION).unwrap_or_default();
        let applied = action.get(..d.a).ok_or_else(|| {
            EpisodeFailure::Env(format!("the graph gave {} action values", action.len()))
        })?;
        let step = env.step(applied).map_err(EpisodeFailure::Env)?;
        total += step.reward;
        if step.terminated || step.truncated {
            return Ok(total);
        }
        obs = step.obs;
        latent = Latent {
            h: out.remove(names::H_NEXT).unwrap_or_default(),
            s: out.remove(names::S_NEXT).unwrap_or_default(),
            action,
        };
    }
}
