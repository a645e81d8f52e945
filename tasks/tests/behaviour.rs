//! Environment behaviour: determinism, wrappers, bad input, vectorised stepping, physics sanity.

use dreamer_tasks::acrobot::AcrobotPlant;
use dreamer_tasks::cartpole::{CartpolePlant, SLIDER_LIMIT};
use dreamer_tasks::policy::{Policy, PolicyKind};
use dreamer_tasks::{
    EnvOptions, FRAME_BYTES, ObsMode, Observation, Plant, TASK_NAMES, TaskError, TaskRng, VecEnv,
    make,
};

fn options(obs_mode: ObsMode, action_repeat: u32) -> EnvOptions {
    EnvOptions {
        obs_mode,
        action_repeat,
    }
}

/// Observations and rewards of `decisions` steps under a seeded random policy.
fn rollout(task: &str, seed: u64, decisions: usize, mode: ObsMode) -> (Vec<Observation>, Vec<f64>) {
    let mut env = make(task, options(mode, 2)).unwrap();
    let mut policy = Policy::new(PolicyKind::Random, env.spec(), seed ^ 0xABCD);
    let mut observations = vec![env.reset(seed)];
    let mut rewards = Vec::new();
    for _ in 0..decisions {
        let step = env.step(&policy.act(&env.physical_state())).unwrap();
        observations.push(step.obs);
        rewards.push(step.reward);
    }
    (observations, rewards)
}

#[test]
fn same_seed_gives_the_same_episode_bit_for_bit() {
    for &task in TASK_NAMES {
        let (obs_a, rewards_a) = rollout(task, 7, 40, ObsMode::Both);
        let (obs_b, rewards_b) = rollout(task, 7, 40, ObsMode::Both);
        assert_eq!(obs_a, obs_b, "{task}");
        let bits = |r: &[f64]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&rewards_a), bits(&rewards_b), "{task}");
    }
}

#[test]
fn different_seeds_give_different_episodes() {
    for &task in TASK_NAMES {
        let (obs_a, _) = rollout(task, 1, 5, ObsMode::State);
        let (obs_b, _) = rollout(task, 2, 5, ObsMode::State);
        assert_ne!(obs_a[0].state, obs_b[0].state, "{task}: initial states");
        assert_ne!(obs_a[5].state, obs_b[5].state, "{task}: later states");
    }
}

#[test]
fn observation_modes_fill_only_what_was_asked() {
    for &task in TASK_NAMES {
        let state = make(task, options(ObsMode::State, 1)).unwrap().reset(0);
        let pixels = make(task, options(ObsMode::Pixels, 1)).unwrap().reset(0);
        let both = make(task, options(ObsMode::Both, 1)).unwrap().reset(0);
        let spec = make(task, EnvOptions::default()).unwrap().spec().clone();
        assert_eq!(state.state.len(), spec.state_size);
        assert_eq!(spec.state_fields.len(), spec.state_size);
        assert!(state.pixels.is_empty());
        assert!(pixels.state.is_empty());
        assert_eq!(pixels.pixels.len(), FRAME_BYTES);
        assert_eq!(both.state, state.state);
        assert_eq!(both.pixels, pixels.pixels);
    }
    assert_eq!("pixels".parse::<ObsMode>(), Ok(ObsMode::Pixels));
    assert!(matches!(
        "rgb".parse::<ObsMode>(),
        Err(dreamer_config::UnknownObsMode(_))
    ));
}

#[test]
fn action_repeat_sums_rewards_and_counts_physics_steps() {
    let mut single = make("cartpole-swingup", options(ObsMode::State, 1)).unwrap();
    let mut repeated = make("cartpole-swingup", options(ObsMode::State, 4)).unwrap();
    single.reset(3);
    repeated.reset(3);
    for i in 0..10 {
        let action = [((i as f32) * 0.37).sin()];
        let summed: f64 = (0..4).map(|_| single.step(&action).unwrap().reward).sum();
        let step = repeated.step(&action).unwrap();
        assert_eq!(step.reward.to_bits(), summed.to_bits());
        assert_eq!(repeated.physical_state(), single.physical_state());
    }
}

#[test]
fn time_limit_counts_physics_steps() {
    // 200 physics steps with repeat 3: 66 full decisions and a final one of 2 steps.
    let mut env = make("pendulum", options(ObsMode::State, 3)).unwrap();
    let spec = env.spec().clone();
    assert_eq!(spec.max_decisions, 67);
    assert!((spec.control_period_s - 0.15).abs() < 1e-12);
    env.reset(0);
    let mut decisions = 0;
    loop {
        let step = env.step(&[0.1]).unwrap();
        decisions += 1;
        assert!(!step.terminated);
        if step.truncated {
            break;
        }
    }
    assert_eq!(decisions, 67);
    assert!(matches!(
        env.step(&[0.0]),
        Err(TaskError::EpisodeOver { .. })
    ));
    assert_eq!(
        make("cartpole-balance", options(ObsMode::State, 2))
            .unwrap()
            .spec()
            .max_decisions,
        500
    );
}

