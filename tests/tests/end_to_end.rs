//! The whole chain on small randomly initialised agents, state and pixels: the trainer writes
//! a checkpoint and its reference forward pass, the exporter turns it into a bundle and
//! verifies it against that reference, and the runtime, driving the same task with the same
//! reset seeds, takes the trainer's actions and earns the trainer's evaluation returns.

use std::path::Path;

use dreamer_config::Config;
use dreamer_runtime::{Agent as RuntimeAgent, AgentOptions, Observation};
use dreamer_tasks::EnvOptions;
use dreamer_trainer::agent::Agent as TrainerAgent;
use dreamer_trainer::checkpoint::{self, RunState};
use dreamer_trainer::env_loop::{dims_of, evaluate};
use dreamer_trainer::reference::write_reference;
use dreamer_trainer::seeds::{STREAM_EVAL, stream_seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use tch::Device;

fn small_config(preset: &str, overrides: &[&str]) -> Config {
    let mut all = vec![
        "run.task=pendulum",
        "model.deter=32",
        "model.stoch=8",
        "model.hidden=32",
        "model.units=32",
    ];
    all.extend_from_slice(overrides);
    let all: Vec<String> = all.into_iter().map(String::from).collect();
    Config::preset(preset)
        .unwrap()
        .with_overrides(&all)
        .unwrap()
}

/// Trainer checkpoint (random init) with its reference file, exported to `dir/bundle`.
fn trained_and_exported(config: &Config, dir: &Path) -> (TrainerAgent, std::path::PathBuf) {
    let options = EnvOptions {
        obs_mode: config.run.obs_mode,
        action_repeat: config.run.action_repeat,
    };
    let env = dreamer_tasks::make(&config.run.task, options).unwrap();
    let dims = dims_of(config, env.spec());
    tch::manual_seed(11);
    let agent = TrainerAgent::new(config, dims, Device::Cpu);
    let ckpt = dir.join("checkpoint");
    checkpoint::save(&ckpt, &agent, &RunState::new(&config.run.task, dims)).unwrap();
    write_reference(&ckpt, 120, 4).unwrap();

    let bundle = dir.join("bundle");
    let report = dreamer_export::export(&ckpt, &bundle, &Default::default())
        .unwrap_or_else(|e| panic!("export failed: {e}"));
    drop(report);
    (agent, bundle)
}

/// The runtime replays the reference trajectory's observations and takes the trainer's
/// actions at every step.
fn assert_same_actions_on_reference(bundle: &Path, ckpt: &Path) {
    let bytes = std::fs::read(ckpt.join("reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = reference.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let actions = f32s("traj.action"); // [T, A]
    let states = reference
        .names()
        .contains(&"traj.obs.state")
        .then(|| f32s("traj.obs.state"));
    let pixels = reference
        .names()
        .contains(&"traj.obs.pixels")
        .then(|| reference.tensor("traj.obs.pixels").unwrap().data().to_vec());
    let steps = reference.tensor("traj.action").unwrap().shape()[0];
    let a = actions.len() / steps;

    let mut agent = RuntimeAgent::load(bundle, AgentOptions::default()).unwrap();
    agent.reset();
    for t in 0..steps {
        let state = states.as_ref().map(|s| {
            let o = s.len() / steps;
            &s[t * o..(t + 1) * o]
        });
        let pixels = pixels.as_ref().map(|p| {
            let n = p.len() / steps;
            &p[t * n..(t + 1) * n]
        });
        let action = agent.step(&Observation { state, pixels }).unwrap();
        for (i, (&got, &want)) in action.iter().zip(&actions[t * a..(t + 1) * a]).enumerate() {
            assert!(
                (got - want).abs() < 1e-4,
                "step {t}, action[{i}]: runtime {got}, trainer {want}"
            );
        }
    }
}

/// The runtime's closed-loop return on the trainer's evaluation seeds.
fn runtime_returns(bundle: &Path, config: &Config, seeds: &[u64]) -> Vec<f64> {
    let options = EnvOptions {
        obs_mode: config.run.obs_mode,
        action_repeat: config.run.action_repeat,
    };
    let mut env = dreamer_tasks::make(&config.run.task, options).unwrap();
    let mut agent = RuntimeAgent::load(bundle, AgentOptions::default()).unwrap();
    seeds
        .iter()
        .map(|&seed| {
            agent.reset();
            let mut obs = env.reset(seed);
            let mut ret = 0.0;
            loop {
                let view = Observation {
                    state: (!obs.state.is_empty()).then_some(&obs.state[..]),
                    pixels: (!obs.pixels.is_empty()).then_some(&obs.pixels[..]),
                };
                let action = agent.step(&view).unwrap().to_vec();
                let step = env.step(&action).unwrap();
                ret += step.reward;
                if step.terminated || step.truncated {
                    return ret;
                }
                obs = step.obs;
            }
        })
        .collect()
}

fn check_chain(config: Config) {
    let dir = tempfile::tempdir().unwrap();
    let (agent, bundle) = trained_and_exported(&config, dir.path());

    let manifest = dreamer_bundle::open(&bundle).unwrap();
    let verification = manifest.verification.expect("export verified the bundle");
    assert!(verification.trajectory_steps >= 120);
    assert!(verification.trajectory_step_max_abs_err.unwrap() < 1e-5);

    assert_same_actions_on_reference(&bundle, &dir.path().join("checkpoint"));

    let episodes = 2;
    let trainer = evaluate(&agent, episodes, 0, false).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(config.run.seed, STREAM_EVAL, 0));
    let seeds: Vec<u64> = (0..episodes).map(|_| rng.random()).collect();
    let runtime = runtime_returns(&bundle, &config, &seeds);
    for (i, (r, t)) in runtime.iter().zip(&trainer.returns).enumerate() {
        assert!(
            (r - t).abs() <= 1e-3 * t.abs().max(1.0),
            "episode {i}: runtime return {r}, trainer eval return {t}"
        );
    }
}

#[test]
fn state_agent_trainer_export_runtime_agree() {
    check_chain(small_config("cpu-state", &[]));
}

/// The DreamerV3 options change only what the bundle does not hold (heads, losses) or what
/// it reproduces (symlog of the state): the chain agrees as with DreamerV1's.
#[test]
fn state_agent_with_the_dreamerv3_options_trains_exports_and_agrees() {
    check_chain(small_config(
        "cpu-state",
        &[
            "model.symlog_obs=true",
            "model.two_hot_bins=255",
            "train.kl_balance=0.8",
            "train.return_norm_rate=0.01",
            "train.slow_value_rate=0.02",
        ],
    ));
}

/// Discrete latents (DreamerV3's categoricals): new graph pieces (Gumbel-max draws from the
/// mixed class probabilities, the categorical KL) that must agree with the trainer as the
/// Gaussian ones do, and a zero-noise runtime step that draws the most likely classes.
#[test]
fn state_agent_with_discrete_latents_trains_exports_and_agrees() {
    check_chain(small_config(
        "cpu-state",
        &["model.classes=4", "train.kl_balance=0.8"],
    ));
}

/// The other export options on discrete latents: the decomposed graph form meets the same
/// bounds, float16 weights the return check, batch 3 the per-row bounds; the manifest
/// records the latent's kind.
#[test]
fn discrete_latents_export_in_every_form_precision_and_batch() {
    use dreamer_bundle::GraphForm;
    use dreamer_export::{ExportOptions, Precision};
    let config = small_config("cpu-state", &["model.classes=4"]);
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = trained_and_exported(&config, dir.path());
    let manifest = dreamer_bundle::open(&bundle).unwrap();
    assert_eq!((manifest.latent.stoch, manifest.latent.classes), (32, 4));
    assert_eq!(manifest.training.config["model.classes"], "4");
    let ckpt = dir.path().join("checkpoint");
    for (name, options) in [
        (
            "decomposed",
            ExportOptions {
                graph_form: GraphForm::Decomposed,
                ..Default::default()
            },
        ),
        (
            "float16",
            ExportOptions {
                precision: Precision::Float16,
                ..Default::default()
            },
        ),
        (
            "batch3",
            ExportOptions {
                batch: 3,
                ..Default::default()
            },
        ),
    ] {
        let out = dir.path().join(name);
        dreamer_export::export(&ckpt, &out, &options)
            .unwrap_or_else(|e| panic!("{name}: export failed: {e}"));
        let m = dreamer_bundle::open(&out).unwrap();
        let v = m.verification.expect("verified");
        if name != "float16" {
            assert!(v.trajectory_step_max_abs_err.unwrap() < 1e-5, "{name}");
            for role in dreamer_bundle::GRAPH_ROLES {
                assert!(v.random_max_abs_err[role] < 1e-5, "{name} {role}");
            }
        }
    }
}

#[test]
fn pixel_agent_with_discrete_latents_trainer_export_runtime_agree() {
    check_chain(small_config(
        "cpu-pixels",
        &[
            "run.obs_mode=pixels",
            "run.action_repeat=2",
            "model.cnn_depth=4",
            "model.classes=4",
        ],
    ));
}

#[test]
fn pixel_agent_trainer_export_runtime_agree() {
    check_chain(small_config(
        "cpu-pixels",
        &[
            "run.obs_mode=pixels",
            "run.action_repeat=2",
            "model.cnn_depth=4",
        ],
    ));
}
