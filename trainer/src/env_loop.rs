//! Acting in the environments: collection with exploration noise into replay episodes, and
//! noise-free evaluation.

use dreamer_config::{Config, ObsMode};
use dreamer_tasks::{EnvSpec, Observation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Device, Tensor};

use crate::agent::Agent;
use crate::envs::{EnvError, Envs};
use crate::networks::{Dims, IMAGE_SIZE, Obs};
use crate::replay::{Episode, Layout};
use crate::rssm::State;
use crate::seeds::{STREAM_EVAL, stream_seed};

/// Make `n` environments of the configured task (built-in, or bridged Python workers);
/// `with_pixels` adds pixel observations (for videos) to whatever the agent uses.
pub fn make_envs(config: &Config, n: usize, with_pixels: bool) -> Result<Envs, EnvError> {
    let mut mode = config.run.obs_mode;
    if with_pixels && mode == ObsMode::State {
        mode = ObsMode::Both;
    }
    Envs::new(config, n, mode)
}

/// Network sizes and replay layout the configured task implies.
pub fn dims_of(config: &Config, spec: &EnvSpec) -> Dims {
    dims_for(config, spec.action_size, spec.state_size)
}

/// Network sizes of an env with these action and state sizes, observed as `config` says.
pub fn dims_for(config: &Config, action_size: usize, state_size: usize) -> Dims {
    Dims {
        action: action_size as i64,
        state: config
            .run
            .obs_mode
            .uses_state()
            .then_some(state_size as i64),
        pixels: config.run.obs_mode.uses_pixels(),
    }
}

pub fn layout_of(dims: Dims) -> Layout {
    Layout {
        action: dims.action as usize,
        state: dims.state.unwrap_or(0) as usize,
        pixels: dims.pixels,
    }
}

/// Observations of `n` envs as network input on `device`.
pub fn obs_tensors(observations: &[Observation], dims: Dims, device: Device) -> Obs {
    let n = observations.len() as i64;
    let state = dims.state.map(|size| {
        let flat: Vec<f32> = observations
            .iter()
            .flat_map(|o| o.state.iter().copied())
            .collect();
        Tensor::from_slice(&flat)
            .reshape([n, size])
            .to_device(device)
    });
    let pixels = dims.pixels.then(|| {
        let flat: Vec<u8> = observations
            .iter()
            .flat_map(|o| o.pixels.iter().copied())
            .collect();
        Tensor::from_slice(&flat)
            .reshape([n, IMAGE_SIZE, IMAGE_SIZE, 3])
            .to_device(device)
    });
    Obs { state, pixels }
}

fn normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// How to act while collecting.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour<'a> {
    /// Uniform random actions in [-1, 1].
    Random,
    /// The actor's sample plus Gaussian noise of this std, clipped to [-1, 1].
    Explore(&'a Agent, f64),
}

/// Collection state of `n` environments: the agent's latent per env and the episodes in
/// progress.
pub struct Collector {
    envs: Envs,
    dims: Dims,
    latent: Option<State>,
    prev_action: Vec<f32>,
    obs: Vec<Observation>,
    episodes: Vec<Episode>,
}

impl Collector {
    pub fn new(config: &Config) -> Result<Collector, EnvError> {
        let envs = make_envs(config, config.run.envs, false)?;
        let dims = dims_of(config, envs.spec());
        Ok(Collector {
            prev_action: vec![0.0; envs.num_envs() * dims.action as usize],
            episodes: vec![Episode::default(); envs.num_envs()],
            obs: Vec::new(),
            latent: None,
            envs,
            dims,
        })
    }

    pub fn spec(&self) -> &EnvSpec {
        self.envs.spec()
    }

    /// The environments themselves (for the bridge's description of them).
    pub fn envs(&self) -> &Envs {
        &self.envs
    }

