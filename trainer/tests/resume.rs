//! What `dreamer train` does with a folder that already holds a run: refuses to start over
//! unless told `--overwrite` (which deletes the run's files and nothing else), and on
//! `--resume` applies `--preset`, `--config` and `--set` by one rule.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TINY_SETS;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dreamer train` of a tiny run of `steps` env steps (checkpoints every 200) with `extra`.
fn train(logdir: &Path, steps: u64, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
    command.env_remove("RUST_BACKTRACE");
    command.args(["train", "--quiet", "--device", "cpu", "--logdir"]);
    command.arg(logdir);
    for set in TINY_SETS
        .iter()
        .chain(&["eval.every=200", "log.checkpoint_every=200"])
    {
        command.args(["--set", set]);
    }
    command.arg("--set").arg(format!("run.steps={steps}"));
    command.args(extra);
    command.output().unwrap()
}

fn state(logdir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(logdir.join("checkpoint/state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_folder_holding_a_run_is_overwritten_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    // A run stopped before its first checkpoint leaves metrics and replay but no checkpoint.
    std::fs::create_dir_all(logdir.join("replay")).unwrap();
    std::fs::write(logdir.join("metrics.jsonl"), "{\"env_steps\":0}\n").unwrap();
    std::fs::write(logdir.join("replay/ep000000-101.npz"), "old").unwrap();
    std::fs::write(logdir.join(".checkpoint.tmp"), "half").unwrap();
    std::fs::write(logdir.join("notes.txt"), "mine").unwrap();

    let refused = train(&logdir, 200, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    for needle in ["already holds a run", "--resume", "--overwrite", "--logdir"] {
        assert!(stderr.contains(needle), "no {needle} in {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(logdir.join("metrics.jsonl")).unwrap(),
        "{\"env_steps\":0}\n",
        "a refused run wrote"
    );

    let resumed = train(&logdir, 200, &["--resume"]);
    assert!(
        text(&resumed.stderr).contains("--overwrite"),
        "{}",
        text(&resumed.stderr)
    );

    let both = train(&logdir, 200, &["--resume", "--overwrite"]);
    assert_eq!(both.status.code(), Some(2), "clap refuses the pair");

    let fresh = train(&logdir, 200, &["--overwrite"]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let metrics = std::fs::read_to_string(logdir.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.starts_with("{\"env_steps\":0,"),
        "old records kept: {metrics}"
    );
    assert!(!logdir.join(".checkpoint.tmp").exists());
    assert_ne!(
        std::fs::read(logdir.join("replay/ep000000-101.npz")).unwrap(),
        b"old"
    );
    // Not the run's: untouched.
    assert_eq!(
        std::fs::read_to_string(logdir.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(state(&logdir)["env_steps"], 200);
}

#[test]
fn resume_takes_cadence_and_length_from_every_source_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let first = train(&logdir, 200, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));

    // --set of a key that shapes the model: refused, naming both values, nothing written.
    let before = std::fs::read(logdir.join("checkpoint/model.safetensors")).unwrap();
    let refused = train(&logdir, 400, &["--resume", "--set", "model.units=32"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("model.units (saved 16, given 32)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(logdir.join("checkpoint/model.safetensors")).unwrap(),
        before
    );

    // --config: its eval.every applies (and --set run.steps=400 with it).
    let file = dir.path().join("longer.toml");
    std::fs::write(&file, "[eval]\nevery = 100\n").unwrap();
    let config_arg = file.to_str().unwrap();
    let resumed = train(&logdir, 400, &["--resume", "--config", config_arg]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(state(&logdir)["env_steps"], 400);
    let saved = std::fs::read_to_string(logdir.join("checkpoint/config.toml")).unwrap();
    assert!(saved.contains("every = 100"), "{saved}");

    // --config with a key that changes the data: refused by name.
    std::fs::write(&file, "[collect]\nexpl_noise = 0.9\n").unwrap();
    let refused = train(&logdir, 600, &["--resume", "--config", config_arg]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("collect.expl_noise (saved"),
        "{}",
        text(&refused.stderr)
    );

    // --preset of another preset: every key it sets differently is named.
    let refused = train(&logdir, 600, &["--resume", "--preset", "paper"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(r#"run.task (saved "pendulum", given "cartpole-swingup")"#),
        "{stderr}"
    );
    assert_eq!(state(&logdir)["env_steps"], 400);
}

#[test]
fn commands_given_a_run_killed_mid_save_read_the_complete_copy() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let first = train(&logdir, 200, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // Killed between the two renames of a save: the folder moved aside, the new one staged.
    std::fs::rename(logdir.join("checkpoint"), logdir.join(".checkpoint.new")).unwrap();
    std::fs::create_dir(logdir.join(".checkpoint.tmp")).unwrap();

    let dreamer = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
        command.env_remove("RUST_BACKTRACE");
        command
    };
    // eval reads the complete copy and changes nothing (a trainer may be saving).
    let eval = dreamer()
        .args(["eval", "--episodes", "1", "--device", "cpu", "--checkpoint"])
        .arg(&logdir)
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    assert!(logdir.join(".checkpoint.new").is_dir());
    assert!(!logdir.join("checkpoint").exists());
    // reference writes into the checkpoint: it finishes the interrupted save first.
    let reference = dreamer()
        .args(["reference", "--steps", "5", "--cases", "2", "--checkpoint"])
        .arg(&logdir)
        .output()
        .unwrap();
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    assert!(logdir.join("checkpoint/reference.safetensors").is_file());
    assert!(!logdir.join(".checkpoint.new").exists());
    assert!(!logdir.join(".checkpoint.tmp").exists());
}
