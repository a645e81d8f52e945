//! The `dreamer-rt` binary on test bundles.

mod common;

use std::process::Command;

use common::{Faults, Sizes, Weights};
#[cfg(feature = "sim")]
use dreamer_cli::testing::GoneStdout;
use dreamer_cli::testing::{closed_pipe, full_device, run_without_panic};
#[cfg(feature = "sim")]
use dreamer_wire::report::{RunSummary, read_report};

fn dreamer_rt(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pendulum_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_bundle(
        dir.path(),
        &Weights::random(Sizes::pendulum(), 3),
        Faults::default(),
    );
    dir
}

#[cfg(feature = "sim")]
#[test]
fn run_drives_the_task_in_closed_loop_and_reports_latency() {
    let dir = pendulum_bundle();
    let path = dir.path().to_str().unwrap();
    let args = [
        "run",
        path,
        "--episodes",
        "2",
        "--seed",
        "5",
        "--rate-hz",
        "0",
        "--max-decisions",
        "30",
    ];
    let (ok, text) = dreamer_rt(&args);
    assert!(ok, "{text}");
    assert!(text.contains("episode 0 (seed 5): return"), "{text}");
    assert!(text.contains("episode 1 (seed 6): return"), "{text}");
    assert!(text.contains("over 30 decisions, 0 faults"), "{text}");
    assert!(
        text.contains("agent step") && text.contains("p99.9="),
        "{text}"
    );
    // Same seeds, same deterministic policy: the same returns.
    let (_, again) = dreamer_rt(&args);
    let returns = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("episode"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(returns(&text), returns(&again));

    // Explicit reset seeds reproduce the same episodes.
    let (ok, explicit) = dreamer_rt(&[
        "run",
        path,
        "--env-seeds",
        "5,6",
        "--rate-hz",
        "0",
        "--max-decisions",
        "30",
    ]);
    assert!(ok, "{explicit}");
    assert_eq!(returns(&text), returns(&explicit));

    // At a fixed rate the deadlines are reported.
    let (ok, text) = dreamer_rt(&[
        "run",
        path,
        "--rate-hz",
        "200",
        "--max-decisions",
        "20",
        "--prime-lead-us",
        "1000",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("deadline misses"), "{text}");
}

#[cfg(feature = "sim")]
#[test]
fn run_writes_the_returns_it_prints_as_a_typed_summary() {
    let dir = pendulum_bundle();
    let summary_path = dir.path().join("run.json");
    let (ok, text) = dreamer_rt(&[
        "run",
        dir.path().to_str().unwrap(),
        "--env-seeds",
        "3,4",
        "--rate-hz",
        "0",
        "--max-decisions",
        "20",
        "--summary",
        summary_path.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let summary: RunSummary = read_report(&summary_path, "run summary").unwrap();
    assert_eq!(summary.task, "pendulum");
    assert_eq!(summary.episodes.len(), 2);
    for (index, (episode, seed)) in summary.episodes.iter().zip([3, 4]).enumerate() {
        assert_eq!(
            (episode.seed, episode.decisions, episode.faults),
            (seed, 20, 0)
        );
        let line = format!(
            "episode {index} (seed {seed}): return {:.3} over 20 decisions",
            episode.episode_return
        );
        assert!(text.contains(&line), "missing `{line}`: {text}");
    }
    let mean = (summary.episodes[0].episode_return + summary.episodes[1].episode_return) / 2.0;
    assert!((summary.mean_return - mean).abs() < 1e-12, "{summary:?}");
}

#[cfg(not(feature = "sim"))]
#[test]
fn run_without_the_simulation_says_what_a_device_uses() {
    let dir = pendulum_bundle();
    let (ok, text) = dreamer_rt(&["run", dir.path().to_str().unwrap(), "--episodes", "2"]);
    assert!(!ok);
    assert!(
        text.contains("`sim`") && text.contains("dreamer-rt serve"),
        "{text}"
    );
}

#[cfg(feature = "sim")]
#[test]
fn run_refuses_a_task_that_does_not_fit_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    common::write_bundle(
        dir.path(),
        &Weights::random(Sizes::state(), 3),
        Faults::default(),
    );
    let (ok, text) = dreamer_rt(&["run", dir.path().to_str().unwrap(), "--rate-hz", "0"]);
    assert!(!ok);
    assert!(
        text.contains("pendulum") && text.contains("action"),
        "{text}"
    );
}

/// A bundle of a Python environment (`gym:` / `dmc:` task, the manifest's `environment`):
/// `info` names the env; `run`, which drives built-in tasks, refuses it and says what does.
#[cfg(feature = "sim")]
#[test]
fn run_refuses_a_python_environment_and_info_names_it() {
    let dir = pendulum_bundle();
    let mut manifest = common::read_manifest(dir.path());
    manifest.task.name = "gym:Pendulum-v1".into();
    manifest.contract.task_definition.source = dreamer_bundle::ENVIRONMENT_SOURCE.into();
    manifest.environment = Some(dreamer_bundle::EnvironmentInfo {
        package: "gymnasium".into(),
        id: "Pendulum-v1".into(),
        kwargs: serde_json::Map::from_iter([("g".to_string(), serde_json::json!(9.81))]),
        state_layout: vec![dreamer_bundle::LayoutInfo {
            name: "obs".into(),
            shape: vec![3],
            dtype: "float32".into(),
        }],
        action_space: "Box(-2.0, 2.0, (1,), float32)".into(),
        pixels: None,
        episode_env_steps: 200,
        versions: [("gymnasium".to_string(), "1.4.0".to_string())].into(),
    });
    common::write_manifest(dir.path(), &manifest);
    let path = dir.path().to_str().unwrap();
    let (ok, text) = dreamer_rt(&["info", path]);
    assert!(ok, "{text}");
    assert!(
        text.contains(r#"env       gymnasium `Pendulum-v1` kwargs {"g": 9.81} (200 env steps"#)
            && text.contains("obs [3] float32"),
        "{text}"
    );
    let (ok, text) = dreamer_rt(&["run", path, "--rate-hz", "0"]);
    assert!(!ok);
    assert!(
        text.contains("task `gym:Pendulum-v1` is a Python environment (gymnasium `Pendulum-v1`")
            && text.contains("bridge/python/drive_env.py"),
        "{text}"
    );
}

/// `--rate-hz -3` (not only `--rate-hz=-3`) reaches the check, which names the flag, before
/// anything is printed about running.
#[cfg(feature = "sim")]
#[test]
fn run_refuses_a_negative_rate_naming_the_flag() {
    let bundle = pendulum_bundle();
    let (ok, text) = dreamer_rt(&["run", bundle.path().to_str().unwrap(), "--rate-hz", "-3"]);
    assert!(!ok);
    assert!(text.contains("--rate-hz: rate -3 Hz"), "{text}");
    assert!(!text.contains("running at"), "{text}");
}

#[test]
fn bench_reports_every_graph_the_step_and_the_overhead() {
    let dir = pendulum_bundle();
    let (ok, text) = dreamer_rt(&[
        "bench",
        dir.path().to_str().unwrap(),
        "--steps",
        "100",
        "--warmup",
        "5",
    ]);
    assert!(ok, "{text}");
    for label in [
        "encoder",
        "rssm_obs_step",
        "rssm_img_step",
        "actor",
        "policy_step",
        "agent step (fused)",
        "bare session.run",
        "agent overhead",
        "agent step (separate)",
        "CPUExecutionProvider",
    ] {
        assert!(text.contains(label), "missing {label}: {text}");
    }
}

#[test]
fn info_describes_the_manifest_and_catches_tampering() {
    let dir = pendulum_bundle();
    let path = dir.path().to_str().unwrap();
    let (ok, text) = dreamer_rt(&["info", path]);
    assert!(ok, "{text}");
    assert!(text.contains("task      pendulum"), "{text}");
    assert!(text.contains("state: 3 values"), "{text}");
    assert!(text.contains("sha256 ok"), "{text}");
    std::fs::write(dir.path().join("encoder.onnx"), b"garbage").unwrap();
    let (ok, text) = dreamer_rt(&["info", path]);
    assert!(!ok);
    assert!(text.contains("encoder.onnx"), "{text}");
}

#[test]
fn doctor_checks_library_providers_and_bundle() {
    let dir = pendulum_bundle();
    let (ok, text) = dreamer_rt(&["doctor", dir.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("ONNX Runtime 1."), "{text}");
    assert!(text.contains("CPUExecutionProvider"), "{text}");
    assert!(text.contains("policy loaded"), "{text}");

    let (ok, text) = dreamer_rt(&["--ort-lib", "/nonexistent/libonnxruntime.so", "doctor"]);
    assert!(!ok);
    assert!(
        text.contains("FAIL") && text.contains("scripts/fetch-deps"),
        "{text}"
    );
}

/// `dreamer-rt ARGS` with stdout on `stdout`, checked for a panic; returns the exit status
/// and stderr.
fn with_stdout(
    args: &[&str],
    stdout: std::process::Stdio,
    case: &str,
) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer-rt"));
    run_without_panic(command.args(args), stdout, case)
}

#[test]
fn a_full_or_closed_stdout_is_no_panic() {
    let dir = pendulum_bundle();
    let path = dir.path().to_str().unwrap();
    // A full device loses the output: an error that says so, never a panic (exit 101).
    let (status, stderr) = with_stdout(&["info", path], full_device(), "info >/dev/full");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("stdout") && stderr.contains("No space left"),
        "{stderr}"
    );
    // A closed pipe (`dreamer-rt info b | true`) ends `info` quietly.
    with_stdout(&["info", path], closed_pipe(), "info | true");
}

#[cfg(feature = "sim")]
#[test]
fn run_writes_its_summary_whatever_happens_to_stdout() {
    let dir = pendulum_bundle();
    for gone in GoneStdout::ALL {
        let name = gone.name();
        let summary_path = dir.path().join(format!("run-{name}.json"));
        with_stdout(
            &[
                "run",
                dir.path().to_str().unwrap(),
                "--episodes",
                "2",
                "--rate-hz",
                "0",
                "--max-decisions",
                "10",
                "--summary",
                summary_path.to_str().unwrap(),
            ],
            gone.stdio(),
            name,
        );
        let summary: RunSummary = read_report(&summary_path, "run summary").unwrap();
        assert_eq!(summary.episodes.len(), 2, "{name}");
    }
}
