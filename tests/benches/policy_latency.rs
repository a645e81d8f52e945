//! Per-step policy latency of the same weights through the trainer (tch eager, the policy
//! `dreamer eval` runs) and through the runtime (ONNX Runtime, the fused `policy_step` graph,
//! and the split step: `policy_observe` from observation to action, its `prepare` after the
//! action untimed), one thread each, in one process.
//!
//!   cargo bench -p dreamer-tests --bench policy_latency [-- STEPS]

use std::time::{Duration, Instant};

use dreamer_config::Config;
use dreamer_runtime::{Agent as RuntimeAgent, AgentOptions, GraphMode, Observation};
use dreamer_tasks::EnvOptions;
use dreamer_trainer::agent::Agent as TrainerAgent;
use dreamer_trainer::checkpoint::{self, RunState};
use dreamer_trainer::env_loop::{dims_of, obs_tensors};
use dreamer_trainer::reference::write_reference;
use tch::{Device, Kind, Tensor};

struct Percentiles {
    p50: f64,
    p99: f64,
}

/// Microsecond percentiles of `steps` calls of `f`, after a warm-up. `f` returns the time to
/// count, so a call can do untimed work after its timed part.
fn measure(steps: usize, mut f: impl FnMut() -> Duration) -> Percentiles {
    for _ in 0..steps / 10 + 10 {
        f();
    }
    let mut samples: Vec<f64> = (0..steps).map(|_| f().as_secs_f64() * 1e6).collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn compare(name: &str, preset: &str, overrides: &[&str], steps: usize) {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = Config::preset(preset)
        .unwrap()
        .with_overrides(&overrides)
        .unwrap();
    let obs_mode = config.run.obs_mode;
    let options = EnvOptions {
        obs_mode,
        action_repeat: config.run.action_repeat,
    };
    let mut env = dreamer_tasks::make(&config.run.task, options).unwrap();
    let dims = dims_of(&config, env.spec());
    let obs = env.reset(1);

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint");
    let bundle = dir.path().join("bundle");
    tch::manual_seed(3);
    let trainer = TrainerAgent::new(&config, dims, Device::Cpu);
    checkpoint::save(&ckpt, &trainer, &RunState::new(&config.run.task, dims)).unwrap();
    write_reference(&ckpt, 20, 2).unwrap();
    dreamer_export::export(&ckpt, &bundle, &Default::default()).unwrap();

    // tch eager: the trainer's deterministic policy step, batch 1.
    let input = obs_tensors(std::slice::from_ref(&obs), dims, Device::Cpu);
    let mut latent = trainer.rssm.initial(1, Device::Cpu);
    let mut prev = Tensor::zeros([1, dims.action], (Kind::Float, Device::Cpu));
    let eager = measure(steps, || {
        timed(|| {
            let (next, action) = trainer.policy_step(&latent, &prev, &input, None);
            latent = next;
            prev = action;
        })
    });

    let mut runtime = RuntimeAgent::load(&bundle, AgentOptions::default()).unwrap();
    let view = Observation {
        state: (!obs.state.is_empty()).then_some(&obs.state[..]),
        pixels: (!obs.pixels.is_empty()).then_some(&obs.pixels[..]),
    };
    let onnx = measure(steps, || {
        timed(|| {
            runtime.step(&view).unwrap();
        })
    });
    let split_options = AgentOptions {
        mode: GraphMode::Split,
        ..AgentOptions::default()
    };
    let mut split = RuntimeAgent::load(&bundle, split_options).unwrap();
    let split_step = measure(steps, || {
        let step = timed(|| {
            split.step(&view).unwrap();
        });
        split.prepare().unwrap();
        step
    });

    println!(
        "{name:<28} tch eager p50 {:>8.1} us p99 {:>8.1} us | runtime p50 {:>8.1} us p99 {:>8.1} us | runtime {:.2}x faster at p50, {:.2}x at p99 | split step p50 {:>8.1} us p99 {:>8.1} us",
        eager.p50,
        eager.p99,
        onnx.p50,
        onnx.p99,
        eager.p50 / onnx.p50,
        eager.p99 / onnx.p99,
        split_step.p50,
        split_step.p99,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number sets the steps per measurement.
    let steps = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    tch::set_num_threads(1);
    let runtime = dreamer_ort::load(None).expect("load ONNX Runtime");
    println!("one thread each; ONNX Runtime {}", runtime.version);
    compare("state policy (cpu-state)", "cpu-state", &[], steps);
    compare("pixel policy (paper)", "paper", &[], steps / 4);
}
