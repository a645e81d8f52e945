//! Int8 bundles: calibrated on the run's replay, written in QDQ form, verified against the
//! float64 reference (errors reported) and refused when their closed-loop return falls
//! short of the float32 bundle's.

mod common;
mod schema;

use std::path::{Path, PathBuf};

use common::Spec;
use dreamer_episode::{Episode, Layout};
use dreamer_export::{ExportError, ExportOptions, Precision, export};
use dreamer_tasks::{EnvOptions, ObsMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A run folder: `<run>/best` (the checkpoint) and `<run>/replay` with `episodes` episodes
/// of the task under random actions, as the trainer stores them. Returns the checkpoint.
fn run_with_replay(run: &Path, spec: &Spec, episodes: usize) -> PathBuf {
    let ckpt = common::write_checkpoint(&run.join("best"), spec, 7);
    let replay = run.join("replay");
    std::fs::create_dir_all(&replay).unwrap();
    let obs_mode: ObsMode = spec.obs.parse().unwrap();
    let mut env = dreamer_tasks::make(
        spec.task,
        EnvOptions {
            obs_mode,
            action_repeat: 2,
        },
    )
    .unwrap();
    let layout = Layout {
        action: spec.a,
        state: if spec.uses_state() { spec.o } else { 0 },
        pixels: spec.uses_pixels(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for index in 0..episodes {
        let mut episode = Episode::default();
        let mut obs = env.reset(index as u64);
        let mut action = vec![0.0; spec.a];
        for _ in 0..60 {
            episode.push(&obs.state, &obs.pixels, &action, 0.0, 1.0);
            action = (0..spec.a).map(|_| rng.random_range(-1.0..1.0)).collect();
            obs = env.step(&action).unwrap().obs;
        }
        let path = replay.join(dreamer_episode::file_name(index, episode.len()));
        dreamer_episode::save(&path, &episode, layout).unwrap();
    }
    ckpt
}

fn int8(tolerance: f64) -> ExportOptions {
    ExportOptions {
        precision: Precision::Int8,
        return_episodes: 2,
        max_return_drop: tolerance,
        calibration_steps: 150,
        ..ExportOptions::default()
    }
}

/// Initializer element types of one graph file, and its op types.
fn graph_parts(path: &Path) -> (Vec<i32>, Vec<String>) {
    use protobuf::Message;
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    (
        model
            .graph
            .initializer
            .iter()
            .map(|t| t.data_type)
            .collect(),
        model.graph.node.iter().map(|n| n.op_type.clone()).collect(),
    )
}

#[test]
fn int8_bundles_are_calibrated_on_the_replay_quantized_and_checked_by_their_return() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, spec, layers) in [
        (
            "state",
            Spec {
                u: 64,
                d: 48,
                h: 48,
                ..Spec::state()
            },
            vec![
                "actor.l0",
                "encoder.state.l1",
                "rssm.img_in",
                "rssm.obs_out",
            ],
        ),
        (
            "pixels",
            Spec {
                c: 4,
                ..Spec::pixels()
            },
            vec!["encoder.pixels.conv0", "encoder.pixels.conv3", "actor.l3"],
        ),
    ] {
        let ckpt = run_with_replay(&tmp.path().join(name).join("run"), &spec, 4);
        let f32_out = tmp.path().join(name).join("f32");
        let f32_report = export(&ckpt, &f32_out, &ExportOptions::default()).unwrap();
        let out = tmp.path().join(name).join("int8");
        let report = export(&ckpt, &out, &int8(1e9)).unwrap_or_else(|e| panic!("{name}: {e}"));
        schema::assert_bundle(&out);
        let m = dreamer_bundle::open(&out).unwrap();
        assert_eq!(m.precision, "int8");

        // What was quantized, on what.
        let q = m
            .quantization
            .as_ref()
            .expect("an int8 bundle records its quantization");
        for layer in &layers {
            assert!(
                q.layers.iter().any(|l| l == layer),
                "{name}: {layer} in {:?}",
                q.layers
            );
        }
        for float_layer in [
            "encoder.state.l0",
            "rssm.img_dist",
            "rssm.obs_dist",
            "actor.out",
        ] {
            assert!(
                !q.layers.iter().any(|l| l == float_layer),
                "{name}: {float_layer}"
            );
        }
        let c = &q.calibration;
        assert!(c.replay.ends_with("replay"), "{}", c.replay);
        assert_eq!(
            (c.episodes, c.steps),
            (3, 150),
            "{name}: newest episodes first, capped"
        );
        for (key, [lo, hi]) in &c.ranges {
            assert!(
                lo <= hi && lo.is_finite() && hi.is_finite(),
                "{name}: {key}"
            );
            if key.ends_with(".output") {
                assert!(*lo >= 0.0, "{name}: {key} is measured after its ReLU");
            }
        }

        // QDQ graphs with int8 weights, smaller than float32.
        let (types, ops) = graph_parts(&out.join("policy_step.onnx"));
        let int8_type = onnx_protobuf::tensor_proto::DataType::INT8 as i32;
        assert!(types.contains(&int8_type), "{name}");
        for op in ["QuantizeLinear", "DequantizeLinear"] {
            assert!(ops.iter().any(|o| o == op), "{name}: {op} in {ops:?}");
        }
        let size = |r: &dreamer_export::ExportReport| r.file_bytes["policy_step.onnx"];
        assert!(size(&report) < size(&f32_report), "{name}");

        // Verified: errors reported, the return compared on the same episodes.
        let v = m.verification.as_ref().unwrap();
        assert!(
            v.trajectory_action_max_abs_err.unwrap().is_finite(),
            "{name}"
        );
        let r = v
            .returns
            .as_ref()
            .expect("a reduced-precision bundle's return is checked");
        assert_eq!(r.episodes, 2);
        assert_eq!((r.float32_returns.len(), r.bundle_returns.len()), (2, 2));
        let mean = r.float32_returns.iter().sum::<f64>() / 2.0;
        assert!((mean - r.float32_mean).abs() < 1e-9);
        assert!(r.drop <= r.tolerance);
        eprintln!("{name}: {r:?}");
    }
}

/// With a tolerance just below the drop the same export measured, the bundle is refused
/// and the bundle already in the output folder stays as it was.
#[test]
fn a_bundle_whose_return_drops_beyond_the_tolerance_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec {
        u: 64,
        ..Spec::state()
    };
    let ckpt = run_with_replay(&tmp.path().join("run"), &spec, 2);
    let out = tmp.path().join("bundle");
    export(&ckpt, &out, &int8(1e9)).unwrap();
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let drop = dreamer_bundle::open(&out)
        .unwrap()
        .verification
        .unwrap()
        .returns
        .unwrap()
        .drop;
    let err = export(&ckpt, &out, &int8(drop - 0.01)).unwrap_err();
    match &err {
        ExportError::ReturnDrop {
            precision,
            episodes,
            ..
        } => {
            assert_eq!((precision.as_str(), *episodes), ("int8", 2));
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(err.to_string().contains("tolerance"), "{err}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
}

#[test]
fn calibration_problems_name_the_replay_or_the_episode_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::state();
    let ckpt = common::write_checkpoint(&tmp.path().join("run").join("best"), &spec, 1);
    let err = export(&ckpt, &tmp.path().join("a"), &int8(1.0)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, ExportError::Calibration { .. }) && message.contains("replay"),
        "{message}"
    );

    // An episode of another task's layout (two actions instead of one).
    let replay = tmp.path().join("other");
    std::fs::create_dir_all(&replay).unwrap();
    let mut episode = Episode::default();
    episode.push(&[0.0; 3], &[], &[0.0, 0.0], 0.0, 1.0);
    let layout = Layout {
        action: 2,
        state: 3,
        pixels: false,
    };
    let file = replay.join(dreamer_episode::file_name(0, 1));
    dreamer_episode::save(&file, &episode, layout).unwrap();
    let options = ExportOptions {
        calibration_replay: Some(replay),
        ..int8(1.0)
    };
    let message = export(&ckpt, &tmp.path().join("b"), &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("ep000000-1.npz") && message.contains("action"),
        "{message}"
    );
    assert!(!tmp.path().join("b").exists());

    let options = ExportOptions {
        calibration_steps: 0,
        ..int8(1.0)
    };
    let message = export(&ckpt, &tmp.path().join("c"), &options)
        .unwrap_err()
        .to_string();
    assert!(message.contains("calibration_steps"), "{message}");
}
