//! Workers that crash, raise, hang or send bad values; envs and Pythons that cannot be
//! started. Each error names the env, the worker, the step and the value, and no worker
//! process is left behind.

mod common;

use std::time::{Duration, Instant};

use common::{assert_reaped, bridge, envs_dir, options, state, with_pythonpath};
use dreamer_bridge::{BridgeError, BridgeOptions, BridgeVecEnv, Fault, Stage};
use serde_json::json;

const MISBEHAVE: &str = "gym:test_envs:Misbehave-v0";

/// Two workers; the one reset with seed 5 (worker 1) misbehaves as `mode` at its 2nd step.
/// Returns the error of the step and the workers' pids.
fn misbehave(mode: &str, tune: impl FnOnce(&mut BridgeOptions)) -> (BridgeError, Vec<u32>) {
    let mut opts = options(json!({ "plan": { "5": mode }, "at": 2 }));
    tune(&mut opts);
    let mut env = bridge(MISBEHAVE, state(1), 2, &opts);
    let pids = env.worker_pids();
    env.reset_all(&[4, 5]).unwrap();
    env.step_all(&[0.1, 0.2]).unwrap();
    let error = env.step_all(&[0.1, 0.2]).unwrap_err();
    // Every worker was ended and reaped at the error, before the bridge is dropped.
    assert_reaped(&pids);
    let again = env.step_all(&[0.1, 0.2]).unwrap_err().to_string();
    assert!(again.contains("stopped after an earlier error"), "{again}");
    (error, pids)
}

fn assert_names(error: &BridgeError, expected_fault: &str) -> String {
    let text = error.to_string();
    match error {
        BridgeError::Worker {
            task,
            worker,
            stage,
            ..
        } => {
            assert_eq!(task, MISBEHAVE);
            assert_eq!(*worker, 1);
            assert_eq!(*stage, Stage::Step(2));
        }
        other => panic!("expected a worker error, got {other:?}"),
    }
    assert!(
        text.starts_with("gym:test_envs:Misbehave-v0 worker 1 at step 2 (decisions since reset)"),
        "{text}"
    );
    assert!(text.contains(expected_fault), "{text}");
    text
}

#[test]
fn a_crashing_worker_is_reported_with_its_exit_status() {
    let (error, _) = misbehave("crash", |_| {});
    assert!(matches!(
        &error,
        BridgeError::Worker {
            fault: Fault::Exited { .. },
            ..
        }
    ));
    assert_names(&error, "exit status 3");
}

#[test]
fn an_exception_is_reported_with_the_traceback() {
    let (error, _) = misbehave("raise", |_| {});
    let text = assert_names(&error, "RuntimeError: the test env raised at step 2");
    assert!(text.contains("Python traceback"), "{text}");
    assert!(text.contains("test_envs/__init__.py"), "{text}");
}

