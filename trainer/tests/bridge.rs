//! `dreamer train`, `eval` and `export` on environments of the Python bridge, against the real
//! gymnasium and dm_control of `.deps/envs` (scripts/fetch-deps): a bridged run trains,
//! evaluates, checkpoints (with the env's record in state.json), resumes and exports like a
//! built-in one, and bridge/python/drive_env.py drives the bundle in the env; an unknown env or bad keyword arguments are refused before any folder is written; a
//! worker that fails mid-run leaves the checkpoint intact and no worker behind, and so does
//! Ctrl-C.

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::TINY_SETS;

/// Variables of the test env `trainer_envs:Track-v0` (tests/envs/trainer_envs).
const FAIL_AT: &str = "TRAINER_ENVS_FAIL_AT";
const ACTION_HIGH: &str = "TRAINER_ENVS_ACTION_HIGH";
/// Set for every `dreamer` a test starts; its workers inherit it, which is how a test finds
/// them among all processes.
const MARKER: &str = "DREAMER_BRIDGE_TEST_MARKER";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dreamer` with the test envs on PYTHONPATH and the workers marked with `marker`.
fn dreamer(marker: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
    command.env_remove("RUST_BACKTRACE");
    command.env_remove(FAIL_AT).env_remove(ACTION_HIGH);
    command.env(
        "PYTHONPATH",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envs"),
    );
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    command.env(MARKER, marker);
    command
}

/// `dreamer train` of `steps` env steps with the tiny model, then `sets`, then `extra`.
fn train(marker: &str, logdir: &Path, steps: u64, sets: &[&str], extra: &[&str]) -> Command {
    let mut command = dreamer(marker);
    command.args(["train", "--quiet", "--device", "cpu", "--logdir"]);
    command.arg(logdir);
    for set in TINY_SETS.iter().chain(sets) {
        command.args(["--set", set]);
    }
    command.arg("--set").arg(format!("run.steps={steps}"));
    command.args(extra);
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        !text(&output.stderr).contains("panicked"),
        "{}",
        text(&output.stderr)
    );
    output
}

fn succeeds(command: Command) -> Output {
    let output = run(command);
    assert!(output.status.success(), "{}", text(&output.stderr));
    output
}

/// The stderr of a command that must fail with status 1.
fn fails(command: Command) -> String {
    let output = run(command);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    text(&output.stderr)
}

fn state(logdir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(logdir.join("checkpoint/state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `dreamer export` of `logdir`'s checkpoint into `bundle`.
fn export(marker: &str, logdir: &Path, bundle: &Path) -> PathBuf {
    let mut export = dreamer(marker);
    export
        .args(["export", "--checkpoint"])
        .arg(logdir)
        .arg("--out")
        .arg(bundle);
    succeeds(export);
    bundle.to_path_buf()
}

/// bridge/python/drive_env.py on `bundle` for `episodes` episodes, in the workers' Python:
/// each episode's return, decisions and end (`time limit` or `terminated`).
fn drive_env(bundle: &Path, episodes: u32) -> Vec<(f64, u32, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bridge/python/drive_env.py");
    let output = run({
        let mut command = Command::new(dreamer_bridge::resolve_python(None).path);
        command
            .arg(script)
            .arg(bundle)
            .args(["--episodes", &episodes.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1");
        command
    });
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            // "episode <i>: return <r> over <n> decisions (<end>)"
            let (_, rest) = line.split_once(": return ").expect(line);
            let (ret, rest) = rest.split_once(" over ").expect(line);
            let (decisions, end) = rest.split_once(" decisions (").expect(line);
            (
                ret.parse().expect(line),
                decisions.parse().expect(line),
                end.trim_end_matches(')').to_string(),
            )
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn count_records(logdir: &Path, kind: &str) -> usize {
    let metrics = std::fs::read_to_string(logdir.join("metrics.jsonl")).unwrap();
    let needle = format!("\"kind\":\"{kind}\"");
    metrics.lines().filter(|l| l.contains(&needle)).count()
}

/// Worker processes still running (zombies excluded) whose environment holds `marker`.
fn live_workers(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER}={marker}\0").into_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A zombie's (or a vanished process's) cmdline and environ read empty.
        let (Ok(cmdline), Ok(environ)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read(entry.path().join("environ")),
        ) else {
            continue;
        };
        let worker = cmdline.windows(17).any(|w| w == b"dreamer_worker.py");
        if worker
            && environ
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn gym_pendulum_from_state_trains_evaluates_checkpoints_and_resumes() {
    let marker = "pendulum";
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let sets = [
        "run.task=gym:Pendulum-v1",
        "run.obs_mode=state",
        "eval.every=200",
        "log.checkpoint_every=200",
    ];
    succeeds(train(marker, &logdir, 400, &sets, &[]));
    let saved = state(&logdir);
    assert_eq!(saved["task"], "gym:Pendulum-v1");
    assert_eq!(
        (saved["env_steps"].as_u64(), saved["episodes"].as_u64()),
        (Some(400), Some(2))
    );
    assert!(saved["updates"].as_u64().unwrap() > 0, "{saved}");
    // The env as the workers described it: sizes, bounds, timing, versions.
    let env = &saved["env"];
    assert_eq!(env["task"], "gym:Pendulum-v1");
    assert_eq!(env["state_size"], 3);
    assert_eq!(
        env["state_fields"],
        serde_json::json!(["obs[0]", "obs[1]", "obs[2]"])
    );
    assert_eq!(env["action_size"], 1);
    assert_eq!(env["action_low"], serde_json::json!([-2.0]));
    assert_eq!(env["action_high"], serde_json::json!([2.0]));
    assert_eq!(env["action_repeat"], 2);
    assert_eq!(env["max_env_steps"], 200);
    assert_eq!(env["max_decisions"], 100);
    assert!((env["control_period_s"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    assert!(env["versions"]["gymnasium"].is_string(), "{env}");
    // Evaluations at 0, 200 and 400; replay, TensorBoard, best/ as for a built-in task.
    assert_eq!(count_records(&logdir, "eval"), 3);
    assert_eq!(files_in(&logdir.join("replay")).len(), 2);
    assert!(
        files_in(&logdir)
            .iter()
            .any(|p| p.to_string_lossy().contains("events.out.tfevents.")),
        "no TensorBoard events"
    );
    assert!(logdir.join("best/state.json").is_file());

    // Resume: the workers' Python may move; the env's arguments may not change.
    let python = dreamer_bridge::resolve_python(None).path;
    let python_set = format!("run.python={}", python.display());
    let resume_sets = [sets.as_slice(), &[python_set.as_str()]].concat();
    succeeds(train(marker, &logdir, 600, &resume_sets, &["--resume"]));
    assert_eq!(state(&logdir)["env_steps"], 600);
    let config = std::fs::read_to_string(logdir.join("checkpoint/config.toml")).unwrap();
    assert!(
        config.contains(&format!("python = \"{}\"", python.display())),
        "{config}"
    );
    let changed = [sets.as_slice(), &[r#"run.env_kwargs={"g": 3.7}"#]].concat();
    let stderr = fails(train(marker, &logdir, 800, &changed, &["--resume"]));
    assert!(stderr.contains("run.env_kwargs (saved"), "{stderr}");
    assert_eq!(state(&logdir)["env_steps"], 600);

    // eval starts workers (with pixels for the video: Pendulum's own rgb_array frames).
    let gif = dir.path().join("eval.gif");
    let mut eval = dreamer(marker);
    eval.args(["eval", "--episodes", "2", "--device", "cpu", "--checkpoint"])
        .arg(&logdir)
        .arg("--video")
        .arg(&gif);
    let output = succeeds(eval);
    assert!(
        text(&output.stdout).contains("2 episodes of gym:Pendulum-v1: mean return"),
        "{}",
        text(&output.stdout)
    );
    assert!(std::fs::read(&gif).unwrap().starts_with(b"GIF89a"));

    // Export: the manifest names the env, and the README's Python driver runs the bundle in
    // that very environment.
    let bundle = export(marker, &logdir, &dir.path().join("bundle"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let env = &manifest["environment"];
    assert_eq!(env["package"], "gymnasium");
    assert_eq!(env["id"], "Pendulum-v1");
    assert_eq!(env["kwargs"], serde_json::json!({}));
    assert_eq!(
        env["state_layout"],
        serde_json::json!([{"name": "obs", "shape": [3], "dtype": "float32"}])
    );
    assert_eq!(env["episode_env_steps"], 200);
    assert!(env["versions"]["gymnasium"].is_string(), "{env}");
    assert_eq!(
        manifest["contract"]["task_definition"],
        serde_json::json!({"source": "environment", "version": 1})
    );
    assert_eq!(
        manifest["action"]["physical_high"],
        serde_json::json!([2.0])
    );
    assert!(
        !manifest["training"]["config"]
            .as_object()
            .unwrap()
            .contains_key("run.python"),
        "{}",
        manifest["training"]["config"]
    );
    let episodes = drive_env(&bundle, 2);
    assert_eq!(episodes.len(), 2, "{episodes:?}");
    for (ret, decisions, end) in episodes {
        // 200 env steps with action repeat 2; rewards in [-16.3, 0] per env step.
        assert_eq!((decisions, end.as_str()), (100, "time limit"));
        assert!((-16.3 * 200.0..=0.0).contains(&ret), "{ret}");
    }

    // Loading needs no Python (sizes come from state.json): a Python that does not exist
    // fails only when eval starts the workers.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for file in files_in(&logdir.join("checkpoint")) {
        std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
    }
    let edit_config = |from: &str, to: &str| {
        let path = copy.join("config.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        assert!(config.contains(from), "{config}");
        std::fs::write(&path, config.replace(from, to)).unwrap();
    };
    let eval_copy = || {
        let mut eval = dreamer(marker);
        eval.args(["eval", "--episodes", "1", "--device", "cpu", "--checkpoint"])
            .arg(&copy);
        fails(eval)
    };
    edit_config(
        &format!("python = \"{}\"", python.display()),
        "python = \"/nonexistent/python\"",
    );
    let stderr = eval_copy();
    assert!(
        stderr.contains("cannot start Python `/nonexistent/python`"),
        "{stderr}"
    );
    // Other keyword arguments make another env: refused before any worker starts.
    edit_config("env_kwargs = \"{}\"", "env_kwargs = '{\"g\": 3.7}'");
    let stderr = eval_copy();
    assert!(
        stderr.contains("run.env_kwargs = '{\"g\": 3.7}'")
            && stderr.contains("set run.env_kwargs back"),
        "{stderr}"
    );
    assert!(live_workers(marker).is_empty());
}

#[test]
fn dmc_cartpole_from_pixels_trains_with_mujoco_frames() {
    let marker = "cartpole";
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    // Episodes of 0.5 s (50 physics steps, 13 decisions with repeat 4): about 100 rendered
    // frames in all, at ~30 ms each on this CPU.
    let sets = [
        "model.cnn_depth=2",
        "run.task=dmc:cartpole-swingup",
        "run.obs_mode=pixels",
        r#"run.env_kwargs={"time_limit": 0.5}"#,
        "run.action_repeat=4",
        "collect.prefill=100",
        "eval.every=200",
        "log.checkpoint_every=200",
        "log.openloop_every=100",
    ];
    succeeds(train(
        marker,
        &logdir,
        200,
        &sets,
        &["--preset", "cpu-pixels"],
    ));
    let saved = state(&logdir);
    assert_eq!(saved["pixels"], true);
    assert_eq!(saved["state_size"], 0);
    assert!(saved["updates"].as_u64().unwrap() > 0, "{saved}");
    let env = &saved["env"];
    assert_eq!(env["task"], "dmc:cartpole-swingup");
    assert_eq!(env["kwargs"], serde_json::json!({"time_limit": 0.5}));
    assert_eq!(env["obs_mode"], "pixels");
    assert_eq!(env["pixels"], "physics.render(64, 64, camera_id=0)");
    assert_eq!(env["state_size"], 5);
    assert_eq!(
        (env["max_env_steps"].as_u64(), env["max_decisions"].as_u64()),
        (Some(50), Some(13))
    );
    assert!(env["versions"]["dm-control"].is_string(), "{env}");
    assert_eq!(count_records(&logdir, "eval"), 2);
    // Open-loop predictions of the pixel model, as for the built-in cartpole.
    assert!(logdir.join("openloop.gif").is_file());
    let episodes = files_in(&logdir.join("replay"));
    assert!(
        episodes
            .iter()
            .all(|p| p.to_string_lossy().ends_with("-14.npz")),
        "{episodes:?}"
    );
    // The pixel bundle in its env: dm_control's frames, area-resized as in training.
    let bundle = export(marker, &logdir, &dir.path().join("bundle"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let env = &manifest["environment"];
    assert_eq!(
        (&env["package"], &env["id"], &env["pixels"]),
        (
            &serde_json::json!("dm_control"),
            &serde_json::json!("cartpole-swingup"),
            &serde_json::json!("physics.render(64, 64, camera_id=0)")
        )
    );
    assert_eq!(env["kwargs"], serde_json::json!({"time_limit": 0.5}));
    assert!(manifest["observation"]["state"].is_null());
    let episodes = drive_env(&bundle, 1);
    let (ret, decisions, end) = &episodes[0];
    // Rewards are in [0, 1] per env step, 50 of them.
    assert_eq!((*decisions, end.as_str()), (13, "time limit"));
    assert!((0.0..=50.0).contains(ret), "{ret}");
    assert!(live_workers(marker).is_empty());
}

#[test]
fn an_unknown_env_is_refused_before_any_folder_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("runs").join("deep");
    let stderr = fails(train(
        "unknown",
        &logdir,
        400,
        &["run.task=gym:NoSuchEnv-v9"],
        &[],
    ));
    assert!(
        stderr.contains("gym:NoSuchEnv-v9")
            && stderr.contains("does not know the id `NoSuchEnv-v9`"),
        "{stderr}"
    );
    // A malformed name is refused by the configuration, before any Python.
    let stderr = fails(train(
        "unknown",
        &logdir,
        400,
        &["run.task=dmc:cartpole"],
        &[],
    ));
    assert!(
        stderr.contains("run.task") && stderr.contains("dmc:<domain>-<task>"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("runs").exists(),
        "a folder was left behind"
    );
}

#[test]
fn bad_env_kwargs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("runs").join("deep");
    for (sets, needles) in [
        (
            &["run.task=gym:Pendulum-v1", "run.env_kwargs=[1]"][..],
            &["run.env_kwargs", "`[1]` is an array"][..],
        ),
        (
            &["run.task=gym:Pendulum-v1", "run.env_kwargs={nope"],
            &["run.env_kwargs", "`{nope` is not JSON"],
        ),
        // The built-in tasks take none.
        (
            &[r#"run.env_kwargs={"g": 3.7}"#],
            &["run.env_kwargs", "built-in task `pendulum`"],
        ),
        // Well-formed, but the env has no such argument: its worker says so at start-up.
        (
            &[
                "run.task=gym:Pendulum-v1",
                r#"run.env_kwargs={"nope_arg": 1}"#,
            ],
            &["gym:Pendulum-v1 worker 0 at start-up", "nope_arg"],
        ),
    ] {
        let stderr = fails(train("kwargs", &logdir, 400, sets, &[]));
        for needle in needles {
            assert!(stderr.contains(needle), "{sets:?}: no {needle} in {stderr}");
        }
    }
    assert!(
        !dir.path().join("runs").exists(),
        "a folder was left behind"
    );
}

#[test]
fn own_env_failing_mid_run_keeps_the_checkpoint_and_a_changed_env_is_refused_on_resume() {
    let marker = "own";
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    // Episodes of 50 env steps (25 decisions); a checkpoint every 100 steps.
    let sets = [
        "run.task=gym:trainer_envs:Track-v0",
        r#"run.env_kwargs={"gain": 2.0}"#,
        "eval.every=100",
        "log.checkpoint_every=100",
    ];
    // The collecting env raises at its 150th env step: the last of the third episode.
    let mut broken = train(marker, &logdir, 300, &sets, &[]);
    broken.env(FAIL_AT, "150");
    let stderr = fails(broken);
    for needle in [
        "gym:trainer_envs:Track-v0 worker 0 at step 25 (decisions since reset)",
        "the track env broke at env step 150",
    ] {
        assert!(stderr.contains(needle), "no {needle} in {stderr}");
    }
    // The trainer reaped its workers before it exited.
    assert!(
        live_workers(marker).is_empty(),
        "{:?}",
        live_workers(marker)
    );
    let saved = state(&logdir);
    assert_eq!(
        (saved["env_steps"].as_u64(), saved["episodes"].as_u64()),
        (Some(100), Some(2))
    );
    assert_eq!(saved["env"]["kwargs"], serde_json::json!({"gain": 2.0}));
    assert_eq!(
        saved["env"]["state_fields"],
        serde_json::json!(["obs[0]", "obs[1]"])
    );
    assert_eq!(files_in(&logdir.join("replay")).len(), 2);

    // The same env with another action bound is another env for these weights.
    let mut changed = train(marker, &logdir, 300, &sets, &["--resume"]);
    changed.env(ACTION_HIGH, "2.0");
    let stderr = fails(changed);
    assert!(
        stderr.contains("gym:trainer_envs:Track-v0 now describes itself differently")
            && stderr.contains("action_high: [1.0] -> [2.0]"),
        "{stderr}"
    );
    assert_eq!(state(&logdir), saved);

    // Fixed, the run resumes from its checkpoint and replay.
    succeeds(train(marker, &logdir, 300, &sets, &["--resume"]));
    let resumed = state(&logdir);
    assert_eq!(
        (resumed["env_steps"].as_u64(), resumed["episodes"].as_u64()),
        (Some(300), Some(6))
    );
    assert!(live_workers(marker).is_empty());
}

#[test]
fn ctrl_c_ends_the_trainer_and_its_workers() {
    let marker = "ctrl-c";
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("run");
    let sets = [
        "run.task=gym:Pendulum-v1",
        "run.envs=2",
        "eval.every=0",
        "log.checkpoint_every=0",
    ];
    let mut command = train(marker, &logdir, 10_000_000, &sets, &[]);
    // As a terminal runs it: its own foreground process group, SIGINT not ignored (a test
    // harness started in the background may pass SIGINT on ignored).
    command.process_group(0).stdout(std::process::Stdio::null());
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe, runs.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let started = eventually(Duration::from_secs(30), || live_workers(marker).len() == 2);
    let workers = live_workers(marker);
    let pid = child.id() as i32;
    if started {
        // Let it collect for a moment, then Ctrl-C: SIGINT to the group.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on the child's process group, which this test created.
        unsafe { libc::kill(-pid, libc::SIGINT) };
    }
    let mut status = None;
    let ended = eventually(Duration::from_secs(15), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(started, "the workers did not start: {workers:?}");
    assert!(ended, "the trainer did not end within 15 s of SIGINT");
    assert_eq!(status.unwrap().signal(), Some(libc::SIGINT));
    // The kernel ends the workers with their parent (PR_SET_PDEATHSIG); none runs on.
    assert!(
        eventually(Duration::from_secs(5), || live_workers(marker).is_empty()),
        "workers {:?} outlived the trainer",
        live_workers(marker)
    );
}
