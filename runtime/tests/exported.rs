//! The agent on real bundles from `dreamer-export`, exported from random checkpoints whose
//! `reference.safetensors` (an independent float64 implementation of the layer equations, as
//! the trainer writes it) records a closed-loop trajectory: the agent must take the same
//! actions given the same observations.

#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::path::Path;

use dreamer_export::{ExportOptions, export};
use dreamer_runtime::{Agent, AgentOptions, GraphMode, Noise, Observation, SafeAction};
use export_fixtures::Spec;
use safetensors::SafeTensors;

struct Trajectory {
    state: Vec<f32>,
    pixels: Vec<u8>,
    action: Vec<f32>,
    h: Vec<f32>,
    surprise: Vec<f32>,
    steps: usize,
}

fn read_trajectory(path: &Path) -> Trajectory {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        file.tensor(name).map_or_else(
            |_| Vec::new(),
            |t| {
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            },
        )
    };
    let pixels = file
        .tensor("traj.obs.pixels")
        .map_or_else(|_| Vec::new(), |t| t.data().to_vec());
    let surprise = f32s("traj.surprise");
    Trajectory {
        state: f32s("traj.obs.state"),
        pixels,
        action: f32s("traj.action"),
        h: f32s("traj.h"),
        steps: surprise.len(),
        surprise,
    }
}

fn replay(spec: &Spec, mode: GraphMode, steps: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = export_fixtures::write_checkpoint(&tmp.path().join("ckpt"), spec, 4);
    let out = tmp.path().join("bundle");
    export(&ckpt, &out, &ExportOptions::default()).unwrap();
    let traj = read_trajectory(&ckpt.join("reference.safetensors"));
    let mut agent = Agent::load(
        &out,
        AgentOptions {
            mode,
            ..AgentOptions::default()
        },
    )
    .unwrap();
    let manifest = agent.manifest().clone();
    let (o, a, d) = (spec.o, spec.a, spec.d);
    let uses_state = manifest.observation.state.is_some();
    let uses_pixels = manifest.observation.pixels.is_some();
    for t in 0..steps.min(traj.steps) {
        let obs = Observation {
            state: uses_state.then(|| &traj.state[t * o..(t + 1) * o]),
            pixels: uses_pixels.then(|| &traj.pixels[t * 12288..(t + 1) * 12288]),
        };
        let action = agent.step(&obs).unwrap();
        for (i, (&got, &want)) in action
            .iter()
            .zip(&traj.action[t * a..(t + 1) * a])
            .enumerate()
        {
            assert!(
                (got - want).abs() < 1e-4,
                "{mode:?} step {t} action[{i}]: {got} vs {want}"
            );
        }
        let want = traj.surprise[t];
        assert!(
            (agent.surprise() - want).abs() < 1e-3 * want.abs().max(1.0),
            "{mode:?} step {t} surprise {} vs {want}",
            agent.surprise()
        );
        let h_want = &traj.h[t * d..(t + 1) * d];
        for (got, want) in agent.latent().h.iter().zip(h_want) {
            assert!(
                (got - want).abs() < 1e-4,
                "{mode:?} step {t} h: {got} vs {want}"
            );
        }
    }
}

#[test]
fn exported_state_policy_takes_the_trainers_actions() {
    replay(&Spec::state(), GraphMode::Fused, 200);
    replay(&Spec::state(), GraphMode::Separate, 200);
    replay(&Spec::state(), GraphMode::Split, 200);
}

#[test]
fn exported_pixel_policy_takes_the_trainers_actions() {
    replay(&Spec::pixels(), GraphMode::Fused, 60);
    replay(&Spec::pixels(), GraphMode::Separate, 60);
    replay(&Spec::pixels(), GraphMode::Split, 60);
}

