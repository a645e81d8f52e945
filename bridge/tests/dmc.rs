//! DeepMind Control Suite tasks through the bridge, against real dm_control and MuJoCo. These
//! fail (with the install command in the message) where dm_control is not installed.

mod common;

use common::{bridge, options, state};
use dreamer_tasks::{EnvOptions, FRAME_BYTES, ObsMode};
use serde_json::json;

#[test]
fn cartpole_swingup_runs_a_whole_episode_and_is_truncated_by_its_time_limit() {
    let mut env = bridge("dmc:cartpole-swingup", state(4), 2, &options(json!({})));
    let spec = env.spec().clone();
    assert_eq!(spec.task, "dmc:cartpole-swingup");
    assert_eq!(
        spec.state_fields,
        [
            "position[0]",
            "position[1]",
            "position[2]",
            "velocity[0]",
            "velocity[1]"
        ]
    );
    assert_eq!(
        (
            spec.physical_action_low.clone(),
            spec.physical_action_high.clone()
        ),
        (vec![-1.0], vec![1.0])
    );
    assert!(
        (spec.physics_dt - 0.01).abs() < 1e-12,
        "{}",
        spec.physics_dt
    );
    assert!((spec.control_period_s - 0.04).abs() < 1e-12);
    assert_eq!((spec.max_env_steps, spec.max_decisions), (1000, 250));
    let versions = &env.worker_spec().versions;
    assert_eq!(
        versions.get("dm-control").map(String::as_str),
        Some("1.0.50")
    );
    assert_eq!(versions.get("mujoco").map(String::as_str), Some("3.17.0"));

    let first = env.reset_all(&[3, 3]).unwrap();
    assert_eq!(first[0], first[1], "same seed, same start");
    // Swingup starts hanging: cos(pole angle) near -1.
    assert!(
        (first[0].state[1] + 1.0).abs() < 0.01,
        "{:?}",
        first[0].state
    );
    let other = env.reset_one(1, u64::MAX).unwrap();
    assert_ne!(other, first[0]);

    let mut total = [0.0f64; 2];
    for decision in 1..=250 {
        let steps = env.step_all(&[0.8, -0.3]).unwrap();
        for (sum, step) in total.iter_mut().zip(&steps) {
            assert!(!step.terminated, "decision {decision}");
            assert_eq!(step.truncated, decision == 250, "decision {decision}");
            // Four physics steps of reward in [0, 1] each.
            assert!((0.0..=4.0).contains(&step.reward), "{}", step.reward);
            *sum += step.reward;
        }
    }
    assert!(total.iter().all(|&r| r > 0.0 && r <= 1000.0), "{total:?}");
    assert!(env.needs_reset(0) && env.needs_reset(1));
}

#[test]
fn cartpole_pixels_are_rendered_at_64x64_by_mujoco() {
    let pixels = EnvOptions {
        obs_mode: ObsMode::Pixels,
        action_repeat: 2,
    };
    let mut env = bridge("dmc:cartpole-swingup", pixels, 1, &options(json!({})));
    assert_eq!(
        env.worker_spec().pixels.as_deref(),
        Some("physics.render(64, 64, camera_id=0)")
    );
    let first = env.reset_all(&[1]).unwrap().remove(0);
    assert!(first.state.is_empty());
    assert_eq!(first.pixels.len(), FRAME_BYTES);
    let distinct: std::collections::BTreeSet<u8> = first.pixels.iter().copied().collect();
    assert!(distinct.len() > 10, "a flat frame: {distinct:?}");
    let mut last = first.pixels.clone();
    for _ in 0..3 {
        let step = env.step_all(&[1.0]).unwrap().remove(0);
        assert_eq!(step.obs.pixels.len(), FRAME_BYTES);
        last = step.obs.pixels;
    }
    assert_ne!(last, first.pixels, "the cart moved, the picture did not");
}

