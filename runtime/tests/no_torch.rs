//! The runtime must never pull in libtorch: walks the workspace's Cargo.lock from
//! `dreamer-runtime` (normal, build and dev dependencies alike, as the lock file records them).

use std::collections::{BTreeMap, BTreeSet};

#[test]
fn no_torch_in_the_dependency_tree() {
    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    let text = std::fs::read_to_string(lock_path).unwrap();
    let lock: toml::Table = text.parse().unwrap();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_string();
        let list: Vec<String> = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    // Entries are `name` or `name version` when several versions exist.
                    .map(|e| e.as_str().unwrap().split(' ').next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        deps.entry(name).or_default().extend(list);
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec!["dreamer-runtime".to_string()];
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        stack.extend(deps.get(&name).cloned().unwrap_or_default());
    }
    assert!(seen.contains("ort"), "walk did not reach ort: {seen:?}");
    for forbidden in ["tch", "torch-sys", "dreamer-trainer"] {
        assert!(
            !seen.contains(forbidden),
            "dreamer-runtime depends on {forbidden}"
        );
    }
}