/// Split steps, prepared by the caller after each action or left to `step`, take the fused
/// step's actions with sampled noise, through a refused observation whose safe action
/// (zero) changes the previous action the next transition must use.
fn split_matches_fused(spec: &Spec, steps: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = export_fixtures::write_checkpoint(&tmp.path().join("ckpt"), spec, 6);
    let out = tmp.path().join("bundle");
    let options = ExportOptions {
        verify: false,
        ..ExportOptions::default()
    };
    export(&ckpt, &out, &options).unwrap();
    let traj = read_trajectory(&ckpt.join("reference.safetensors"));
    let load = |mode| {
        let options = AgentOptions {
            mode,
            noise: Noise::Sampled { seed: 9 },
            safe_action: SafeAction::Zero,
            ..AgentOptions::default()
        };
        Agent::load(&out, options).unwrap()
    };
    let mut fused = load(GraphMode::Fused);
    let mut prepared = load(GraphMode::Split);
    let mut auto = load(GraphMode::Split);
    let (o, a) = (spec.o, spec.a);
    let refused_at = steps / 2;
    let nan_state = vec![f32::NAN; o];
    let short_frame = [0u8; 100];
    for t in 0..steps.min(traj.steps) {
        // A refused observation: non-finite state, or a frame of the wrong size.
        let refused = t == refused_at;
        let obs = Observation {
            state: spec.uses_state().then(|| {
                if refused {
                    &nan_state[..]
                } else {
                    &traj.state[t * o..(t + 1) * o]
                }
            }),
            pixels: spec.uses_pixels().then(|| {
                if refused {
                    &short_frame[..]
                } else {
                    &traj.pixels[t * 12288..(t + 1) * 12288]
                }
            }),
        };
        let outcomes = [fused.step(&obs).is_ok(), prepared.step(&obs).is_ok()];
        let auto_ok = auto.step(&obs).is_ok();
        prepared.prepare().unwrap();
        assert_eq!(outcomes, [!refused; 2], "step {t}");
        assert_eq!(auto_ok, !refused, "step {t}");
        for (agent, name) in [(&prepared, "prepared"), (&auto, "auto-prepared")] {
            let pairs = [
                ("action", agent.action(), fused.action()),
                ("h", agent.latent().h, fused.latent().h),
                ("s", agent.latent().s, fused.latent().s),
            ];
            for (what, got, want) in pairs {
                assert_eq!(got.len(), want.len());
                for (i, (x, y)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5,
                        "{name} split step {t} {what}[{i}]: {x} vs fused {y}"
                    );
                }
            }
            let (x, y) = (agent.surprise(), fused.surprise());
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                "{name} split step {t} surprise {x} vs fused {y}"
            );
        }
        assert_eq!(auto.action().len(), a);
    }
    assert_eq!(prepared.counters(), fused.counters());
    // A new episode starts from zeros in every mode.
    for agent in [&mut fused, &mut prepared, &mut auto] {
        agent.reset();
        assert!(agent.latent().h.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn split_state_policy_takes_the_fused_actions() {
    split_matches_fused(&Spec::state(), 200);
}

#[test]
fn split_pixel_policy_takes_the_fused_actions() {
    split_matches_fused(&Spec::pixels(), 40);
}

/// Writes bundles at the benchmark sizes (random weights) into `$DREAMER_BENCH_DIR`:
/// `state-cpu` (deter 200, stoch 30, hidden 200, units 200) and `pixels-paper` (units 400,
/// cnn_depth 32). Run with `--ignored`; then `dreamer-rt bench <dir>/state-cpu`.
#[test]
#[ignore = "writes benchmark bundles; needs DREAMER_BENCH_DIR"]
fn write_benchmark_bundles() {
    let Some(root) = std::env::var_os("DREAMER_BENCH_DIR") else {
        panic!("set DREAMER_BENCH_DIR to the folder to write the bundles into");
    };
    let root = Path::new(&root);
    let base = Spec {
        task: "cartpole-swingup",
        o: 5,
        a: 1,
        d: 200,
        s: 30,
        h: 200,
        ..Spec::state()
    };
    for (name, spec) in [
        (
            "state-cpu",
            Spec {
                u: 200,
                ..base.clone()
            },
        ),
        (
            "pixels-paper",
            Spec {
                obs: "pixels",
                u: 400,
                c: 32,
                ..base.clone()
            },
        ),
    ] {
        let ckpt = root.join(format!("{name}-checkpoint"));
        std::fs::create_dir_all(&ckpt).unwrap();
        let weights = export_fixtures::random_weights(&spec, 1);
        export_fixtures::weights_file(&weights).write(&ckpt.join("model.safetensors"));
        std::fs::write(
            ckpt.join("config.toml"),
            export_fixtures::config_toml(&spec),
        )
        .unwrap();
        std::fs::write(ckpt.join("state.json"), export_fixtures::STATE_JSON).unwrap();
        let options = ExportOptions {
            verify: false,
            ..ExportOptions::default()
        };
        export(&ckpt, &root.join(name), &options).unwrap();
    }
}
