//! What `dreamer train --resume` may change in a run's saved configuration: one rule for
//! `--preset`, `--config` and `--set`.

use std::path::Path;

use crate::{
    Config, ConfigError, apply_file, apply_overrides, from_table, preset_table, read,
    same_env_kwargs,
};

/// Keys a resumed run takes from the command line: the length of the run, the cadence (and
/// start states) of evaluations, open-loop videos and checkpoints, and where the Python of a bridged task's
/// workers is (not what they run). Every other key changes the networks, the env, the data
/// collected or the updates, which the checkpoint was made under.
pub const RESUMABLE_KEYS: [&str; 7] = [
    "run.steps",
    "run.python",
    "eval.every",
    "eval.episodes",
    "eval.same_starts",
    "log.checkpoint_every",
    "log.openloop_every",
];

/// The same value for `key`: equal TOML values, or `run.env_kwargs` texts that give the same
/// keyword arguments (`{"a": 1}` and `{"a":1}`).
fn same_value(key: &str, old: &toml::Value, new: &toml::Value) -> bool {
    match (key, old.as_str(), new.as_str()) {
        ("run.env_kwargs", Some(old), Some(new)) => same_env_kwargs(old, new),
        _ => old == new,
    }
}

/// A key whose given value differs from the one the run was saved with.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange {
    pub key: String,
    /// TOML text of the value in the checkpoint's `config.toml`.
    pub saved: String,
    /// TOML text of the value the command line gives.
    pub given: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "--resume cannot change {}: the checkpoint was trained with them. A resumed run \
         changes only {}; to change the others start a new run (another --logdir, or \
         --overwrite)",
        describe(.0),
        RESUMABLE_KEYS.join(", ")
    )]
    Fixed(Vec<KeyChange>),
}

