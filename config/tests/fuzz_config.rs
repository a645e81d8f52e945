//! Fuzz targets of the configuration: TOML files and `--set` overrides, valid ones mutated and
//! random ones, through the functions `dreamer train --config F --set k=v` calls
//! (`Config::resolve`), the resume path (`Config::with_overrides` on a saved configuration)
//! and the checkpoint's `config.toml` reader (`Config::load`). Each case must return `Ok` or
//! `Err` within a time bound, never panic; an accepted configuration must validate and
//! survive its own TOML round trip.
//!
//! `PROPTEST_CASES` sets the number of cases (scripts/fuzz-long runs many).

use std::time::Duration;

use dreamer_config::{Config, PRESETS, valid_keys};
use dreamer_fuzz::bounded;
use proptest::prelude::*;

const LIMIT: Duration = Duration::from_secs(3);

/// TOML value literals at the edges: extreme and invalid numbers, other types, odd strings,
/// deep nesting, literals that smuggle in more lines.
fn literal() -> impl Strategy<Value = String> {
    let fixed: Vec<String> = [
        "0",
        "1",
        "-1",
        "2",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "18446744073709551615",
        "0x7fffffffffffffff",
        "0o777",
        "0b101",
        "1_000",
        "1e308",
        "1e309",
        "-1e309",
        "5e-324",
        "nan",
        "+nan",
        "-nan",
        "inf",
        "+inf",
        "-inf",
        "-0.0",
        "0.5",
        "1.5",
        "true",
        "false",
        "\"\"",
        "\"pendulum\"",
        "\"cartpole-swingup\"",
        "\"gym:Pendulum-v1\"",
        "gym:my_pkg.envs:MyEnv-v0",
        "\"dmc:cartpole-swingup\"",
        "dmc:cartpole",
        "'{\"max_episode_steps\": 5}'",
        "{\"x\":1}",
        "'[1, 2]'",
        "'{'",
        "'state'",
        "\"pixels\"",
        "\"both\"",
        "\"\\u0000\"",
        "\"\u{202e}\u{0301}é\"",
        "[]",
        "[1, 2]",
        "[1, \"a\"]",
        "{}",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "07:32:00",
        "\"unterminated",
        "1\n[run]\ntask = 2",
        "1 # comment",
        "",
        " ",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "9".repeat(400),
        "a".repeat(10_000),
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!("{}1{}", "{a=".repeat(2_000), "}".repeat(2_000)),
    ])
    .collect();
    prop_oneof![
        4 => prop::sample::select(fixed),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => ".{0,12}",
    ]
}

/// A key: one of the schema's, a near miss, or an odd one.
fn key() -> impl Strategy<Value = String> {
    let odd: Vec<String> = [
        "",
        ".",
        "..",
        "run",
        "run.",
        ".task",
        "run.task.extra",
        "RUN.TASK",
        " run.task ",
        "run . task",
        "rün.täsk",
        "run.\u{0}",
        "model.deter.x",
        "a.b.c.d",
        "train.batch=1",
        "\"run\".task",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    prop_oneof![
        6 => prop::sample::select(valid_keys()),
        2 => prop::sample::select(odd),
        1 => "[a-z._]{0,16}",
        1 => any::<String>(),
    ]
}

/// One `--set` argument: `key=value` with odd separators now and then.
fn override_arg() -> impl Strategy<Value = String> {
    let separator = prop::sample::select(vec!["=", "=", "=", " = ", "==", "", ":", "= "]);
    prop_oneof![
        8 => (key(), separator, literal()).prop_map(|(k, s, v)| format!("{k}{s}{v}")),
        1 => any::<String>(),
    ]
}

fn preset_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => prop::sample::select(PRESETS.map(|p| p.0).to_vec()),
        1 => Just("nope"),
        1 => Just(""),
    ]
}

