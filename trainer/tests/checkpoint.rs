//! Checkpoint round trip, load errors, resume equivalence, and a whole tiny run.

mod common;

use std::collections::HashMap;

use common::*;
use dreamer_trainer::checkpoint::{self, CheckpointError, RunState};
use dreamer_trainer::run::{self, RunError, RunOptions};
use tch::{Device, Tensor};

fn optimiser_state(agent: &dreamer_trainer::agent::Agent) -> Vec<(String, Tensor)> {
    let mut all = agent.model_opt.state("model");
    all.extend(agent.actor_opt.state("actor"));
    all.extend(agent.value_opt.state("value"));
    all
}

fn assert_identical(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "tensor {na} differs");
    }
}

#[test]
fn checkpoint_round_trip_restores_weights_and_optimiser() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(false);
    let dims = dims(false);
    let mut agent = agent(&config, dims);
    agent.update(&synthetic_batch(&config, dims, 1), 0).unwrap();
    let mut state = RunState::new("pendulum", dims);
    state.updates = 1;
    let path = dir.path().join("ck");
    checkpoint::save(&path, &agent, &state).unwrap();
    // Saving again replaces the folder atomically.
    checkpoint::save(&path, &agent, &state).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary folders left behind");

    let (loaded, loaded_state) = checkpoint::load(&path, Device::Cpu).unwrap();
    assert_eq!(loaded_state, state);
    assert_eq!(loaded.config, config);
    assert_identical(&snapshot(&agent), &snapshot(&loaded));
    assert_identical(&optimiser_state(&agent), &optimiser_state(&loaded));
    assert_eq!(loaded.model_opt.step, 1);
    assert_eq!(loaded.entropy_scale, agent.entropy_scale);
    assert_eq!(loaded.return_scale, agent.return_scale);

    // The weight file uses the documented names.
    let names: Vec<String> = Tensor::read_safetensors(path.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in [
        "encoder.state.l0.weight",
        "rssm.gru.weight_ih",
        "rssm.obs_dist.bias",
        "actor.out.weight",
        "value.l2.bias",
        "reward.out.weight",
        "decoder.state.out.weight",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

#[test]
fn load_errors_name_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(false);
    let dims = dims(false);
    let path = dir.path().join("ck");
    checkpoint::save(
        &path,
        &agent(&config, dims),
        &RunState::new("pendulum", dims),
    )
    .unwrap();

    let mut narrow = config.clone();
    narrow.model.units = 8;
    let err = checkpoint::load_into(&path, &mut agent(&narrow, dims)).unwrap_err();
    match &err {
        CheckpointError::Shape {
            name,
            found,
            expected,
            ..
        } => {
            assert!(
                name.starts_with("actor.")
                    || name.starts_with("decoder.")
                    || name.starts_with("encoder."),
                "{name}"
            );
            assert_ne!(found, expected);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert!(err.to_string().contains("has shape"), "{err}");

    let mut with_pcont = config.clone();
    with_pcont.model.pcont = true;
    let err = checkpoint::load_into(&path, &mut agent(&with_pcont, dims)).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing { name, .. } if name.starts_with("pcont.")),
        "{err}"
    );

    let path2 = dir.path().join("ck2");
    checkpoint::save(
        &path2,
        &agent(&with_pcont, dims),
        &RunState::new("pendulum", dims),
    )
    .unwrap();
    let err = checkpoint::load_into(&path2, &mut agent(&config, dims)).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Extra { name, .. } if name.starts_with("pcont.")),
        "{err}"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        checkpoint::load(&empty, Device::Cpu),
        Err(CheckpointError::NotCheckpoint { .. })
    ));

    let state_path = path.join("state.json");
    let text = std::fs::read_to_string(&state_path).unwrap();
    std::fs::write(
        &state_path,
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    assert!(matches!(
        checkpoint::load(&path, Device::Cpu),
        Err(CheckpointError::Version { found: 99, .. })
    ));
}

#[test]
fn resumed_updates_equal_uninterrupted_updates() {
    resumed_updates_equal(0);
}

/// The categorical draws come from the update's own noise, as the Gaussian's do.
#[test]
fn resumed_updates_with_discrete_latents_equal_uninterrupted_updates() {
    resumed_updates_equal(3);
}