/// "model.units (saved 32, given 64), train.batch (saved 16, given 50)".
fn describe(changes: &[KeyChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{} (saved {}, given {})", c.key, c.saved, c.given))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Config {
    /// The configuration a resumed run continues with. `self` is the one its checkpoint
    /// saved; the command line gives a configuration the usual way (`preset`, then the
    /// keys of `file`, then `overrides`), except that without a preset the saved
    /// configuration takes the preset's place. Keys of [`RESUMABLE_KEYS`] take the given
    /// value; any other key whose given value differs is an error naming each such key with
    /// both values.
    pub fn for_resume(
        &self,
        preset: Option<&str>,
        file: Option<&Path>,
        overrides: &[String],
    ) -> Result<Config, ResumeError> {
        let saved = self.to_table();
        let mut given = match preset {
            Some(name) => preset_table(name)?,
            None => saved.clone(),
        };
        if let Some(path) = file {
            let text = read(path)?;
            apply_file(&mut given, &text, &path.display().to_string())?;
        }
        apply_overrides(&mut given, overrides)?;

        let mut merged = saved.clone();
        let mut fixed = Vec::new();
        for (section, values) in &saved {
            let Some(values) = values.as_table() else {
                continue;
            };
            for (name, old) in values {
                let key = format!("{section}.{name}");
                let new = given.get(section).and_then(|s| s.get(name)).unwrap_or(old);
                if same_value(&key, old, new) {
                    continue;
                }
                if RESUMABLE_KEYS.contains(&key.as_str()) {
                    if let Some(slot) = merged
                        .get_mut(section)
                        .and_then(|s| s.as_table_mut())
                        .and_then(|s| s.get_mut(name))
                    {
                        *slot = new.clone();
                    }
                } else {
                    fixed.push(KeyChange {
                        key,
                        saved: old.to_string(),
                        given: new.to_string(),
                    });
                }
            }
        }
        if !fixed.is_empty() {
            return Err(ResumeError::Fixed(fixed));
        }
        Ok(from_table(merged, "configuration")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> Config {
        Config::resolve("cpu-state", None, &["model.units=16".into()]).unwrap()
    }

    #[test]
    fn cadence_and_length_change_on_resume() {
        let sets: Vec<String> = ["run.steps=900", "eval.every=300", "log.checkpoint_every=0"]
            .map(String::from)
            .to_vec();
        let resumed = saved().for_resume(None, None, &sets).unwrap();
        assert_eq!(resumed.run.steps, 900);
        assert_eq!(resumed.eval.every, 300);
        assert_eq!(resumed.log.checkpoint_every, 0);
        // Nothing else moved; the saved --set of the run stays.
        let mut expected = saved();
        expected.run.steps = 900;
        expected.eval.every = 300;
        expected.log.checkpoint_every = 0;
        assert_eq!(resumed, expected);
        // Giving a key its saved value is no change.
        assert_eq!(
            saved()
                .for_resume(None, None, &["model.units=16".into()])
                .unwrap(),
            saved()
        );
    }

    #[test]
    fn model_and_data_keys_are_refused_by_name_with_both_values() {
        let sets: Vec<String> = ["train.batch=7", "run.steps=900", "model.units=64"]
            .map(String::from)
            .to_vec();
        let err = saved().for_resume(None, None, &sets).unwrap_err();
        let ResumeError::Fixed(changes) = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["model.units", "train.batch"]);
        let text = err.to_string();
        for needle in [
            "model.units (saved 16, given 64)",
            "train.batch (saved",
            "given 7)",
        ] {
            assert!(text.contains(needle), "no {needle} in {text}");
        }
    }

    #[test]
    fn the_workers_python_may_move_but_the_env_may_not_change() {
        let bridged = |sets: &[&str]| {
            let mut all = vec!["run.task=gym:Pendulum-v1", r#"run.env_kwargs={"g": 9.81}"#];
            all.extend_from_slice(sets);
            let all: Vec<String> = all.into_iter().map(String::from).collect();
            Config::resolve("cpu-state", None, &all).unwrap()
        };
        let saved = bridged(&[]);
        let moved = saved
            .for_resume(None, None, &["run.python=/opt/venv/bin/python".into()])
            .unwrap();
        assert_eq!(moved.run.python, "/opt/venv/bin/python");
        // The same arguments written differently are no change; the saved text stays.
        let same = saved
            .for_resume(None, None, &[r#"run.env_kwargs={ "g" : 9.81 }"#.into()])
            .unwrap();
        assert_eq!(same, saved);
        let err = saved
            .for_resume(None, None, &[r#"run.env_kwargs={"g": 3.7}"#.into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"run.env_kwargs (saved '{"g": 9.81}', given '{"g": 3.7}')"#),
            "{err}"
        );
        let err = saved
            .for_resume(None, None, &["run.task=dmc:cartpole-swingup".into()])
            .unwrap_err();
        assert!(err.to_string().contains("run.task (saved"), "{err}");
    }

    #[test]
    fn a_file_and_a_preset_follow_the_same_rule() {
        let dir = std::env::temp_dir().join(format!("dreamer-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("more.toml");
        std::fs::write(&file, "[run]\nsteps = 1234\n").unwrap();
        let resumed = saved().for_resume(None, Some(&file), &[]).unwrap();
        assert_eq!(resumed.run.steps, 1234);
        std::fs::write(&file, "[train]\nmodel_lr = 0.5\n").unwrap();
        let err = saved().for_resume(None, Some(&file), &[]).unwrap_err();
        assert!(err.to_string().contains("train.model_lr (saved"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // The preset the run did not use: every key it sets differently is named.
        let err = saved().for_resume(Some("paper"), None, &[]).unwrap_err();
        assert!(
            err.to_string().contains("model.units (saved 16, given"),
            "{err}"
        );
        // The run's own preset with its own --set: nothing to refuse.
        let same = saved()
            .for_resume(Some("cpu-state"), None, &["model.units=16".into()])
            .unwrap();
        assert_eq!(same, saved());
        // Errors of the given configuration itself come through.
        let err = saved().for_resume(Some("nope"), None, &[]).unwrap_err();
        assert!(matches!(
            err,
            ResumeError::Config(ConfigError::UnknownPreset { .. })
        ));
    }
}
