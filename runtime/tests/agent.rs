//! Agent behaviour on test bundles whose model is also computed in plain Rust.

mod common;

use std::path::Path;

use common::{Faults, Sizes, Weights};
use dreamer_runtime::{
    Agent, AgentOptions, GraphMode, LoadError, Noise, Observation, Provider, SafeAction, StepError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn obs<'a>(sizes: Sizes, state: &'a [f32], pixels: &'a [u8]) -> Observation<'a> {
    Observation {
        state: (sizes.obs > 0).then_some(state),
        pixels: sizes.pixels.then_some(pixels),
    }
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

fn bundle(dir: &Path, sizes: Sizes, seed: u64) -> Weights {
    let weights = Weights::random(sizes, seed);
    common::write_bundle(dir, &weights, Faults::default());
    weights
}

/// Runs the agent and the reference side by side over a trajectory with a reset in it.
fn check_trajectory(sizes: Sizes, mode: GraphMode) {
    let dir = tempfile::tempdir().unwrap();
    let weights = bundle(dir.path(), sizes, 7);
    let mut agent = Agent::load(
        dir.path(),
        AgentOptions {
            mode,
            ..AgentOptions::default()
        },
    )
    .unwrap();
    let observations = common::observations(sizes, 30, 1);
    let zeros_s = vec![0.0; sizes.stoch];
    let zeros_a = vec![0.0; sizes.action];
    let mut reference = weights.initial();
    for (t, (state, pixels)) in observations.iter().enumerate() {
        if t == 20 {
            agent.reset();
            reference = weights.initial();
        }
        let expected = weights.step(&mut reference, state, pixels, &zeros_s, &zeros_a);
        if t % 3 == 0 {
            // Priming runs the graphs but must not move the state.
            agent.prime().unwrap();
        }
        let action = agent.step(&obs(sizes, state, pixels)).unwrap().to_vec();
        assert_close(
            &action,
            &expected.action,
            1e-4,
            &format!("{mode:?} step {t} action"),
        );
        assert!(
            (agent.surprise() - expected.surprise).abs() < 1e-3 * (1.0 + expected.surprise.abs()),
            "step {t} surprise {} vs {}",
            agent.surprise(),
            expected.surprise
        );
        let latent = agent.latent();
        assert_close(latent.h, &reference.h, 1e-4, "h");
        assert_close(latent.s, &reference.s, 1e-4, "s");
    }
    assert_eq!(agent.counters().steps, 30);
    assert_eq!(agent.counters().faults(), 0);
}

#[test]
fn fused_state_policy_matches_the_reference_model() {
    check_trajectory(Sizes::state(), GraphMode::Fused);
}

#[test]
fn separate_graphs_match_the_reference_model() {
    check_trajectory(Sizes::state(), GraphMode::Separate);
}

#[test]
fn pixel_and_combined_policies_match_the_reference_model() {
    check_trajectory(Sizes::pixels(), GraphMode::Fused);
    check_trajectory(Sizes::both(), GraphMode::Fused);
    check_trajectory(Sizes::both(), GraphMode::Separate);
}

#[test]
fn seeded_noise_is_reproducible_and_matches_the_reference() {
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    let weights = bundle(dir.path(), sizes, 3);
    let options = AgentOptions {
        noise: Noise::Sampled { seed: 42 },
        ..AgentOptions::default()
    };
    let mut a = Agent::load(dir.path(), options.clone()).unwrap();
    let mut b = Agent::load(
        dir.path(),
        AgentOptions {
            mode: GraphMode::Separate,
            ..options
        },
    )
    .unwrap();
    // The agent draws the posterior noise [S] then the action noise [A] each step.
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut reference = weights.initial();
    let observations = common::observations(sizes, 10, 2);
    let mut differs_from_mode = false;
    for (state, pixels) in &observations {
        let noise: Vec<f32> = (0..sizes.stoch)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let action_noise: Vec<f32> = (0..sizes.action)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let expected = weights.step(&mut reference, state, pixels, &noise, &action_noise);
        let got_a = a.step(&obs(sizes, state, pixels)).unwrap().to_vec();
        let got_b = b.step(&obs(sizes, state, pixels)).unwrap().to_vec();
        assert_close(&got_a, &expected.action, 1e-4, "fused sampled action");
        assert_close(&got_b, &expected.action, 1e-4, "separate sampled action");
        differs_from_mode |= noise.iter().any(|n| n.abs() > 0.1);
    }
    assert!(differs_from_mode);
}

#[test]
fn bad_observations_return_the_safe_action_and_are_counted() {
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), sizes, 5);
    let good = vec![0.3f32; sizes.obs];
    for (safe, mode) in [
        (SafeAction::Hold, GraphMode::Fused),
        (SafeAction::Zero, GraphMode::Separate),
        (SafeAction::Fixed(vec![0.25, -0.5]), GraphMode::Fused),
    ] {
        let mut agent = Agent::load(
            dir.path(),
            AgentOptions {
                safe_action: safe.clone(),
                mode,
                ..AgentOptions::default()
            },
        )
        .unwrap();
        let first = agent.step(&obs(sizes, &good, &[])).unwrap().to_vec();
        let h_before = agent.latent().h.to_vec();
        let expected_safe = match &safe {
            SafeAction::Hold => first.clone(),
            SafeAction::Zero => vec![0.0; sizes.action],
            SafeAction::Fixed(v) => v.clone(),
        };

        let mut nan = good.clone();
        nan[2] = f32::NAN;
        let err = agent.step(&obs(sizes, &nan, &[])).unwrap_err();
        assert_eq!(
            err,
            StepError::NonFinite {
                input: "obs_state",
                index: 2
            }
        );
        assert_eq!(agent.action(), &expected_safe[..], "{safe:?}");

        let mut inf = good.clone();
        inf[0] = f32::INFINITY;
        assert!(matches!(
            agent.step(&obs(sizes, &inf, &[])),
            Err(StepError::NonFinite { index: 0, .. })
        ));

        let short = vec![0.0f32; sizes.obs - 1];
        let err = agent.step(&obs(sizes, &short, &[])).unwrap_err();
        assert_eq!(
            err,
            StepError::WrongSize {
                input: "obs_state",
                expected: sizes.obs,
                got: sizes.obs - 1
            }
        );
        assert!(err.to_string().contains("obs_state"), "{err}");

        let err = agent.step(&Observation::default()).unwrap_err();
        assert_eq!(err, StepError::MissingInput { input: "obs_state" });
        assert_eq!(agent.action(), &expected_safe[..]);

        // The latent state did not move on refused observations.
        assert_eq!(agent.latent().h, &h_before[..]);
        let counters = agent.counters();
        assert_eq!(counters.steps, 5);
        assert_eq!(counters.bad_observations, 4);
        assert_eq!(counters.runtime_errors, 0);
        // And the agent keeps working.
        assert!(agent.step(&obs(sizes, &good, &[])).is_ok());
    }
}