#[test]
fn bad_actions_are_errors_and_leave_the_state_alone() {
    for &task in TASK_NAMES {
        let mut env = make(task, EnvOptions::default()).unwrap();
        assert!(
            matches!(env.step(&[0.0]), Err(TaskError::NotReset { .. })),
            "{task}"
        );
        env.reset(11);
        let before = env.physical_state();
        for bad in [
            vec![f32::NAN],
            vec![f32::INFINITY],
            vec![f32::NEG_INFINITY],
            vec![],
            vec![0.0, 0.0],
        ] {
            let error = env.step(&bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    TaskError::NonFiniteAction { .. } | TaskError::ActionLength { .. }
                ),
                "{task}: {error}"
            );
            assert_eq!(
                env.physical_state(),
                before,
                "{task}: state changed by {bad:?}"
            );
        }
        assert!(
            env.set_physical_state(&[f64::NAN; 4][..before.len()])
                .is_err()
        );
        assert!(env.set_physical_state(&before[1..]).is_err());
        assert_eq!(env.physical_state(), before);
    }
}

#[test]
fn out_of_range_actions_are_clipped_to_the_unit_box() {
    for &task in TASK_NAMES {
        let mut clipped = make(task, EnvOptions::default()).unwrap();
        let mut limit = make(task, EnvOptions::default()).unwrap();
        clipped.reset(5);
        limit.reset(5);
        let a = clipped.step(&[7.5]).unwrap();
        let b = limit.step(&[1.0]).unwrap();
        assert_eq!(a, b, "{task}");
    }
}

#[test]
fn unknown_task_lists_the_known_ones() {
    let message = make("cartpole-swing", EnvOptions::default())
        .err()
        .unwrap()
        .to_string();
    for &task in TASK_NAMES {
        assert!(message.contains(task), "{message}");
    }
    assert!(make("pendulum", options(ObsMode::State, 0)).is_err());
}

#[test]
fn vec_env_matches_single_envs_with_per_copy_seeds() {
    let seeds = [10, 11, 12, 13, 14];
    let mut batch =
        VecEnv::new("acrobot-swingup", options(ObsMode::Both, 2), seeds.len(), 2).unwrap();
    let mut singles: Vec<_> = seeds
        .iter()
        .map(|_| make("acrobot-swingup", options(ObsMode::Both, 2)).unwrap())
        .collect();
    assert!(batch.step_all(&[0.0; 5]).is_err(), "stepping before reset");
    let batch_obs = batch.reset_all(&seeds).unwrap();
    for ((env, &seed), obs) in singles.iter_mut().zip(&seeds).zip(&batch_obs) {
        assert_eq!(&env.reset(seed), obs);
    }
    let mut rng = TaskRng::new(99);
    for _ in 0..20 {
        let actions: Vec<f32> = (0..seeds.len())
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        let steps = batch.step_all(&actions).unwrap();
        for ((env, action), step) in singles.iter_mut().zip(&actions).zip(&steps) {
            assert_eq!(&env.step(&[*action]).unwrap(), step);
        }
    }
    // A bad batch moves no env.
    let mut actions = vec![0.5f32; seeds.len()];
    actions[3] = f32::NAN;
    assert!(batch.step_all(&actions).is_err());
    assert!(batch.step_all(&[0.0; 4]).is_err());
    let steps = batch.step_all(&[0.25; 5]).unwrap();
    for (env, step) in singles.iter_mut().zip(&steps) {
        assert_eq!(&env.step(&[0.25]).unwrap(), step);
    }
    assert_eq!(batch.reset_one(2, 12).unwrap(), singles[2].reset(12));
    assert!(batch.reset_one(9, 0).is_err());
    assert!(batch.reset_all(&[1, 2]).is_err());
}

#[test]
fn vec_env_needs_a_reset_after_an_episode_ends() {
    let mut batch = VecEnv::new("pendulum", options(ObsMode::State, 50), 3, 3).unwrap();
    batch.reset_all(&[1, 2, 3]).unwrap();
    for _ in 0..3 {
        assert!(
            batch
                .step_all(&[0.0; 3])
                .unwrap()
                .iter()
                .all(|s| !s.truncated)
        );
    }
    assert!(
        batch
            .step_all(&[0.0; 3])
            .unwrap()
            .iter()
            .all(|s| s.truncated)
    );
    assert!(batch.needs_reset(0));
    assert!(batch.step_all(&[0.0; 3]).is_err());
    batch.reset_one(0, 4).unwrap();
    batch.reset_one(1, 5).unwrap();
    batch.reset_one(2, 6).unwrap();
    assert!(batch.step_all(&[0.0; 3]).is_ok());
}

