//! What a bridge is built from: the task name, the env's keyword arguments, the Python that
//! runs the workers and the deadlines.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::BridgeError;

/// Environment variable naming the Python interpreter of the workers.
pub const PYTHON_ENV_VAR: &str = "DREAMER_PYTHON";

/// `.deps/envs/bin/python` of this workspace, fixed at build time by `.cargo/config.toml`
/// (`scripts/fetch-deps` creates it).
const WORKSPACE_PYTHON: Option<&str> = option_env!("DREAMER_ENVS_PYTHON");

/// Bridged task names start with one of these.
pub const TASK_PREFIXES: [&str; 2] = ["gym:", "dmc:"];

/// True for a task name the bridge serves (`gym:<id>` or `dmc:<domain>-<task>`).
pub fn is_bridge_task(task: &str) -> bool {
    TASK_PREFIXES.iter().any(|prefix| task.starts_with(prefix))
}

/// How to start and drive the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeOptions {
    /// The interpreter; None looks it up (see [`resolve_python`]).
    pub python: Option<PathBuf>,
    /// Keyword arguments of `gymnasium.make(id, **kwargs)` or
    /// `suite.load(domain, task, task_kwargs=kwargs)`.
    pub kwargs: Map<String, Value>,
    /// From spawning the worker to its spec, and its first reset (renderers start lazily).
    pub start_timeout: Duration,
    /// One `reset_all`, `reset_one` or `step_all` round, all workers together.
    pub step_timeout: Duration,
    /// Seconds per env step when the env tells neither `unwrapped.dt` nor `render_fps`
    /// (overrides what the env tells).
    pub physics_dt: Option<f64>,
    /// Extra environment variables of the workers (PYTHONPATH, MUJOCO_GL, ...).
    pub env: Vec<(OsString, OsString)>,
    /// Copy the workers' stderr lines to this process's stderr (prefixed with the worker).
    pub echo_stderr: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            python: None,
            kwargs: Map::new(),
            start_timeout: Duration::from_secs(60),
            step_timeout: Duration::from_secs(10),
            physics_dt: None,
            env: Vec::new(),
            echo_stderr: false,
        }
    }
}

/// Parses the task's keyword arguments, a JSON object such as `{"max_episode_steps": 500}`.
pub fn parse_kwargs(text: &str) -> Result<Map<String, Value>, BridgeError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(BridgeError::InvalidOption {
            option: "kwargs",
            reason: format!("`{text}` is {}, expected a JSON object", kind_of(&other)),
        }),
        Err(error) => Err(BridgeError::InvalidOption {
            option: "kwargs",
            reason: format!("`{text}` is not JSON: {error}"),
        }),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the form of a bridged task name before any process starts.
pub(crate) fn check_task_name(task: &str) -> Result<(), BridgeError> {
    let invalid = |reason: String| BridgeError::InvalidTask {
        task: task.to_string(),
        reason,
    };
    if let Some(id) = task.strip_prefix("gym:") {
        if id.trim().is_empty() || id.trim() != id {
            return Err(invalid(
                "expected gym:<registered id>, e.g. gym:Pendulum-v1 or gym:my_pkg.envs:MyEnv-v0"
                    .into(),
            ));
        }
        return Ok(());
    }
    if let Some(name) = task.strip_prefix("dmc:") {
        let valid = |part: &str| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        return match name.split_once('-') {
            Some((domain, task_name)) if valid(domain) && valid(task_name) => Ok(()),
            _ => Err(invalid(
                "expected dmc:<domain>-<task>, e.g. dmc:cartpole-swingup".into(),
            )),
        };
    }
    Err(invalid(
        "a bridged task is gym:<Gymnasium id> or dmc:<domain>-<task>".into(),
    ))
}

/// The interpreter and how it was found (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct PythonChoice {
    pub path: PathBuf,
    pub lookup: String,
}

/// The workers' Python: `explicit`, else `$DREAMER_PYTHON`, else this workspace's
/// `.deps/envs/bin/python` when it exists, else `python3` on PATH.
pub fn resolve_python(explicit: Option<&Path>) -> PythonChoice {
    if let Some(path) = explicit {
        return PythonChoice {
            path: path.to_path_buf(),
            lookup: "BridgeOptions::python".into(),
        };
    }
    if let Some(path) = std::env::var_os(PYTHON_ENV_VAR).filter(|p| !p.is_empty()) {
        return PythonChoice {
            path: PathBuf::from(path),
            lookup: format!("${PYTHON_ENV_VAR}"),
        };
    }
    let workspace = WORKSPACE_PYTHON.map(PathBuf::from);
    if let Some(path) = workspace.as_ref().filter(|p| p.exists()) {
        return PythonChoice {
            path: path.clone(),
            lookup: "the workspace's .deps/envs (scripts/fetch-deps)".into(),
        };
    }
    let missing = match &workspace {
        Some(path) => format!(", {} is absent", path.display()),
        None => String::new(),
    };
    PythonChoice {
        path: PathBuf::from("python3"),
        lookup: format!("python3 on PATH (${PYTHON_ENV_VAR} unset{missing})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_are_checked_before_any_process() {
        for good in [
            "gym:Pendulum-v1",
            "gym:my_pkg.envs:MyRobotEnv-v0",
            "dmc:cartpole-swingup",
            "dmc:ball_in_cup-catch",
            "dmc:cartpole-swingup_sparse",
        ] {
            assert!(check_task_name(good).is_ok(), "{good}");
            assert!(is_bridge_task(good));
        }
        for bad in [
            "pendulum",
            "gym:",
            "gym: Pendulum-v1",
            "dmc:cartpole",
            "dmc:-swingup",
            "dmc:cartpole-",
            "dmc:cart pole-swingup",
        ] {
            let error = check_task_name(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
        assert!(!is_bridge_task("pendulum"));
    }

    #[test]
    fn kwargs_must_be_an_object() {
        let map = parse_kwargs(r#"{"max_episode_steps": 50, "g": 9.81}"#).unwrap();
        assert_eq!(map["max_episode_steps"], 50);
        let error = parse_kwargs("[1, 2]").unwrap_err().to_string();
        assert!(
            error.contains("[1, 2]") && error.contains("an array"),
            "{error}"
        );
        let error = parse_kwargs("{nope").unwrap_err().to_string();
        assert!(
            error.contains("{nope") && error.contains("not JSON"),
            "{error}"
        );
    }

    #[test]
    fn an_explicit_python_wins() {
        let choice = resolve_python(Some(Path::new("/opt/py/bin/python")));
        assert_eq!(choice.path, PathBuf::from("/opt/py/bin/python"));
        assert_eq!(choice.lookup, "BridgeOptions::python");
    }
}