#[test]
fn onnx_runtime_errors_return_the_safe_action_and_are_counted() {
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    let weights = Weights::random(sizes, 9);
    common::write_bundle(
        dir.path(),
        &weights,
        Faults {
            runtime_error_on_large_obs: true,
        },
    );
    let mut agent = Agent::load(
        dir.path(),
        AgentOptions {
            safe_action: SafeAction::Fixed(vec![0.5, 0.5]),
            ..AgentOptions::default()
        },
    )
    .unwrap();
    let good = vec![0.5f32; sizes.obs];
    agent.step(&obs(sizes, &good, &[])).unwrap();
    let h_before = agent.latent().h.to_vec();
    let large = vec![3.0f32; sizes.obs];
    let err = agent.step(&obs(sizes, &large, &[])).unwrap_err();
    match &err {
        StepError::Runtime { graph, message } => {
            assert_eq!(graph, "policy_step");
            assert!(!message.is_empty());
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    assert_eq!(agent.action(), &[0.5, 0.5]);
    assert_eq!(agent.latent().h, &h_before[..]);
    assert_eq!(agent.counters().runtime_errors, 1);
    assert!(agent.step(&obs(sizes, &good, &[])).is_ok());
}

#[test]
fn tampered_or_mismatched_bundles_are_refused_naming_the_problem() {
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    let weights = bundle(dir.path(), sizes, 11);

    // A modified graph file.
    let path = dir.path().join("actor.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = Agent::load(dir.path(), AgentOptions::default()).unwrap_err();
    assert!(err.to_string().contains("actor.onnx"), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");

    // Unsupported manifest version.
    let manifest = common::write_bundle(dir.path(), &weights, Faults::default());
    let mut old = manifest.clone();
    old.format_version = 99;
    common::write_manifest(dir.path(), &old);
    let err = Agent::load(dir.path(), AgentOptions::default()).unwrap_err();
    assert!(matches!(err, LoadError::Bundle(_)), "{err}");
    assert!(err.to_string().contains("99"), "{err}");

    // The manifest disagrees with the graph about a shape.
    let mut wrong = manifest.clone();
    let fused = wrong.graphs.get_mut("policy_step").unwrap();
    fused
        .inputs
        .iter_mut()
        .find(|t| t.name == "h")
        .unwrap()
        .shape = vec![1, 99];
    common::write_manifest(dir.path(), &wrong);
    let err = Agent::load(dir.path(), AgentOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("latent.deter is 8 but graph policy_step input h is [1, 99]"),
        "{text}"
    );

    // A consistent manifest, but the ONNX file (listed with its hash) declares another
    // shape: the session's own declarations are checked too.
    let other = tempfile::tempdir().unwrap();
    let wider = Sizes { deter: 10, ..sizes };
    common::write_bundle(other.path(), &Weights::random(wider, 11), Faults::default());
    let file = dir.path().join("policy_step.onnx");
    std::fs::copy(other.path().join("policy_step.onnx"), &file).unwrap();
    let mut relisted = manifest.clone();
    relisted.files.insert(
        "policy_step.onnx".into(),
        dreamer_bundle::sha256_file(&file).unwrap(),
    );
    common::write_manifest(dir.path(), &relisted);
    let err = Agent::load(dir.path(), AgentOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("policy_step") && text.contains("`h`") && text.contains("[1, 10]"),
        "{text}"
    );
    common::write_bundle(dir.path(), &weights, Faults::default());

    // The manifest's action size disagrees with the graphs.
    let mut wrong = manifest.clone();
    wrong.action.size = 3;
    common::write_manifest(dir.path(), &wrong);
    for mode in [GraphMode::Fused, GraphMode::Separate] {
        let err = Agent::load(
            dir.path(),
            AgentOptions {
                mode,
                ..AgentOptions::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("action.size is 3"), "{err}");
    }

    // A fixed safe action of the wrong length.
    common::write_manifest(dir.path(), &manifest);
    let err = Agent::load(
        dir.path(),
        AgentOptions {
            safe_action: SafeAction::Fixed(vec![0.0; 5]),
            ..AgentOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Options(_)), "{err}");
}

/// The test bundles here have the five graphs of bundles exported before `policy_observe`
/// existed: they load for fused and separate steps, and a split step is refused by name.
#[test]
fn bundles_without_policy_observe_load_except_for_split_steps() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), Sizes::state(), 12);
    let load = |mode| {
        Agent::load(
            dir.path(),
            AgentOptions {
                mode,
                ..AgentOptions::default()
            },
        )
    };
    load(GraphMode::Fused).unwrap();
    load(GraphMode::Separate).unwrap();
    let err = load(GraphMode::Split).unwrap_err();
    assert!(
        matches!(&err, LoadError::Manifest { graph, .. } if graph == "policy_observe"),
        "{err}"
    );
    assert!(err.to_string().contains("re-export"), "{err}");
}

#[test]
fn unavailable_providers_fail_unless_fallback_is_allowed() {
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), sizes, 13);
    // This machine's library is a CPU build: CUDA cannot run here, with or without the
    // cargo feature.
    let err = Agent::load(
        dir.path(),
        AgentOptions {
            provider: Provider::Cuda,
            ..AgentOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Provider { .. }), "{err}");
    assert!(err.to_string().contains("cuda"), "{err}");

    let agent = Agent::load(
        dir.path(),
        AgentOptions {
            provider: Provider::Cuda,
            allow_fallback: true,
            ..AgentOptions::default()
        },
    )
    .unwrap();
    let placements = agent.placements();
    assert_eq!(placements.len(), 1);
    assert_eq!(placements[0].primary(), "CPUExecutionProvider");
    assert!(placements[0].fallback_reason.is_some());

    let agent = Agent::load(dir.path(), AgentOptions::default()).unwrap();
    assert_eq!(agent.placements()[0].primary(), "CPUExecutionProvider");
    assert_eq!(agent.placements()[0].fallback_reason, None);
}
