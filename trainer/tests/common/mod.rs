//! Tiny configurations and synthetic data for the trainer's tests.
#![allow(dead_code)]

use dreamer_config::Config;
use dreamer_trainer::agent::Agent;
use dreamer_trainer::networks::{Dims, IMAGE_SIZE, Obs};
use dreamer_trainer::noise::UpdateNoise;
use dreamer_trainer::replay::{Batch, Episode, Layout, Replay};
use tch::{Device, Kind, Tensor};

/// Network, training and collection sizes that make a run of a few hundred steps take
/// seconds: updates from step 200 on, two per 100 steps.
pub const TINY_SETS: [&str; 12] = [
    "model.deter=12",
    "model.stoch=4",
    "model.hidden=10",
    "model.units=16",
    "train.batch=3",
    "train.length=5",
    "train.horizon=4",
    "collect.prefill=200",
    "collect.pretrain=2",
    "collect.train_every=100",
    "collect.train_steps=2",
    "eval.episodes=1",
];

/// The cpu-state (or cpu-pixels) preset shrunk to a few units, without evaluations or
/// checkpoints.
pub fn tiny_config(pixels: bool) -> Config {
    let preset = if pixels { "cpu-pixels" } else { "cpu-state" };
    let sets: Vec<String> = TINY_SETS
        .iter()
        .chain(&[
            "model.cnn_depth=2",
            "eval.every=0",
            "log.checkpoint_every=0",
        ])
        .map(|s| s.to_string())
        .collect();
    Config::resolve(preset, None, &sets).unwrap()
}

pub fn dims(pixels: bool) -> Dims {
    if pixels {
        Dims {
            action: 1,
            state: None,
            pixels: true,
        }
    } else {
        Dims {
            action: 1,
            state: Some(3),
            pixels: false,
        }
    }
}

/// A deterministic synthetic batch `[B, T, ..]`.
pub fn synthetic_batch(config: &Config, dims: Dims, seed: i64) -> Batch {
    tch::manual_seed(seed);
    let (b, t) = (config.train.batch, config.train.length);
    let opts = (Kind::Float, Device::Cpu);
    let state = dims.state.map(|o| Tensor::randn([b, t, o], opts));
    let pixels = dims.pixels.then(|| {
        Tensor::randint(
            256,
            [b, t, IMAGE_SIZE, IMAGE_SIZE, 3],
            (Kind::Uint8, Device::Cpu),
        )
    });
    Batch {
        obs: Obs { state, pixels },
        action: Tensor::rand([b, t, dims.action], opts) * 2.0 - 1.0,
        reward: Tensor::randn([b, t], opts),
        discount: Tensor::ones([b, t], opts),
    }
}

pub fn agent(config: &Config, dims: Dims) -> Agent {
    Agent::new(config, dims, Device::Cpu)
}

/// A replay folder holding `count` synthetic episodes of `len` steps.
pub fn synthetic_replay(dir: &std::path::Path, dims: Dims, count: usize, len: usize) -> Replay {
    let layout = Layout {
        action: dims.action as usize,
        state: dims.state.unwrap_or(0) as usize,
        pixels: dims.pixels,
    };
    let mut replay = Replay::open(dir, layout, None).unwrap();
    for e in 0..count {
        let mut episode = Episode::default();
        for i in 0..len {
            let x = (e * len + i) as f32 * 0.1;
            let state: Vec<f32> = (0..layout.state).map(|k| (x + k as f32).sin()).collect();
            let pixels: Vec<u8> = if layout.pixels {
                (0..64 * 64 * 3)
                    .map(|k| ((k + i * 7 + e) % 251) as u8)
                    .collect()
            } else {
                Vec::new()
            };
            episode.push(&state, &pixels, &[x.cos()], x.sin(), 1.0);
        }
        replay.add(episode).unwrap();
    }
    replay
}

/// Every weight, by name, as a CPU copy.
pub fn snapshot(agent: &Agent) -> Vec<(String, Tensor)> {
    dreamer_trainer::checkpoint::weights_on_cpu(agent)
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect()
}

/// Names of the weights that differ between two snapshots.
pub fn changed(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> Vec<String> {
    a.iter()
        .zip(b)
        .filter(|((_, x), (_, y))| !x.equal(y))
        .map(|((n, _), _)| n.clone())
        .collect()
}

/// The noise update `index` of `agent` would use.
pub fn noise(agent: &Agent, index: u64) -> UpdateNoise {
    UpdateNoise::draw(&agent.config, agent.dims, index, Device::Cpu)
}
