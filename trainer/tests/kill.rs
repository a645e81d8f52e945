//! `dreamer train` killed at every step of a checkpoint save (and of an episode file's
//! write), then `--resume`d: every resume succeeds (or, killed before the first checkpoint
//! was complete, is refused with a message and `--overwrite` starts again), and the finished
//! run's checkpoint, best agent and metrics equal an uninterrupted run's bit for bit.
//!
//! The kills are the persist crate's test-only fault points (`DREAMER_FAULT_POINT`), which
//! abort the process as a kill would: nothing is cleaned up.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TINY_SETS;
use dreamer_persist::FAULT_ENV;

/// Env steps of the run: checkpoints (and evaluations) at 200 and 400.
const STEPS: u64 = 400;
/// Steps of the first save of a folder (4 files, folders, `.new`, swap) and of a later one
/// (also `.old` and its removal): the persist crate's documented sequence.
const FIRST_SAVE_STEPS: u64 = 7;
const LATER_SAVE_STEPS: u64 = 9;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn train(logdir: &Path, extra: &[&str], fault: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
    command.env_remove("RUST_BACKTRACE").env_remove(FAULT_ENV);
    command.args(["train", "--quiet", "--device", "cpu", "--logdir"]);
    command.arg(logdir);
    for set in TINY_SETS
        .iter()
        .chain(&["eval.every=200", "log.checkpoint_every=200"])
    {
        command.args(["--set", set]);
    }
    command.arg("--set").arg(format!("run.steps={STEPS}"));
    command.args(extra);
    if let Some(point) = fault {
        command.env(FAULT_ENV, point);
    }
    command.output().unwrap()
}

/// What must be identical between two finished runs: the checkpoint's and the best agent's
/// files, and the metrics without their wall-clock times.
fn outcome(logdir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["checkpoint", "best"] {
        for file in [
            "model.safetensors",
            "optim.safetensors",
            "state.json",
            "config.toml",
        ] {
            let path = logdir.join(dir).join(file);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.push((format!("{dir}/{file}"), bytes));
        }
    }
    let metrics = std::fs::read_to_string(logdir.join("metrics.jsonl")).unwrap();
    let records: Vec<String> = metrics
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            record.as_object_mut().unwrap().remove("wall_s");
            record.to_string()
        })
        .collect();
    files.push(("metrics.jsonl".into(), records.join("\n").into_bytes()));
    files
}

fn assert_same(expected: &[(String, Vec<u8>)], logdir: &Path, what: &str) {
    for ((name, want), (_, got)) in expected.iter().zip(outcome(logdir)) {
        assert!(
            *want == got,
            "{what}: {name} differs from the uninterrupted run's"
        );
    }
}

/// Hidden `dreamer_persist` leftovers in the run folder.
fn leftovers(logdir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(logdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// Run until the fault point `point` aborts the trainer; false when the run finished first.
fn killed_at(logdir: &Path, point: &str) -> bool {
    let output = train(logdir, &[], Some(point));
    if output.status.success() {
        return false;
    }
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(6),
        "{point}: not aborted: {stderr}"
    );
    assert!(stderr.contains(FAULT_ENV), "{point}: {stderr}");
    true
}

/// After a kill: `--resume`, or, when no complete checkpoint was left, check that resuming
/// is refused with a way out and take it (`--overwrite`).
fn finish_after_kill(logdir: &Path, point: &str) {
    let resumed = train(logdir, &["--resume"], None);
    let stderr = text(&resumed.stderr);
    if !resumed.status.success() {
        assert!(
            stderr.contains("has no checkpoint to resume from") && stderr.contains("--overwrite"),
            "{point}: resume failed: {stderr}"
        );
        // Starting again without --overwrite is refused: the folder holds the killed run.
        let plain = train(logdir, &[], None);
        assert!(
            !plain.status.success(),
            "{point}: a plain train overwrote the run"
        );
        assert!(
            text(&plain.stderr).contains("already holds a run"),
            "{point}"
        );
        let fresh = train(logdir, &["--overwrite"], None);
        assert!(fresh.status.success(), "{point}: {}", text(&fresh.stderr));
    }
    assert_eq!(leftovers(logdir), Vec::<PathBuf>::new(), "{point}");
}

#[test]
fn a_run_killed_at_every_step_of_its_writes_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let output = train(&reference, &[], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = outcome(&reference);

    // Every step of both checkpoint saves, then one past the last (the run finishes).
    let mut points: Vec<String> = (1..=FIRST_SAVE_STEPS + LATER_SAVE_STEPS + 1)
        .map(|n| format!("checkpoint:{n}"))
        .collect();
    // The episode that ends at 400 steps, written just before the second save: after its
    // temporary file, and once in place (a file the resumed run must not keep).
    points.extend(["ep000001-101.npz:1", "ep000001-101.npz:2"].map(String::from));
    // Two at a time: each child uses one libtorch thread.
    let next = AtomicUsize::new(0);
    let finished_unkilled = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(point) = points.get(index) else {
                        break;
                    };
                    let logdir = dir.path().join(format!("run{index}"));
                    if killed_at(&logdir, point) {
                        finish_after_kill(&logdir, point);
                    } else {
                        finished_unkilled.fetch_add(1, Ordering::SeqCst);
                    }
                    assert_same(&expected, &logdir, point);
                }
            });
        }
    });
    assert_eq!(
        finished_unkilled.into_inner(),
        1,
        "only the point past the last save lets the run finish"
    );
}
