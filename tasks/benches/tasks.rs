//! Environment steps per second (state and pixel observations), frame render time, and
//! vectorised stepping.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dreamer_tasks::{EnvOptions, FRAME_BYTES, ObsMode, TASK_NAMES, VecEnv, make, make_plant};

/// A representative mid-swing pose per task (physical state).
fn pose(task: &str) -> Vec<f64> {
    match task {
        "pendulum" => vec![0.9, 1.0],
        "acrobot-swingup" => vec![1.1, -0.8, 0.5, 0.2],
        _ => vec![-0.6, 2.5, 0.3, 0.1],
    }
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    for &task in TASK_NAMES {
        let mut plant = make_plant(task).unwrap();
        plant.set_state(&pose(task)).unwrap();
        let mut frame = vec![0u8; FRAME_BYTES];
        group.bench_function(task, |b| {
            b.iter(|| {
                plant.render(black_box(&mut frame));
                black_box(frame[FRAME_BYTES / 2])
            })
        });
    }
    group.finish();
}

fn step(c: &mut Criterion, obs_mode: ObsMode) {
    let mut group = c.benchmark_group(format!("step_{obs_mode}"));
    group.throughput(Throughput::Elements(1));
    for &task in TASK_NAMES {
        let mut env = make(
            task,
            EnvOptions {
                obs_mode,
                action_repeat: 1,
            },
        )
        .unwrap();
        env.reset(0);
        let mut seed = 0;
        let mut action = 0.3f32;
        group.bench_function(task, |b| {
            b.iter(|| {
                action = -action;
                let step = env.step(black_box(&[action])).unwrap();
                if step.truncated {
                    seed += 1;
                    env.reset(seed);
                }
                black_box(step.reward)
            })
        });
    }
    group.finish();
}

fn step_state(c: &mut Criterion) {
    step(c, ObsMode::State);
}

fn step_pixels(c: &mut Criterion) {
    step(c, ObsMode::Pixels);
}

fn vec_env(c: &mut Criterion) {
    const ENVS: usize = 16;
    let mut group = c.benchmark_group("vec_env_step_all");
    for (obs_mode, threads) in [
        (ObsMode::State, 1),
        (ObsMode::Pixels, 1),
        (ObsMode::Pixels, 2),
    ] {
        let options = EnvOptions {
            obs_mode,
            action_repeat: 2,
        };
        let mut batch = VecEnv::new("cartpole-swingup", options, ENVS, threads).unwrap();
        let seeds: Vec<u64> = (0..ENVS as u64).collect();
        batch.reset_all(&seeds).unwrap();
        let actions = vec![0.5f32; ENVS];
        // Elements are physics steps: envs x action repeat.
        group.throughput(Throughput::Elements((ENVS * 2) as u64));
        group.bench_function(
            format!("cartpole-swingup_{ENVS}x_{obs_mode}_{threads}threads"),
            |b| {
                b.iter(|| {
                    let steps = batch.step_all(black_box(&actions)).unwrap();
                    if steps[0].truncated {
                        batch.reset_all(&seeds).unwrap();
                    }
                    black_box(steps.len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, render, step_state, step_pixels, vec_env);
criterion_main!(benches);
