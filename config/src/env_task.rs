//! The configuration's view of environments run by the Python bridge (`gym:<id>`,
//! `dmc:<domain>-<task>`): the form of their names and of `run.env_kwargs`. Whether such an env
//! exists is known only once its workers start; built-in names are checked by dreamer-tasks.

use serde_json::{Map, Value};

/// Prefixes of the tasks the bridge runs.
pub const BRIDGED_PREFIXES: [&str; 2] = ["gym:", "dmc:"];

/// `run.env_kwargs` when none are given.
pub const NO_KWARGS: &str = "{}";

/// True for a task name of the bridge (`gym:...` or `dmc:...`).
pub fn is_bridged(task: &str) -> bool {
    BRIDGED_PREFIXES
        .iter()
        .any(|prefix| task.starts_with(prefix))
}

/// Checks the form of a bridged task name; `Err` says what form was expected.
pub(crate) fn check_bridged_name(task: &str) -> Result<(), String> {
    if let Some(id) = task.strip_prefix("gym:") {
        if id.is_empty() || id.trim() != id || id.chars().any(char::is_control) {
            return Err(format!(
                "`{task}` is not gym:<registered id>, e.g. gym:Pendulum-v1 or \
                 gym:my_pkg.envs:MyRobotEnv-v0"
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
            _ => Err(format!(
                "`{task}` is not dmc:<domain>-<task>, e.g. dmc:cartpole-swingup"
            )),
        };
    }
    Err(format!(
        "`{task}` is not a bridged task (gym:<id> or dmc:<domain>-<task>)"
    ))
}

/// Parses `run.env_kwargs`: a JSON object. `Err` names the value and what is wrong with it.
pub fn parse_env_kwargs(text: &str) -> Result<Map<String, Value>, String> {
    let kind = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => return Ok(map),
        Ok(Value::Null) => "null",
        Ok(Value::Bool(_)) => "a boolean",
        Ok(Value::Number(_)) => "a number",
        Ok(Value::String(_)) => "a string",
        Ok(Value::Array(_)) => "an array",
        Err(error) => return Err(format!("`{text}` is not JSON ({error})")),
    };
    Err(format!(
        "`{text}` is {kind}; expected a JSON object of keyword arguments, e.g. \
         {{\"max_episode_steps\": 500}}"
    ))
}

/// True when two `run.env_kwargs` texts give the same arguments (spacing and key order
/// aside); texts that are not JSON compare as text.
pub fn same_env_kwargs(a: &str, b: &str) -> bool {
    match (parse_env_kwargs(a), parse_env_kwargs(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridged_names_are_checked_for_form_only() {
        for good in [
            "gym:Pendulum-v1",
            "gym:my_pkg.envs:MyRobotEnv-v0",
            "gym:ALE/Pong-v5",
            "dmc:cartpole-swingup",
            "dmc:ball_in_cup-catch",
        ] {
            assert!(is_bridged(good), "{good}");
            assert_eq!(check_bridged_name(good), Ok(()), "{good}");
        }
        for bad in [
            "gym:",
            "gym: Pendulum-v1",
            "gym:Pendulum-v1\n",
            "dmc:cartpole",
            "dmc:-swingup",
            "dmc:cartpole-",
            "dmc:cart pole-swingup",
            "dmc:cartpole-swing-up",
        ] {
            let error = check_bridged_name(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
        assert!(!is_bridged("pendulum"));
    }

    #[test]
    fn kwargs_are_a_json_object() {
        let map = parse_env_kwargs(r#"{"max_episode_steps": 50, "g": 9.81}"#).unwrap();
        assert_eq!(map["max_episode_steps"], 50);
        assert!(parse_env_kwargs(NO_KWARGS).unwrap().is_empty());
        for (bad, says) in [
            ("[1, 2]", "an array"),
            ("3", "a number"),
            ("\"x\"", "a string"),
            ("{x: 1}", "not JSON"),
            ("", "not JSON"),
        ] {
            let error = parse_env_kwargs(bad).unwrap_err();
            assert!(
                error.contains(&format!("`{bad}`")) && error.contains(says),
                "{error}"
            );
        }
        assert!(same_env_kwargs(
            r#"{"a": 1, "b": [2]}"#,
            r#"{"b":[2],"a":1}"#
        ));
        assert!(!same_env_kwargs(r#"{"a": 1}"#, r#"{"a": 2}"#));
        assert!(!same_env_kwargs("{nope", "{ nope"));
    }
}