    /// Drop the episodes in progress: the next [`Collector::step`] resets every env with
    /// fresh seeds, as a new collector over new envs would (an env's episode is drawn from
    /// its reset seed alone), without starting the envs again.
    pub fn restart(&mut self) {
        self.obs.clear();
        self.latent = None;
        self.prev_action.fill(0.0);
        for episode in &mut self.episodes {
            *episode = Episode::default();
        }
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub fn num_envs(&self) -> usize {
        self.envs.num_envs()
    }

    fn record_first(&mut self, index: usize) {
        let a = self.dims.action as usize;
        let episode = &mut self.episodes[index];
        *episode = Episode::default();
        let obs = &self.obs[index];
        episode.push(&obs.state, &obs.pixels, &vec![0.0; a], 0.0, 1.0);
    }

    /// One decision in every env. Episodes that ended are returned complete. Resets draw
    /// their seeds from `rng`, as does all noise.
    pub fn step(
        &mut self,
        behaviour: Behaviour,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Episode>, EnvError> {
        let n = self.envs.num_envs();
        let a = self.dims.action as usize;
        if self.obs.is_empty() {
            let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
            self.obs = self.envs.reset_all(&seeds)?;
            for i in 0..n {
                self.record_first(i);
            }
            self.prev_action.fill(0.0);
            self.latent = None;
        }
        let actions: Vec<f32> = match behaviour {
            Behaviour::Random => (0..n * a).map(|_| rng.random_range(-1.0..=1.0)).collect(),
            Behaviour::Explore(agent, noise_std) => {
                let device = agent.device();
                let latent = self
                    .latent
                    .take()
                    .unwrap_or_else(|| agent.rssm.initial(n as i64, device));
                let obs = obs_tensors(&self.obs, self.dims, device);
                let prev = Tensor::from_slice(&self.prev_action)
                    .reshape([n as i64, a as i64])
                    .to_device(device);
                let stoch = agent.config.model.stoch_width();
                let latent_noise = Tensor::from_slice(&normal(rng, n * stoch as usize))
                    .reshape([n as i64, stoch])
                    .to_device(device);
                let action_noise = Tensor::from_slice(&normal(rng, n * a))
                    .reshape([n as i64, a as i64])
                    .to_device(device);
                let (latent, action) =
                    agent.policy_step(&latent, &prev, &obs, Some((&latent_noise, &action_noise)));
                self.latent = Some(latent);
                let action: Vec<f32> = Vec::try_from(action.to_device(Device::Cpu).flatten(0, -1))
                    .expect("action tensor is f32");
                action
                    .iter()
                    .map(|&x| {
                        let noisy = x as f64 + noise_std * rng.sample::<f64, _>(StandardNormal);
                        noisy.clamp(-1.0, 1.0) as f32
                    })
                    .collect()
            }
        };
        let steps = self.envs.step_all(&actions)?;
        let mut finished = Vec::new();
        let mut done_mask = vec![1.0f32; n];
        for (i, step) in steps.into_iter().enumerate() {
            let discount = if step.terminated { 0.0 } else { 1.0 };
            self.episodes[i].push(
                &step.obs.state,
                &step.obs.pixels,
                &actions[i * a..(i + 1) * a],
                step.reward as f32,
                discount,
            );
            self.obs[i] = step.obs;
            self.prev_action[i * a..(i + 1) * a].copy_from_slice(&actions[i * a..(i + 1) * a]);
            if step.terminated || step.truncated {
                finished.push(std::mem::take(&mut self.episodes[i]));
                self.obs[i] = self.envs.reset_one(i, rng.random())?;
                self.record_first(i);
                self.prev_action[i * a..(i + 1) * a].fill(0.0);
                done_mask[i] = 0.0;
            }
        }
        if done_mask.contains(&0.0)
            && let Some(latent) = &self.latent
        {
            let mask = Tensor::from_slice(&done_mask)
                .unsqueeze(1)
                .to_device(latent.h.device());
            self.latent = Some(State {
                h: &latent.h * &mask,
                s: &latent.s * &mask,
                mean: &latent.mean * &mask,
                std: &latent.std * &mask,
            });
        }
        Ok(finished)
    }
}

/// Result of a noise-free evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub returns: Vec<f64>,
    /// Frames `[64, 64, 3]` of the first episode when requested.
    pub frames: Vec<Vec<u8>>,
}

impl Evaluation {
    pub fn mean(&self) -> f64 {
        self.returns.iter().sum::<f64>() / self.returns.len() as f64
    }
    pub fn std(&self) -> f64 {
        let mean = self.mean();
        (self.returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / self.returns.len() as f64)
            .sqrt()
    }
}

/// Run `episodes` noise-free episodes in parallel (the deterministic policy of
/// docs/checkpoint-format.md); reset seeds come from evaluation draw `draw` of the run seed.
pub fn evaluate(
    agent: &Agent,
    episodes: usize,
    draw: u64,
    record_frames: bool,
) -> Result<Evaluation, EnvError> {
    let mut envs = eval_envs(agent, episodes, record_frames)?;
    evaluate_in(&mut envs, agent, draw, record_frames)
}

/// `episodes` envs for [`evaluate_in`], checked to give the sizes of `agent`'s networks.
pub fn eval_envs(agent: &Agent, episodes: usize, record_frames: bool) -> Result<Envs, EnvError> {
    let envs = make_envs(&agent.config, episodes, record_frames)?;
    envs.check_dims(&agent.config, agent.dims)?;
    Ok(envs)
}

/// [`evaluate`] in envs made by [`eval_envs`] (one episode per env), which a run keeps
/// between evaluations: every env is reset first, so earlier use leaves no trace.
pub fn evaluate_in(
    envs: &mut Envs,
    agent: &Agent,
    draw: u64,
    record_frames: bool,
) -> Result<Evaluation, EnvError> {
    let config = &agent.config;
    let episodes = envs.num_envs();
    let dims = agent.dims;
    let a = dims.action as usize;
    let device = agent.device();
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(config.run.seed, STREAM_EVAL, draw));
    let seeds: Vec<u64> = (0..episodes).map(|_| rng.random()).collect();
    let mut obs = envs.reset_all(&seeds)?;
    let mut latent = agent.rssm.initial(episodes as i64, device);
    let mut prev = Tensor::zeros([episodes as i64, a as i64], (tch::Kind::Float, device));
    let mut returns = vec![0.0; episodes];
    let mut finished = vec![false; episodes];
    let mut frames = Vec::new();
    loop {
        if record_frames {
            frames.push(obs[0].pixels.clone());
        }
        let (next, action) =
            agent.policy_step(&latent, &prev, &obs_tensors(&obs, dims, device), None);
        let actions: Vec<f32> =
            Vec::try_from(action.to_device(Device::Cpu).flatten(0, -1)).expect("f32 actions");
        let steps = envs.step_all(&actions)?;
        let mut ended = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if !finished[i] {
                returns[i] += step.reward;
            }
            if step.terminated || step.truncated {
                finished[i] = true;
                ended.push(i);
            }
        }
        if finished.iter().all(|&f| f) {
            break;
        }
        obs = steps.into_iter().map(|s| s.obs).collect();
        // An env that ended early keeps stepping (its rewards no longer count) so the batch
        // stays aligned.
        for i in ended {
            obs[i] = envs.reset_one(i, seeds[i])?;
        }
        latent = next;
        prev = action;
    }
    Ok(Evaluation { returns, frames })
}
