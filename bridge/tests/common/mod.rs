//! What the bridge tests share: options that put the test envs on PYTHONPATH, and the check
//! that no worker process is left behind.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use dreamer_bridge::{BridgeOptions, BridgeVecEnv};
use dreamer_tasks::{EnvOptions, ObsMode};
use serde_json::Value;

/// `bridge/tests/envs`: the `test_envs` package and the stand-ins for missing packages.
pub fn envs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/envs")
}

/// Default lookup of the Python (`$DREAMER_PYTHON`, else `.deps/envs/bin/python`, else
/// python3), with `test_envs` importable and no bytecode written into the source tree.
pub fn options(kwargs: Value) -> BridgeOptions {
    with_pythonpath(kwargs, vec![envs_dir()])
}

pub fn with_pythonpath(kwargs: Value, paths: Vec<PathBuf>) -> BridgeOptions {
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object: {kwargs}");
    };
    let joined = std::env::join_paths(paths).expect("PYTHONPATH entries without ':'");
    BridgeOptions {
        kwargs,
        env: vec![
            (OsString::from("PYTHONPATH"), joined),
            (
                OsString::from("PYTHONDONTWRITEBYTECODE"),
                OsString::from("1"),
            ),
        ],
        start_timeout: Duration::from_secs(60),
        step_timeout: Duration::from_secs(10),
        ..BridgeOptions::default()
    }
}

pub fn state(action_repeat: u32) -> EnvOptions {
    EnvOptions {
        obs_mode: ObsMode::State,
        action_repeat,
    }
}

/// Builds a bridge or fails with the bridge's own message (which says what to install).
pub fn bridge(task: &str, env: EnvOptions, n: usize, options: &BridgeOptions) -> BridgeVecEnv {
    BridgeVecEnv::new(task, env, n, options).unwrap_or_else(|e| panic!("{e}"))
}

/// True while `pid` is a live (not zombie) child of this test process.
fn is_our_live_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (state, ppid) = (fields.first().copied(), fields.get(1).copied());
    ppid == Some(&std::process::id().to_string()) && state != Some("Z")
}

/// True while `pid` exists in any state, zombie included, as a child of this process.
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return false;
    };
    rest.split_whitespace().nth(1) == Some(&std::process::id().to_string())
}

/// Every pid was a worker we started and is now gone: not running and reaped (no zombie).
pub fn assert_reaped(pids: &[u32]) {
    assert!(!pids.is_empty());
    for &pid in pids {
        assert!(
            !is_our_child(pid),
            "worker {pid} is still a child of the test process (running or zombie)"
        );
    }
}

pub fn assert_running(pids: &[u32]) {
    for &pid in pids {
        assert!(is_our_live_child(pid), "worker {pid} is not running");
    }
}
