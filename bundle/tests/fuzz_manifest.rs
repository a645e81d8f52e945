//! Fuzz target of the manifest reader (`parse_manifest`, and `open` on a bundle folder as
//! the runtime reads it). A valid manifest is mutated as JSON (a value anywhere in the tree
//! replaced by an extreme number, another type, a long or odd string, a deep nesting; keys
//! removed, added or renamed; array elements dropped or duplicated; subtrees copied over
//! others) and as bytes (flips, insertions, cuts, splices); random bytes and random JSON too.
//! Each case must return `Ok` or `Err` within a time bound, never panic; an accepted manifest
//! must serialise and parse back to itself, and its graphs must be reachable by role.
//!
//! `PROPTEST_CASES` sets the number of cases (scripts/fuzz-long runs many).

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use dreamer_bundle::{MANIFEST_FILE, Manifest, open, parse_manifest};
use dreamer_fuzz::{ByteEdit, bounded, byte_edit};
use proptest::prelude::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(3);

/// The valid bundle manifest of the loader's tests (graph files listed with their hashes),
/// as a JSON tree, and every path in it.
fn base() -> &'static (Value, Vec<Vec<Step>>) {
    static BASE: OnceLock<(Value, Vec<Vec<Step>>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let value = serde_json::to_value(common::valid(dir.path())).unwrap();
        let mut paths = Vec::new();
        collect_paths(&value, &mut Vec::new(), &mut paths);
        (value, paths)
    })
}

/// One step into a JSON tree.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                at.push(Step::Key(k.clone()));
                collect_paths(v, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                at.push(Step::Index(i));
                collect_paths(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// A JSON value at the edges of what the schema's fields hold.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(2),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
            json!(-1e300),
            json!(3.5e38),
            json!(1e-320),
            json!(0.5),
            json!(-0.0),
            json!(null),
            json!(true),
            json!(""),
            json!("float32"),
            json!("float16"),
            json!("uint8"),
            json!("encoder"),
            json!("policy_step"),
            json!("../../etc/passwd"),
            json!("/abs/path.onnx"),
            json!("h"),
            json!([]),
            json!({}),
            json!([1, -1]),
            json!([1, 0]),
            json!([-9223372036854775808i64, 9223372036854775807i64]),
        ]),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(|s| json!(s)),
        Just(json!("x".repeat(100_000))),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to the manifest.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at a path.
    Set(prop::sample::Index, Value),
    /// Remove the key or element at a path.
    Remove(prop::sample::Index),
    /// Add a key to the object at a path (or an element to the array there).
    Add(prop::sample::Index, String, Value),
    /// Rename the key at a path.
    Rename(prop::sample::Index, String),
    /// Copy the subtree at one path over the value at another.
    Copy(prop::sample::Index, prop::sample::Index),
    /// Duplicate the element at a path in its array.
    Duplicate(prop::sample::Index),
    /// Wrap the value at a path in `depth` arrays (past the parser's limit of 128 at most a
    /// little: this test's own tree code recurses too; `deep_nesting_is_an_error` goes deep).
    Nest(prop::sample::Index, usize),
    /// A byte-level edit of the serialised text (applied after the tree edits).
    Bytes(ByteEdit),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    let key = prop_oneof![
        Just(String::new()),
        Just("format_version".to_string()),
        Just("graphs".to_string()),
        Just("files".to_string()),
        "[a-z_]{1,12}",
        any::<String>(),
    ];
    prop_oneof![
        8 => (index(), json_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => index().prop_map(Mutation::Remove),
        1 => (index(), key.clone(), json_value()).prop_map(|(i, k, v)| Mutation::Add(i, k, v)),
        1 => (index(), key).prop_map(|(i, k)| Mutation::Rename(i, k)),
        2 => (index(), index()).prop_map(|(a, b)| Mutation::Copy(a, b)),
        1 => index().prop_map(Mutation::Duplicate),
        1 => (index(), prop_oneof![1usize..4, Just(127usize), Just(200usize)])
            .prop_map(|(i, d)| Mutation::Nest(i, d)),
        3 => byte_edit().prop_map(Mutation::Bytes),
    ]
}