#[test]
fn an_unknown_dmc_task_is_refused_with_tasks_like_it() {
    let error = match dreamer_bridge::BridgeVecEnv::new(
        "dmc:cartpole-swingupp",
        state(1),
        1,
        &options(json!({})),
    ) {
        Ok(_) => panic!("started"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("dm_control's suite has no task `cartpole-swingupp`"),
        "{error}"
    );
    assert!(error.contains("cartpole-swingup"), "{error}");
}

/// The physical state (cart position, pole angle, their velocities) that dm_control's
/// `cartpole-swingup` starts from when the bridge resets it with `seed`, exactly: the worker
/// seeds the task's RandomState with the seed's two 32-bit halves, then resets.
fn dmc_start(seed: u64) -> [f64; 4] {
    const PRINT_START: &str = "
import sys
import numpy as np
from dm_control import suite
seed = int(sys.argv[1])
env = suite.load('cartpole', 'swingup')
env.task._random = np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32])
env.reset()
q, v = env.physics.data.qpos, env.physics.data.qvel
print(repr(float(q[0])), repr(float(q[1])), repr(float(v[0])), repr(float(v[1])))
";
    let python = dreamer_bridge::resolve_python(None).path;
    let out = std::process::Command::new(&python)
        .args(["-c", PRINT_START, &seed.to_string()])
        .env("MUJOCO_GL", "disable")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    values.try_into().unwrap_or_else(|v| panic!("{v:?}"))
}

/// The built-in `cartpole-swingup` (docs/tasks.md) against dm_control's through the bridge:
/// the native env started from exactly the state dm_control drew, both driven by the same
/// actions for whole episodes with the pole swinging and the cart inside its rails. Rewards
/// (float64 on the wire) agree to 1e-12, the tolerance tasks.md states for MuJoCo's
/// trajectory (9e-15 seen), and observations to one float32 step (both sides round the same
/// float64 values, and were identical when measured).
#[test]
fn the_native_cartpole_follows_dm_control() {
    let repeat = 4;
    let mut bridged = bridge(
        "dmc:cartpole-swingup",
        state(repeat),
        1,
        &options(json!({})),
    );
    let mut native = dreamer_tasks::make("cartpole-swingup", state(repeat)).unwrap();
    assert_eq!(bridged.spec().state_fields.len(), native.spec().state_size);
    assert_eq!(
        (bridged.spec().max_decisions, bridged.spec().physics_dt),
        (native.spec().max_decisions, native.spec().physics_dt)
    );
    for seed in [1u64, 2, 1 << 40] {
        let start = bridged.reset_all(&[seed]).unwrap().remove(0).state;
        native.reset(0);
        native.set_physical_state(&dmc_start(seed)).unwrap();
        let (mut obs, mut worst_obs, mut worst_reward) = (start, 0.0f64, 0.0f64);
        let (mut native_return, mut bridged_return) = (0.0, 0.0);
        for decision in 0..native.spec().max_decisions {
            // Swings the pole while holding the cart well inside its rails.
            let t = f64::from(decision);
            let push = 0.8 * (0.21 * t).sin() - 0.6 * f64::from(obs[0]) - 0.2 * f64::from(obs[3]);
            let action = [push.clamp(-1.0, 1.0) as f32];
            let ours = native.step(&action).unwrap();
            let theirs = bridged.step_all(&action).unwrap().remove(0);
            assert_eq!(
                (ours.terminated, ours.truncated),
                (theirs.terminated, theirs.truncated),
                "decision {decision}"
            );
            assert!(ours.obs.state[0].abs() < 1.5, "{:?}", ours.obs.state);
            for (a, b) in ours.obs.state.iter().zip(&theirs.obs.state) {
                // Relative to float32's resolution at the value.
                let resolution = f64::from(a.abs().max(1e-3)) * f64::from(f32::EPSILON);
                worst_obs = worst_obs.max(f64::from((a - b).abs()) / resolution);
            }
            worst_reward = worst_reward.max((ours.reward - theirs.reward).abs());
            native_return += ours.reward;
            bridged_return += theirs.reward;
            obs = ours.obs.state;
        }
        eprintln!(
            "seed {seed}: worst observation difference {worst_obs:.2} float32 steps, worst \
             reward difference {worst_reward:.2e}, returns {native_return:.9} and \
             {bridged_return:.9}"
        );
        assert!(worst_obs <= 1.0, "seed {seed}: {worst_obs} float32 steps");
        assert!(worst_reward < 1e-12, "seed {seed}: {worst_reward}");
    }
}