#[test]
fn a_hanging_worker_times_out_and_is_killed() {
    let started = Instant::now();
    let (error, _) = misbehave("hang", |o| o.step_timeout = Duration::from_millis(500));
    assert_names(
        &error,
        "no reply within 0.500 s (BridgeOptions::step_timeout)",
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn nan_in_an_observation_is_named_with_its_value() {
    let (error, _) = misbehave("nan", |_| {});
    assert_names(
        &error,
        "observation field `obs[1]` is nan, expected a finite number",
    );
}

#[test]
fn a_wrong_shape_is_named_against_the_space() {
    let (error, _) = misbehave("shape", |_| {});
    assert_names(
        &error,
        "observation field `obs` has shape (4,), the space declares (3,)",
    );
}

#[test]
fn a_wrong_dtype_is_named_against_the_space() {
    let (error, _) = misbehave("dtype", |_| {});
    assert_names(
        &error,
        "observation field `obs` has dtype float64, the space declares float32",
    );
}

#[test]
fn an_error_is_reported_at_once_while_another_worker_hangs() {
    let opts = options(json!({ "plan": { "4": "hang", "5": "raise" }, "at": 1 }));
    let mut env = bridge(MISBEHAVE, state(1), 2, &opts);
    let pids = env.worker_pids();
    env.reset_all(&[4, 5]).unwrap();
    let started = Instant::now();
    let error = env.step_all(&[0.0, 0.0]).unwrap_err().to_string();
    assert!(
        error.starts_with("gym:test_envs:Misbehave-v0 worker 1 at step 1"),
        "{error}"
    );
    assert!(
        error.contains("RuntimeError: the test env raised at step 1"),
        "{error}"
    );
    // Well before the 10 s step deadline; the hanging worker 0 was killed too.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_reaped(&pids);
}

#[test]
fn sigint_ends_a_worker_quietly() {
    let mut env = bridge(MISBEHAVE, state(1), 1, &options(json!({})));
    let pids = env.worker_pids();
    env.reset_all(&[0]).unwrap();
    // SAFETY: kill(2) on a pid this test started and has not reaped; no memory is touched.
    let sent = unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let error = env.step_all(&[0.0]).unwrap_err().to_string();
    assert!(error.contains("exit status 130"), "{error}");
    assert!(!error.contains("KeyboardInterrupt"), "{error}");
    assert_reaped(&pids);
}

fn start_error(task: &str, opts: &BridgeOptions) -> String {
    match BridgeVecEnv::new(task, state(1), 2, opts) {
        Ok(_) => panic!("{task} started"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_discrete_action_space_is_refused_at_start_up() {
    let error = start_error("gym:test_envs:DiscreteActions-v0", &options(json!({})));
    // Both workers refuse; whichever error arrives first is the one reported.
    assert!(
        error.starts_with("gym:test_envs:DiscreteActions-v0 worker "),
        "{error}"
    );
    assert!(
        error.contains(" at start-up: action space Discrete(3) is not supported"),
        "{error}"
    );
}

#[test]
fn an_unknown_id_is_refused_with_ids_like_it() {
    let error = start_error("gym:Pendulum-v9", &options(json!({})));
    assert!(
        error.contains("gymnasium does not know the id `Pendulum-v9`"),
        "{error}"
    );
    assert!(
        error.contains("registered ids like it: Pendulum-v1"),
        "{error}"
    );
    let error = start_error("gym:no_such_pkg.envs:Robot-v0", &options(json!({})));
    assert!(
        error.contains("cannot import module `no_such_pkg.envs`"),
        "{error}"
    );
}

#[test]
fn a_missing_python_names_the_path_and_the_fix() {
    let mut opts = options(json!({}));
    opts.python = Some("/nonexistent/dreamer/python3".into());
    let error = start_error("gym:Pendulum-v1", &opts);
    assert!(
        error.contains("cannot start Python `/nonexistent/dreamer/python3`"),
        "{error}"
    );
    assert!(error.contains("scripts/fetch-deps"), "{error}");
    assert!(error.contains("BridgeOptions::python"), "{error}");
}

#[test]
fn missing_packages_are_named_with_the_install_command() {
    let missing = envs_dir().join("missing_packages");
    let opts = with_pythonpath(json!({}), vec![missing.clone()]);
    let error = start_error("gym:Pendulum-v1", &opts);
    assert!(error.contains("cannot import gymnasium"), "{error}");
    assert!(
        error.contains(r#"pip install "gymnasium[classic-control,mujoco]==1.4.0""#),
        "{error}"
    );
    assert!(error.contains("scripts/fetch-deps"), "{error}");
    let opts = with_pythonpath(json!({}), vec![missing]);
    let error = start_error("dmc:cartpole-swingup", &opts);
    assert!(error.contains("cannot import dm_control"), "{error}");
    assert!(
        error.contains("pip install dm-control==1.0.50 mujoco==3.17.0"),
        "{error}"
    );
}

#[test]
fn malformed_names_and_options_are_refused_before_any_process() {
    let opts = options(json!({}));
    let error = start_error("pendulum", &opts);
    assert!(
        error.contains("gym:<Gymnasium id> or dmc:<domain>-<task>"),
        "{error}"
    );
    let error = start_error("dmc:cartpole", &opts);
    assert!(error.contains("dmc:<domain>-<task>"), "{error}");
    let mut zero = opts.clone();
    zero.step_timeout = Duration::ZERO;
    let error = start_error("gym:Pendulum-v1", &zero);
    assert!(error.contains("step_timeout"), "{error}");
}
