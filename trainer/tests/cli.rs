//! The `dreamer` binary as a user meets it: edited checkpoints, NaN weights, closed or full
//! stdout, bad tasks and damaged replay folders end in a message, never in a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use dreamer_cli::testing::{
    GoneStdout, assert_no_panic_exit, closed_pipe, full_device, run_without_panic,
};
use dreamer_trainer::checkpoint::{self, RunState};

fn dreamer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
    // Panic messages are what these tests look for; backtraces only lengthen them.
    command.env_remove("RUST_BACKTRACE");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_panic(output: &Output) {
    assert_no_panic_exit(output.status, &text(&output.stderr), "dreamer");
}

/// A tiny pendulum checkpoint written by the library (fast: no training).
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let config = tiny_config(false);
    let dims = dims(false);
    let path = dir.join("checkpoint");
    checkpoint::save(
        &path,
        &agent(&config, dims),
        &RunState::new("pendulum", dims),
    )
    .unwrap();
    path
}

/// `dreamer train` arguments for a run of a few seconds: 400 env steps, a tiny model,
/// updates from 200 steps on, a checkpoint at the end.
fn tiny_train(logdir: &Path, steps: u64) -> Command {
    let mut command = dreamer();
    command.args(["train", "--quiet", "--device", "cpu", "--logdir"]);
    command.arg(logdir);
    for set in TINY_SETS
        .iter()
        .chain(&["eval.every=200", "log.checkpoint_every=200"])
    {
        command.args(["--set", set]);
    }
    command.arg("--set").arg(format!("run.steps={steps}"));
    command
}

#[test]
fn a_config_naming_another_task_is_refused_by_eval_export_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    let config_path = ckpt.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("task = \"pendulum\""), "{config}");
    std::fs::write(
        &config_path,
        config.replace("task = \"pendulum\"", "task = \"cartpole-swingup\""),
    )
    .unwrap();
    let out = dir.path().join("bundle");
    let commands: [&[&str]; 3] = [
        &["eval", "--episodes", "1", "--device", "cpu", "--checkpoint"],
        &["reference", "--steps", "5", "--checkpoint"],
        &["export", "--out", out.to_str().unwrap(), "--checkpoint"],
    ];
    for args in commands {
        let output = dreamer().args(args).arg(&ckpt).output().unwrap();
        assert_no_panic(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = text(&output.stderr);
        for needle in [
            "config.toml",
            "run.task",
            "\"cartpole-swingup\"",
            "\"pendulum\"",
            "state.json",
            "state size 5",
            "state size 3",
        ] {
            assert!(stderr.contains(needle), "{args:?}: no {needle} in {stderr}");
        }
    }
    assert!(!out.exists());
}

#[test]
fn a_nan_weight_is_named_by_export_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(false);
    let dims = dims(false);
    let agent = agent(&config, dims);
    tch::no_grad(|| {
        let weights = agent.named_weights();
        let (_, weight) = weights
            .iter()
            .find(|(name, _)| name == "actor.out.weight")
            .unwrap();
        let _ = weight.view([-1]).get(2).fill_(f64::NAN);
    });
    let ckpt = dir.path().join("checkpoint");
    checkpoint::save(&ckpt, &agent, &RunState::new("pendulum", dims)).unwrap();
    let out = dir.path().join("bundle");
    let commands: [&[&str]; 2] = [
        &["export", "--out", out.to_str().unwrap(), "--checkpoint"],
        &["reference", "--steps", "5", "--checkpoint"],
    ];
    for args in commands {
        let output = dreamer().args(args).arg(&ckpt).output().unwrap();
        assert_no_panic(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("model.safetensors")
                && stderr.contains("`actor.out.weight`")
                && stderr.contains("NaN at flat index 2"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("action component"), "{stderr}");
    }
    assert!(!out.exists());
    assert!(!ckpt.join("reference.safetensors").exists());
}

#[test]
fn short_commands_end_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny_checkpoint(dir.path());
    let out = dir.path().join("bundle");
    // `dreamer export ... | true`: the bundle is written, the summary has no reader.
    let mut export = dreamer();
    export
        .args(["export", "--reference-steps", "20", "--out"])
        .arg(&out)
        .arg("--checkpoint")
        .arg(&ckpt);
    let (status, stderr) = run_without_panic(&mut export, closed_pipe(), "export | true");
    assert!(status.success(), "{stderr}");
    assert!(out.join("manifest.json").is_file());

    let reference = |stdout, case| {
        let mut command = dreamer();
        command
            .args(["reference", "--steps", "5", "--checkpoint"])
            .arg(&ckpt);
        run_without_panic(&mut command, stdout, case)
    };
    let (status, stderr) = reference(closed_pipe(), "reference | true");
    assert!(status.success(), "{stderr}");

    // A full device is a real failure: reported, not panicked.
    let (status, stderr) = reference(full_device(), "reference >/dev/full");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("writing to stdout"), "{stderr}");
}

#[test]
fn training_carries_on_when_stdout_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    for gone in GoneStdout::ALL {
        let name = gone.name();
        let logdir = dir.path().join(name);
        let (status, stderr) = run_without_panic(&mut tiny_train(&logdir, 400), gone.stdio(), name);
        assert!(status.success(), "{name}: {stderr}");
        // Said once on stderr, and the run went on to its end.
        assert_eq!(stderr.matches("writing to stdout").count(), 1, "{stderr}");
        let (_, state) = checkpoint::read_meta(&logdir.join("checkpoint")).unwrap();
        assert_eq!(state.env_steps, 400, "{name}");
        let metrics = std::fs::read_to_string(logdir.join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("\"env_steps\":400"), "{metrics}");
    }
}

#[test]
fn an_unknown_task_leaves_no_folder_behind() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("runs").join("nope");
    let output = dreamer()
        .args(["train", "--quiet", "--set", "run.task=nope", "--logdir"])
        .arg(&logdir)
        .output()
        .unwrap();
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("unknown task `nope`"));
    assert!(
        !dir.path().join("runs").exists(),
        "a folder was left behind"
    );
}

#[test]
fn a_missing_replay_episode_is_reported_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let output = tiny_train(&logdir, 400).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let replay = logdir.join("replay");
    let mut episodes: Vec<PathBuf> = std::fs::read_dir(&replay)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    episodes.sort();
    // 400 env steps of pendulum: two episodes of 100 decisions.
    assert_eq!(episodes.len(), 2, "{episodes:?}");
    std::fs::remove_file(&episodes[0]).unwrap();
    let count = episodes.len();

    let output = tiny_train(&logdir, 500).arg("--resume").output().unwrap();
    assert_no_panic(&output);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warning = format!(
        "1 of the {count} replay episodes the checkpoint counts are missing from {}",
        replay.display()
    );
    assert!(stderr.contains(&warning), "no `{warning}` in {stderr}");
    // New episodes get new names: none of the files kept was overwritten.
    for kept in episodes.iter().filter(|p| **p != episodes[0]) {
        assert!(kept.exists(), "{} is gone", kept.display());
    }
}