/// Applies the tree edits in order (paths are taken from the valid manifest; an edit whose
/// path no longer exists is skipped), then the byte edits.
fn mutate(mutations: &[Mutation]) -> Vec<u8> {
    let (valid, paths) = base();
    let mut value = valid.clone();
    let pick = |i: &prop::sample::Index| &paths[i.index(paths.len())];
    for m in mutations {
        match m {
            Mutation::Set(i, v) => {
                if let Some(slot) = get_mut(&mut value, pick(i)) {
                    *slot = v.clone();
                }
            }
            Mutation::Remove(i) | Mutation::Duplicate(i) | Mutation::Rename(i, _) => {
                let path = pick(i);
                let Some((last, parent)) = path.split_last() else {
                    continue;
                };
                let Some(parent) = get_mut(&mut value, parent) else {
                    continue;
                };
                match (m, last, parent) {
                    (Mutation::Remove(_), Step::Key(k), Value::Object(map)) => {
                        map.remove(k);
                    }
                    (Mutation::Remove(_), Step::Index(j), Value::Array(items))
                        if *j < items.len() =>
                    {
                        items.remove(*j);
                    }
                    (Mutation::Duplicate(_), Step::Index(j), Value::Array(items))
                        if *j < items.len() =>
                    {
                        let item = items[*j].clone();
                        items.insert(*j, item);
                    }
                    (Mutation::Rename(_, new), Step::Key(k), Value::Object(map)) => {
                        if let Some(v) = map.remove(k) {
                            map.insert(new.clone(), v);
                        }
                    }
                    _ => {}
                }
            }
            Mutation::Add(i, k, v) => match get_mut(&mut value, pick(i)) {
                Some(Value::Object(map)) => {
                    map.insert(k.clone(), v.clone());
                }
                Some(Value::Array(items)) => items.push(v.clone()),
                _ => {}
            },
            Mutation::Copy(from, to) => {
                let source = {
                    let mut v = value.clone();
                    get_mut(&mut v, pick(from)).map(|s| s.clone())
                };
                if let (Some(source), Some(slot)) = (source, get_mut(&mut value, pick(to))) {
                    *slot = source;
                }
            }
            Mutation::Nest(i, depth) => {
                if let Some(slot) = get_mut(&mut value, pick(i)) {
                    for _ in 0..*depth {
                        *slot = Value::Array(vec![slot.take()]);
                    }
                }
            }
            Mutation::Bytes(_) => {}
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
    for m in mutations {
        if let Mutation::Bytes(edit) = m {
            edit.apply(&mut bytes);
        }
    }
    bytes
}

/// What an accepted manifest must satisfy: it writes out and parses back to itself, and
/// every graph it lists is found by its role, with its tensors by name.
fn check_accepted(m: &Manifest) -> Result<(), TestCaseError> {
    let text = serde_json::to_vec(m);
    prop_assert!(text.is_ok(), "{text:?}");
    let again = parse_manifest(&text.unwrap(), Path::new("again.json"));
    prop_assert!(again.as_ref().is_ok_and(|a| a == m), "{again:?}");
    for (role, graph) in &m.graphs {
        let found = m.graph(role);
        prop_assert!(found.is_ok_and(|g| g == graph));
        for t in &graph.inputs {
            prop_assert!(graph.input(role, &t.name).is_ok());
        }
        for t in &graph.outputs {
            prop_assert!(graph.output(role, &t.name).is_ok());
        }
    }
    Ok(())
}

/// Parses `bytes` as a manifest and, with `folder`, opens a bundle folder holding it with
/// the valid bundle's graph files (slower: files are written); each must return, and the
/// accepted manifests pass `check_accepted`.
fn check(bytes: Vec<u8>, folder: bool) -> Result<(), TestCaseError> {
    let results = bounded(LIMIT, move || {
        let mut results = vec![parse_manifest(&bytes, Path::new("fuzz/manifest.json"))];
        if folder {
            let dir = tempfile::tempdir().unwrap();
            common::valid(dir.path());
            std::fs::write(dir.path().join(MANIFEST_FILE), &bytes).unwrap();
            results.push(open(dir.path()));
        }
        results
    });
    for result in results {
        match result {
            Ok(m) => check_accepted(&m)?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(256))]

    #[test]
    fn mutated_valid_manifests(mutations in prop::collection::vec(mutation(), 1..5)) {
        check(mutate(&mutations), false)?;
    }

    #[test]
    fn random_manifests(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            // A version that passes the first check, then noise.
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|rest| {
                let mut b = b"{\"format_version\": 2, ".to_vec();
                b.extend(rest);
                b
            }),
        ],
    ) {
        check(bytes, false)?;
    }
}

proptest! {
    // Each case writes a bundle folder: fewer cases in the test command's run.
    #![proptest_config(dreamer_fuzz::config(64))]

    #[test]
    fn mutated_bundle_folders(mutations in prop::collection::vec(mutation(), 1..5)) {
        check(mutate(&mutations), true)?;
    }
}

#[test]
fn the_unmutated_manifest_is_accepted() {
    // Guards the target: with no edits the fuzzed input is valid, so edits start from a
    // manifest that gets past every check.
    let bytes = mutate(&[]);
    let parsed = parse_manifest(&bytes, Path::new("manifest.json"));
    assert!(parsed.is_ok(), "{parsed:?}");
}

#[test]
fn deep_nesting_is_an_error() {
    let deep = format!(
        "{{\"format_version\": 2, \"task\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse_manifest(deep.as_bytes(), Path::new("deep.json")).is_err());
}
