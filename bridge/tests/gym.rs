//! Gymnasium envs through the bridge, against real gymnasium: the exact Pendulum-v1 next to the
//! native `pendulum`, the spec, action repeat, termination versus truncation, observation
//! layouts and pictures.

mod common;

use common::{assert_reaped, assert_running, bridge, options, state};
use dreamer_bridge::BridgeVecEnv;
use dreamer_tasks::{EnvOptions, FRAME_BYTES, ObsMode};
use serde_json::json;

/// Initial (theta, theta_dot) per reset seed: hanging, near upright, at the speed limit.
const STARTS: [(u64, [f64; 2]); 3] = [(11, [2.5, -0.7]), (12, [-3.0, 0.9]), (13, [0.1, 7.9])];

/// A fixed action sequence in [-1.3, 1.3]: some components are clipped by the [-1, 1] rule.
fn action(env: usize, step: usize) -> f32 {
    let phase = (env * 7 + step * 13) % 29;
    -1.3 + 2.6 * phase as f32 / 28.0
}

/// |a - b| relative to the larger magnitude (absolute below 1).
fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1.0)
}

/// Runs the bridged Pendulum-v1 and the native pendulum from the same states with the same
/// actions for a whole episode; returns the largest relative observation and reward
/// differences. Gymnasium computes the torque term in float32 (the action space's dtype),
/// the native task in float64, so the two agree to float32 precision, not bit for bit.
fn compare_with_native(repeat: u32) -> (f64, f64) {
    let states = STARTS
        .iter()
        .map(|(seed, s)| (seed.to_string(), json!(s)))
        .collect::<serde_json::Map<_, _>>();
    let opts = options(json!({ "states": states }));
    let mut bridged = bridge("gym:test_envs:PendulumAt-v0", state(repeat), 3, &opts);
    let seeds: Vec<u64> = STARTS.iter().map(|(seed, _)| *seed).collect();
    let first = bridged.reset_all(&seeds).unwrap();
    let mut natives: Vec<_> = STARTS
        .iter()
        .map(|(_, s)| {
            let mut env = dreamer_tasks::make("pendulum", state(repeat)).unwrap();
            env.reset(0);
            env.set_physical_state(s).unwrap();
            env
        })
        .collect();
    let (mut obs_diff, mut reward_diff) = (0.0f64, 0.0f64);
    for (obs, (_, [theta, theta_dot])) in first.iter().zip(STARTS) {
        let expected = [theta.cos() as f32, theta.sin() as f32, theta_dot as f32];
        for (a, b) in obs.state.iter().zip(expected) {
            obs_diff = obs_diff.max(relative(f64::from(*a), f64::from(b)));
        }
    }
    let decisions = bridged.spec().max_decisions as usize;
    for step in 0..decisions {
        let actions: Vec<f32> = (0..3).map(|env| action(env, step)).collect();
        let steps = bridged.step_all(&actions).unwrap();
        for (env, (got, native)) in steps.iter().zip(&mut natives).enumerate() {
            let want = native.step(&[actions[env]]).unwrap();
            for (a, b) in got.obs.state.iter().zip(&want.obs.state) {
                let diff = relative(f64::from(*a), f64::from(*b));
                assert!(
                    diff <= 1e-6,
                    "env {env} decision {step}: observation {:?} vs native {:?}",
                    got.obs.state,
                    want.obs.state
                );
                obs_diff = obs_diff.max(diff);
            }
            let diff = relative(got.reward, want.reward);
            assert!(
                diff <= 1e-6,
                "env {env} decision {step}: reward {} vs native {}",
                got.reward,
                want.reward
            );
            reward_diff = reward_diff.max(diff);
            assert_eq!(
                (got.terminated, got.truncated),
                (want.terminated, want.truncated),
                "env {env} decision {step}"
            );
            assert_eq!(got.truncated, step + 1 == decisions, "decision {step}");
        }
    }
    assert!((0..3).all(|i| bridged.needs_reset(i)));
    (obs_diff, reward_diff)
}

#[test]
fn pendulum_matches_the_native_task_step_for_step() {
    let (obs, reward) = compare_with_native(1);
    eprintln!("repeat 1: largest relative difference: observation {obs:e}, reward {reward:e}");
}

#[test]
fn pendulum_matches_with_action_repeat_and_a_short_last_decision() {
    // 200 physics steps with repeat 3: 66 decisions of 3 and one of 2, truncated at the 67th.
    let (obs, reward) = compare_with_native(3);
    eprintln!("repeat 3: largest relative difference: observation {obs:e}, reward {reward:e}");
}