fn resumed_updates_equal(classes: i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(false);
    config.model.classes = classes;
    // An adapted entropy weight is part of the state a resume must restore.
    config.train.actor_entropy = 1e-2;
    config.train.entropy_lr = 0.1;
    // So is the slow value network.
    config.train.slow_value_rate = 0.3;
    let dims = dims(false);
    let replay = synthetic_replay(&dir.path().join("replay"), dims, 3, 12);

    let mut straight = agent(&config, dims);
    let mut straight_state = RunState::new("pendulum", dims);
    run::run_updates(&mut straight, &replay, &mut straight_state, 4).unwrap();

    let mut first = agent(&config, dims);
    let mut state = RunState::new("pendulum", dims);
    run::run_updates(&mut first, &replay, &mut state, 2).unwrap();
    let path = dir.path().join("ck");
    checkpoint::save(&path, &first, &state).unwrap();
    drop(first);
    let (mut resumed, mut resumed_state) = checkpoint::load(&path, Device::Cpu).unwrap();
    // Disturb torch's global generator: the update must not depend on it.
    let _ = Tensor::randn([7], (tch::Kind::Float, Device::Cpu));
    run::run_updates(&mut resumed, &replay, &mut resumed_state, 2).unwrap();

    assert_eq!(resumed_state.updates, 4);
    assert_ne!(straight.entropy_scale, 1e-2);
    assert_eq!(straight.entropy_scale, resumed.entropy_scale);
    assert_identical(&snapshot(&straight), &snapshot(&resumed));
    assert_identical(&optimiser_state(&straight), &optimiser_state(&resumed));
    let slow = |a: &dreamer_trainer::agent::Agent| a.slow_value.as_ref().unwrap().named_weights();
    assert_identical(&slow(&straight), &slow(&resumed));
    assert!(!changed(&slow(&straight), &slow(&agent(&config, dims))).is_empty());
}

#[test]
fn replay_round_trips_episodes_through_npz() {
    let dir = tempfile::tempdir().unwrap();
    let dims = dims(true);
    let replay = synthetic_replay(dir.path(), dims, 2, 6);
    let reopened =
        dreamer_trainer::replay::Replay::open(dir.path(), replay.layout(), None).unwrap();
    assert_eq!(reopened.episodes(), 2);
    assert_eq!(reopened.steps(), 12);
    let limited =
        dreamer_trainer::replay::Replay::open(dir.path(), replay.layout(), Some(1)).unwrap();
    assert_eq!(limited.episodes(), 1);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let a = reopened.sample(4, 5, &mut rng).unwrap();
    let batch = a.to_batch(Device::Cpu);
    assert_eq!(
        batch.obs.pixels.as_ref().unwrap().size(),
        vec![4, 5, 64, 64, 3]
    );
    assert_eq!(batch.action.size(), vec![4, 5, 1]);
    assert!(
        reopened.sample(1, 7, &mut rng).is_none(),
        "no episode is 7 steps long"
    );
    // A layout mismatch is an error naming the file.
    let wrong = dreamer_trainer::replay::Layout {
        action: 2,
        ..replay.layout()
    };
    let err = dreamer_trainer::replay::Replay::open(dir.path(), wrong, None).unwrap_err();
    assert!(err.to_string().contains("ep000000"), "{err}");
}

#[test]
fn replay_counts_missing_episodes_and_drops_those_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let dims = dims(false);
    let replay = synthetic_replay(dir.path(), dims, 4, 6);
    let layout = replay.layout();
    // A checkpoint counting 3 episodes, the second one deleted, a 4th written after it.
    std::fs::remove_file(dir.path().join("ep000001-6.npz")).unwrap();
    let mut reopened = dreamer_trainer::replay::Replay::open(dir.path(), layout, Some(3)).unwrap();
    assert_eq!(
        reopened.episodes(),
        2,
        "ep0 and ep2, not ep3 after the checkpoint"
    );
    assert_eq!(reopened.missing(), 1);
    let mut episode = dreamer_trainer::replay::Episode::default();
    for _ in 0..5 {
        episode.push(&[0.0; 3], &[], &[0.5], 1.0, 1.0);
    }
    // ep000003, written after the checkpoint, was deleted on opening: the resumed run
    // writes its own episode 3 (here of another length, as a changed run could).
    assert!(!dir.path().join("ep000003-6.npz").exists());
    reopened.add(episode).unwrap();
    assert!(dir.path().join("ep000003-5.npz").is_file());
    assert!(dir.path().join("ep000002-6.npz").is_file());
    let none_missing = dreamer_trainer::replay::Replay::open(dir.path(), layout, None).unwrap();
    assert_eq!(none_missing.missing(), 0);
    assert_eq!(none_missing.episodes(), 3);
    // An older checkpoint (2 episodes) keeps ep0 only, ep1 being missing.
    let older = dreamer_trainer::replay::Replay::open(dir.path(), layout, Some(2)).unwrap();
    assert_eq!((older.episodes(), older.missing()), (1, 1));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ep000000-6.npz"]);
}

fn options(logdir: &std::path::Path, resume: bool) -> RunOptions {
    RunOptions {
        logdir: logdir.to_path_buf(),
        resume,
        overwrite: false,
        device: Device::Cpu,
        progress: false,
        max_updates: None,
    }
}