#[test]
fn cartpole_slider_limit_holds_the_cart_near_the_rail_end() {
    let mut plant = CartpolePlant::default();
    let mut furthest: f64 = 0.0;
    for _ in 0..300 {
        plant.step_physics(&[1.0]).unwrap();
        furthest = furthest.max(plant.cart_position);
        assert!(plant.state().iter().all(|v| v.is_finite()));
    }
    // Full thrust into the stop at ~5.7 m/s: the soft limit (time constant 0.08 s) lets the
    // cart in by about v * tc / e, then holds it a few millimetres past the limit.
    assert!(
        furthest > SLIDER_LIMIT,
        "never reached the limit: {furthest}"
    );
    assert!(
        furthest < SLIDER_LIMIT + 0.25,
        "went through the limit: {furthest}"
    );
    assert!(
        (plant.cart_position - SLIDER_LIMIT).abs() < 0.01,
        "not held at the limit: {}",
        plant.cart_position
    );
    assert!(
        plant.cart_velocity.abs() < 0.05,
        "still moving: {}",
        plant.cart_velocity
    );
    // Released, the constraint pushes the cart back to the rail end and no further.
    for _ in 0..300 {
        plant.step_physics(&[0.0]).unwrap();
    }
    assert!(
        plant.cart_position <= SLIDER_LIMIT + 1e-3,
        "{}",
        plant.cart_position
    );
    assert!(
        plant.cart_position > 1.0,
        "bounced far back: {}",
        plant.cart_position
    );
}

#[test]
fn acrobot_energy_changes_only_by_damping_and_motor_work() {
    // Over one step, dE = integral of (torque * elbow_velocity - 0.05 * (q1'^2 + q2'^2)) dt;
    // the trapezoid rule over one step is good to ~1e-4 J here, while a wrong sign anywhere
    // in the equations of motion shows up as a spurious power of watts (1e-2 J per step).
    let mut plant = AcrobotPlant {
        shoulder_angle: 2.0,
        elbow_angle: -1.0,
        shoulder_velocity: 1.5,
        elbow_velocity: -2.0,
    };
    for step in 0..200 {
        let control = if step % 50 < 25 { 0.7 } else { -0.4 };
        let before = plant;
        plant.step_physics(&[control]).unwrap();
        let power = |p: &AcrobotPlant| {
            2.0 * control * p.elbow_velocity
                - 0.05
                    * (p.shoulder_velocity * p.shoulder_velocity
                        + p.elbow_velocity * p.elbow_velocity)
        };
        let expected = 0.01 * 0.5 * (power(&before) + power(&plant));
        let actual = plant.energy() - before.energy();
        assert!(
            (actual - expected).abs() < 1e-3,
            "step {step}: {actual} vs {expected}"
        );
    }
}

#[test]
fn scripted_controllers_solve_pendulum_and_cartpole() {
    let episode_return = |task: &str, repeat: u32| {
        let mut env = make(task, options(ObsMode::State, repeat)).unwrap();
        let mut policy = Policy::new(PolicyKind::Scripted, env.spec(), 0);
        env.reset(3);
        let mut total = 0.0;
        loop {
            let step = env.step(&policy.act(&env.physical_state())).unwrap();
            total += step.reward;
            if step.truncated {
                return total;
            }
        }
    };
    assert!(episode_return("pendulum", 1) > -300.0);
    assert!(episode_return("cartpole-swingup", 1) > 700.0);
    assert!(episode_return("cartpole-balance", 2) > 950.0);
}

#[test]
fn standard_normal_has_unit_moments() {
    let mut rng = TaskRng::new(123);
    let samples: Vec<f64> = (0..20_000).map(|_| rng.standard_normal()).collect();
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let variance =
        samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / samples.len() as f64;
    assert!(mean.abs() < 0.03, "{mean}");
    assert!((variance - 1.0).abs() < 0.04, "{variance}");
}

#[test]
fn random_policy_scores_match_the_published_scale() {
    // Pendulum-v1: a random policy scores about -1200 per episode.
    let mut total = 0.0;
    for seed in 0..10 {
        let mut env = make("pendulum", EnvOptions::default()).unwrap();
        let mut policy = Policy::new(PolicyKind::Random, env.spec(), seed + 100);
        env.reset(seed);
        loop {
            let step = env.step(&policy.act(&env.physical_state())).unwrap();
            total += step.reward;
            if step.truncated {
                break;
            }
        }
    }
    let mean = total / 10.0;
    assert!((-1450.0..-950.0).contains(&mean), "{mean}");
}

#[test]
fn absurd_states_never_turn_into_nan() {
    let mut env = make("cartpole-swingup", EnvOptions::default()).unwrap();
    env.reset(0);
    let absurd = [1e300, 1e300, -1e300, 1e300];
    env.set_physical_state(&absurd).unwrap();
    match env.step(&[1.0]) {
        Ok(step) => assert!(step.obs.state.iter().all(|v| !v.is_nan())),
        Err(error) => {
            assert!(matches!(error, TaskError::Diverged { .. }), "{error}");
            assert_eq!(env.physical_state(), absurd);
        }
    }
    assert!(env.physical_state().iter().all(|v| v.is_finite()));
}