#[test]
fn the_spec_comes_from_the_registered_env_and_time_limit_truncates() {
    let opts = options(json!({ "max_episode_steps": 7 }));
    let mut env = bridge("gym:Pendulum-v1", state(3), 2, &opts);
    let spec = env.spec().clone();
    assert_eq!(spec.task, "gym:Pendulum-v1");
    assert_eq!(spec.state_fields, ["obs[0]", "obs[1]", "obs[2]"]);
    assert_eq!(spec.state_size, 3);
    assert_eq!(spec.action_size, 1);
    assert_eq!(
        (
            spec.physical_action_low.clone(),
            spec.physical_action_high.clone()
        ),
        (vec![-2.0], vec![2.0])
    );
    assert_eq!(spec.physics_dt, 0.05);
    assert!((spec.control_period_s - 0.15).abs() < 1e-12);
    assert_eq!((spec.max_env_steps, spec.max_decisions), (7, 3));
    assert!(spec.physical_state_fields.is_empty());
    let info = env.worker_spec();
    assert_eq!(
        info.versions.get("gymnasium").map(String::as_str),
        Some("1.4.0")
    );
    assert_eq!(info.action_space, "Box(-2.0, 2.0, (1,), float32)");

    // The same seed gives the same start in any worker; another seed another start.
    let first = env.reset_all(&[5, 5]).unwrap();
    assert_eq!(first[0], first[1]);
    let other = env.reset_one(1, 6).unwrap();
    assert_ne!(other, first[0]);

    // 7 steps with repeat 3: decisions of 3, 3 and 1 steps; the third is truncated.
    for decision in 1..=3 {
        let steps = env.step_all(&[0.5, -0.5]).unwrap();
        for step in &steps {
            assert!(!step.terminated);
            assert_eq!(step.truncated, decision == 3, "decision {decision}");
        }
    }
    let error = env.step_all(&[0.0, 0.0]).unwrap_err().to_string();
    assert!(error.contains("env 0 needs a reset"), "{error}");
    env.reset_one(0, 1).unwrap();
    assert!(env.needs_reset(1) && !env.needs_reset(0));
}

#[test]
fn termination_is_kept_apart_from_truncation_and_stops_the_repeat() {
    let mut env = bridge(
        "gym:test_envs:TerminatesAt3-v0",
        state(2),
        1,
        &options(json!({})),
    );
    assert_eq!(env.spec().physics_dt, 0.1, "1 / render_fps");
    assert_eq!(env.spec().max_env_steps, 100);
    env.reset_all(&[0]).unwrap();
    let first = env.step_all(&[0.0, 0.0]).unwrap().remove(0);
    assert_eq!(
        (first.reward, first.terminated, first.truncated),
        (2.0, false, false)
    );
    assert_eq!(first.obs.state, [2.0]);
    // Env steps 3 and (not taken) 4: the repeat stops at the termination.
    let last = env.step_all(&[0.0, 0.0]).unwrap().remove(0);
    assert_eq!(
        (last.reward, last.terminated, last.truncated),
        (1.0, true, false)
    );
    assert_eq!(last.obs.state, [3.0]);
    assert!(env.needs_reset(0));
}

#[test]
fn rendered_frames_of_another_size_are_area_averaged_to_64x64() {
    let both = EnvOptions {
        obs_mode: ObsMode::Both,
        action_repeat: 1,
    };
    let mut env = bridge("gym:test_envs:WideFrames-v0", both, 1, &options(json!({})));
    assert_eq!(
        env.worker_spec().pixels.as_deref(),
        Some("render:rgb_array")
    );
    assert_eq!(
        (
            env.spec().physical_action_low[0],
            env.spec().physical_action_high[0]
        ),
        (-3.0, 5.0)
    );
    let obs = env.reset_all(&[0]).unwrap().remove(0);
    assert_eq!(obs.pixels.len(), FRAME_BYTES);
    // 96x128 -> 64x64: the halves fall on whole output pixels (1.5 and 2 source pixels each).
    for y in 0..64 {
        for x in 0..64 {
            let at = (y * 64 + x) * 3;
            let want = [
                if x < 32 { 200 } else { 0 },
                if y < 32 { 40 } else { 0 },
                if x < 32 { 0 } else { 100 },
            ];
            assert_eq!(obs.pixels[at..at + 3], want, "pixel ({y}, {x})");
        }
    }
    // The normalised action maps linearly onto [-3, 5] (centre 1, half range 4), clipped.
    for (action, physical) in [(0.0f32, 1.0f32), (-1.0, -3.0), (0.5, 3.0), (7.0, 5.0)] {
        let step = env.step_all(&[action]).unwrap().remove(0);
        assert_eq!(step.obs.state, [physical / 10.0], "action {action}");
    }
}