/// A valid configuration file: a preset resolved and written out, whole or in part.
fn valid_file() -> impl Strategy<Value = String> {
    (
        prop::sample::select(PRESETS.map(|p| p.0).to_vec()),
        prop::collection::vec(any::<bool>(), 48),
    )
        .prop_map(|(preset, keep)| {
            let text = Config::preset(preset).unwrap().to_toml_string();
            let mut table: toml::Table = toml::from_str(&text).unwrap();
            let mut i = 0;
            for (_, section) in table.iter_mut() {
                if let toml::Value::Table(inner) = section {
                    inner.retain(|_, _| {
                        i += 1;
                        keep[i % keep.len()]
                    });
                }
            }
            toml::to_string(&table).unwrap()
        })
}

/// A TOML value of any type, extremes included.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![i64::MIN, i64::MAX, -1, 0, 1, 2, 1 << 40])
            .prop_map(toml::Value::Integer),
        any::<i64>().prop_map(toml::Value::Integer),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            0.5,
            1.5,
        ])
        .prop_map(toml::Value::Float),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<String>().prop_map(toml::Value::String),
        prop::sample::select(vec![
            "pendulum",
            "state",
            "pixels",
            "both",
            "cartpole-swingup",
            "gym:Pendulum-v1",
            "dmc:cartpole-swingup",
            "{}",
            "{\"g\": 9.81}",
            "[1]",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// One structural or byte-level change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set `section.key` (split at the first dot) to a value, creating it if needed.
    Swap(String, toml::Value),
    /// Remove `section.key` or a whole section.
    Remove(String),
    /// Replace a top-level section by a value of another type.
    Section(String, toml::Value),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    /// Copy a slice of the file over another place in it.
    Splice(prop::sample::Index, prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        4 => (key(), toml_value()).prop_map(|(k, v)| Mutation::Swap(k, v)),
        1 => key().prop_map(Mutation::Remove),
        1 => ("[a-z]{1,8}", toml_value()).prop_map(|(k, v)| Mutation::Section(k, v)),
        2 => (index(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (index(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (index(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => index().prop_map(Mutation::Truncate),
        1 => (index(), index(), 1usize..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

/// Applies the mutations in order; structural ones reparse the current text and are skipped
/// once the text is no longer TOML.
fn mutate(text: String, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    for m in mutations {
        let structural = |bytes: &mut Vec<u8>, edit: &dyn Fn(&mut toml::Table)| {
            let Some(mut table) = std::str::from_utf8(bytes)
                .ok()
                .and_then(|t| toml::from_str::<toml::Table>(t).ok())
            else {
                return;
            };
            edit(&mut table);
            if let Ok(text) = toml::to_string(&table) {
                *bytes = text.into_bytes();
            }
        };
        match m {
            Mutation::Swap(key, value) => structural(&mut bytes, &|t: &mut toml::Table| {
                let (section, name) = key.split_once('.').unwrap_or((key, ""));
                let slot = t
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match slot {
                    toml::Value::Table(inner) => {
                        inner.insert(name.to_string(), value.clone());
                    }
                    other => *other = value.clone(),
                }
            }),
            Mutation::Remove(key) => structural(&mut bytes, &|t: &mut toml::Table| match key
                .split_once('.')
            {
                Some((section, name)) => {
                    if let Some(toml::Value::Table(inner)) = t.get_mut(section) {
                        inner.remove(name);
                    }
                }
                None => {
                    t.remove(key);
                }
            }),
            Mutation::Section(name, value) => structural(&mut bytes, &|t: &mut toml::Table| {
                t.insert(name.clone(), value.clone());
            }),
            Mutation::Flip(i, x) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= x;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Truncate(i) => {
                let i = i.index(bytes.len() + 1);
                bytes.truncate(i);
            }
            Mutation::Splice(from, to, n) if !bytes.is_empty() => {
                let from = from.index(bytes.len());
                let piece: Vec<u8> = bytes[from..(from + n).min(bytes.len())].to_vec();
                let to = to.index(bytes.len());
                let end = (to + piece.len()).min(bytes.len());
                bytes.splice(to..end, piece);
            }
            Mutation::Flip(..) | Mutation::Delete(..) | Mutation::Splice(..) => {}
        }
    }
    bytes
}

/// What an accepted configuration must satisfy: it validates, every number in it is finite,
/// and what it writes reads back to the same text.
fn check_accepted(config: &Config) -> Result<(), TestCaseError> {
    prop_assert!(config.validate().is_ok(), "{:?}", config.validate());
    let text = config.to_toml_string();
    let table: toml::Table = toml::from_str(&text).unwrap();
    for (section, inner) in &table {
        for (key, value) in inner.as_table().into_iter().flatten() {
            if let toml::Value::Float(f) = value {
                prop_assert!(f.is_finite(), "accepted {section}.{key} = {f}");
            }
        }
    }
    let again = Config::from_toml_str(&text, "round trip");
    prop_assert!(again.is_ok(), "{again:?}\n{text}");
    prop_assert_eq!(again.unwrap().to_toml_string(), text);
    Ok(())
}

/// Every path from a file and overrides to a configuration, in a fresh folder: the
/// command line's, the checkpoint reader's and the resume path's.
fn run_all(
    preset: &'static str,
    file: Option<Vec<u8>>,
    sets: Vec<String>,
) -> Result<(), TestCaseError> {
    let results = bounded(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let mut results = Vec::new();
        if let Some(bytes) = &file {
            std::fs::write(&path, bytes).unwrap();
            results.push(Config::resolve(preset, Some(&path), &sets));
            results.push(Config::load(&path));
        }
        results.push(Config::resolve(preset, None, &sets));
        if let Ok(saved) = Config::preset(preset) {
            results.push(saved.with_overrides(&sets));
        }
        results
    });
    for result in results {
        match result {
            Ok(config) => check_accepted(&config)?,
            // The message names something: rendering it must not panic either.
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(256))]

    #[test]
    fn mutated_valid_files_and_overrides(
        preset in preset_name(),
        file in valid_file(),
        mutations in prop::collection::vec(mutation(), 0..5),
        sets in prop::collection::vec(override_arg(), 0..4),
    ) {
        run_all(preset, Some(mutate(file, &mutations)), sets)?;
    }

    #[test]
    fn overrides_alone(
        preset in preset_name(),
        sets in prop::collection::vec(override_arg(), 0..6),
    ) {
        run_all(preset, None, sets)?;
    }

    #[test]
    fn random_files(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            "(\\[[a-z]{1,6}\\]\n|[a-z_]{1,8} = [0-9a-z.\"'\\[\\]{}+-]{0,8}\n){0,12}"
                .prop_map(String::into_bytes),
        ],
        sets in prop::collection::vec(any::<String>(), 0..3),
    ) {
        run_all("cpu-state", Some(bytes), sets)?;
    }
}

/// Regression: `train.pcont_scale` was the one float that `validate` did not check, so a
/// NaN or negative weight of the continuation loss was accepted.
#[test]
fn pcont_scale_must_be_a_non_negative_number() {
    for value in ["nan", "-inf", "inf", "-1.0"] {
        let sets = [format!("train.pcont_scale={value}")];
        let err = Config::resolve("cpu-state", None, &sets).expect_err(value);
        assert!(err.to_string().contains("train.pcont_scale"), "{err}");
    }
    let ok = Config::resolve("cpu-state", None, &["train.pcont_scale=0".to_string()]);
    assert!(ok.is_ok(), "{ok:?}");
}

/// Nesting far beyond any configuration is refused by the parser, not a stack overflow.
#[test]
fn deep_nesting_is_an_error() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let sets = [format!("train.batch={deep}")];
    assert!(Config::resolve("cpu-state", None, &sets).is_err());
    let text = format!("[train]\nbatch = {deep}\n");
    assert!(Config::from_toml_str(&text, "deep.toml").is_err());
}