#[test]
fn a_tiny_run_trains_evaluates_resumes_and_writes_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let mut config = tiny_config(false);
    config.run.steps = 400;
    let summary = run::train(&config, &options(&logdir, false)).unwrap();
    assert_eq!(summary.env_steps, 400);
    // at 200 steps (end of prefill) pretrain 2 + train 2, then 2 at 300 and at 400 steps
    assert_eq!(summary.updates, 8);
    assert!(summary.eval_return.unwrap().is_finite());
    // The best evaluation (untrained one included) is kept with its agent in best/.
    let (best_at, best) = summary.best_eval.unwrap();
    assert!(summary.curve.iter().all(|&(_, r)| r <= best));
    assert!(summary.curve.contains(&(best_at, best)));
    let (_, best_state) = dreamer_trainer::checkpoint::load(&logdir.join("best"), tch::Device::Cpu)
        .expect("best/ is a loadable checkpoint");
    assert_eq!(best_state.env_steps, best_at);
    assert_eq!(best_state.best_eval, Some((best_at, best)));
    for file in [
        "metrics.jsonl",
        "learning-curve.png",
        "checkpoint/model.safetensors",
        "checkpoint/config.toml",
        "replay/ep000001-101.npz",
    ] {
        assert!(logdir.join(file).exists(), "{file} missing");
    }
    assert!(std::fs::read_dir(&logdir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents")
    }));

    // Starting over in the same folder is refused; resuming continues the counters.
    assert!(matches!(
        run::train(&config, &options(&logdir, false)),
        Err(RunError::Exists(_, _))
    ));
    config.run.steps = 500;
    let resumed = run::train(&config, &options(&logdir, true)).unwrap();
    assert_eq!(resumed.env_steps, 500);
    assert_eq!(resumed.updates, 10);

    let reference =
        dreamer_trainer::reference::write_reference(&logdir.join("checkpoint"), 210, 5).unwrap();
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&reference)
        .unwrap()
        .into_iter()
        .collect();
    let shape = |name: &str| {
        tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .size()
    };
    let (d, s) = (config.model.deter, config.model.stoch);
    assert_eq!(shape("traj.obs.state"), vec![210, 3]);
    assert_eq!(shape("traj.action"), vec![210, 1]);
    assert_eq!(shape("traj.h"), vec![210, d]);
    assert_eq!(shape("traj.surprise"), vec![210]);
    assert_eq!(shape("rand.obs_step.prior_std"), vec![5, s]);
    assert_eq!(shape("rand.encoder.embed"), vec![5, config.model.units]);
    assert_eq!(shape("rand.actor.mode"), vec![5, 1]);
    assert!(!tensors.contains_key("traj.obs.pixels"));
}

#[test]
fn bad_run_folders_are_refused_before_work_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(false);
    let err = run::train(&config, &options(&dir.path().join("none"), true)).unwrap_err();
    assert!(matches!(err, RunError::NothingToResume(_)), "{err}");
    assert!(
        !dir.path().join("none").exists(),
        "a refused run left its folder"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = run::train(&config, &options(&file.join("logs"), false)).unwrap_err();
    assert!(matches!(err, RunError::Log(_)), "{err}");
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn a_tiny_pixel_run_logs_open_loop_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let mut config = tiny_config(true);
    config.run.task = "pendulum".into();
    config.run.action_repeat = 1;
    config.run.steps = 300;
    config.train.length = 8;
    config.log.openloop_every = 300;
    let summary = run::train(&config, &options(&logdir, false)).unwrap();
    assert_eq!(summary.env_steps, 300);
    let gif = std::fs::read(logdir.join("openloop.gif")).unwrap();
    assert_eq!(&gif[..6], b"GIF89a");
    let (_, state) = checkpoint::read_meta(&logdir.join("checkpoint")).unwrap();
    assert!(state.pixels && state.state_size == 0);
}

#[test]
fn same_starts_give_one_policy_the_same_evaluation() {
    // Evaluations at 0 and 100 env steps, both before the first update at 200: one policy.
    let curve = |same_starts: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tiny_config(false);
        config.run.steps = 100;
        config.eval.every = 100;
        config.eval.episodes = 3;
        config.eval.same_starts = same_starts;
        let summary = run::train(&config, &options(&dir.path().join("run"), false)).unwrap();
        summary.curve.iter().map(|&(_, r)| r).collect::<Vec<f64>>()
    };
    let same = curve(true);
    assert_eq!(same.len(), 2);
    assert_eq!(same[0], same[1]);
    // New start states at every evaluation: the same policy scores differently.
    let fresh = curve(false);
    assert_eq!(fresh[0], same[0]);
    assert_ne!(fresh[0], fresh[1]);
}