#[test]
fn pendulum_pixels_come_from_its_own_renderer_resized() {
    let both = EnvOptions {
        obs_mode: ObsMode::Both,
        action_repeat: 1,
    };
    let mut env = bridge("gym:Pendulum-v1", both, 1, &options(json!({})));
    assert_eq!(
        env.worker_spec().pixels.as_deref(),
        Some("render:rgb_array")
    );
    let obs = env.reset_all(&[2]).unwrap().remove(0);
    assert_eq!(obs.state.len(), 3);
    assert_eq!(obs.pixels.len(), FRAME_BYTES);
    let step = env.step_all(&[1.0]).unwrap().remove(0);
    let distinct: std::collections::BTreeSet<u8> = step.obs.pixels.iter().copied().collect();
    // Pygame draws a 500x500 frame; averaged down, its edges give intermediate shades.
    assert!(distinct.len() > 10, "{distinct:?}");
}

#[test]
fn nested_dict_observations_flatten_in_the_space_order_and_give_the_picture() {
    let both = EnvOptions {
        obs_mode: ObsMode::Both,
        action_repeat: 1,
    };
    let mut env = bridge(
        "gym:test_envs:DictObservation-v0",
        both,
        1,
        &options(json!({})),
    );
    assert_eq!(
        env.spec().state_fields,
        ["state.vel", "state.pos[0]", "state.pos[1]"]
    );
    let layout = &env.worker_spec().state_layout;
    assert_eq!(layout[0].dtype, "float64");
    assert_eq!(layout[1].shape, [2]);
    assert_eq!(
        env.worker_spec().pixels.as_deref(),
        Some("observation:image")
    );
    env.reset_all(&[0]).unwrap();
    let step = env.step_all(&[0.0]).unwrap().remove(0);
    assert_eq!(step.obs.state, [2.5, -2.0, 3.0]);
    // 32x32 -> 64x64: every source pixel becomes a 2x2 block.
    for x in 0..64 {
        let at = (10 * 64 + x) * 3;
        assert_eq!(
            step.obs.pixels[at..at + 3],
            [(x / 2 * 8) as u8, 1, 0],
            "x {x}"
        );
    }
}

#[test]
fn a_bad_batch_is_refused_before_any_env_moves() {
    let mut env = bridge("gym:Pendulum-v1", state(1), 2, &options(json!({})));
    let error = env.step_all(&[0.0, 0.0]).unwrap_err().to_string();
    assert!(error.contains("env 0 needs a reset"), "{error}");
    env.reset_all(&[1, 2]).unwrap();
    for (actions, expect) in [
        (vec![0.0], "1 action values for 2 envs x 1 components"),
        (vec![0.0, f32::NAN], "env 1 action component 0 is NaN"),
    ] {
        let error = env.step_all(&actions).unwrap_err().to_string();
        assert!(error.contains(expect), "{error}");
    }
    let error = env.reset_all(&[1]).unwrap_err().to_string();
    assert!(error.contains("1 seeds for 2 envs"), "{error}");
    let error = env.reset_one(2, 0).unwrap_err().to_string();
    assert!(error.contains("env index 2 out of range 0..2"), "{error}");
    // None of that broke the bridge.
    assert_eq!(env.step_all(&[0.1, 0.2]).unwrap().len(), 2);
}

#[test]
fn dropping_the_bridge_ends_and_reaps_every_worker() {
    let env = bridge("gym:Pendulum-v1", state(1), 3, &options(json!({})));
    let pids = env.worker_pids();
    assert_running(&pids);
    let started = std::time::Instant::now();
    drop(env);
    assert_reaped(&pids);
    assert!(
        started.elapsed().as_secs_f64() < 2.0,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_env_printing_to_stdout_does_not_break_the_protocol() {
    let opts = options(json!({ "plan": { "0": "print" }, "at": 1 }));
    let mut env: BridgeVecEnv = bridge("gym:test_envs:Misbehave-v0", state(1), 1, &opts);
    env.reset_all(&[0]).unwrap();
    for t in 1..=3 {
        let step = env.step_all(&[0.25]).unwrap().remove(0);
        assert_eq!(step.obs.state, [t as f32, 0.5, -0.5]);
        assert_eq!(step.reward, 0.25);
    }
}
