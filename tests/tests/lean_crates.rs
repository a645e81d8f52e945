//! The crate graph follows the data (environment -> replay -> trainer -> export -> bundle ->
//! runtime -> wire <- firmware; docs/architecture.md), and what ships to a device stays lean:
//! these tests fail when an arrow against the flow, libtorch, or the simulation comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(dreamer_tests::repo_root());
    command
}

/// Every package in the normal and build dependency tree of `package` built with `features`
/// (extra `cargo tree` arguments such as `--no-default-features`).
fn normal_dependencies(package: &str, features: &[&str]) -> BTreeSet<String> {
    let out = cargo()
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "--edges",
            "normal,build",
        ])
        .args(["--package", package, "--format", "{p}"])
        .args(features)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} {features:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deps: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        deps.contains(package),
        "cargo tree did not list {package} itself: {deps:?}"
    );
    deps
}

fn assert_absent(package: &str, features: &[&str], forbidden: &[&str]) {
    let deps = normal_dependencies(package, features);
    let found: Vec<_> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "{package} {features:?} depends on {found:?}"
    );
}

const TORCH: [&str; 2] = ["tch", "torch-sys"];

/// What a device build of the runtime must not contain: libtorch, and the simulation
/// (built-in tasks, the firmware and its host simulation, embedded-hal).
const DEVICE_FORBIDDEN: [&str; 6] = [
    "tch",
    "torch-sys",
    "dreamer-tasks",
    "firmware-host",
    "dreamer-firmware",
    "embedded-hal",
];

#[test]
fn runtime_has_no_libtorch() {
    assert_absent("dreamer-runtime", &[], &TORCH);
}

#[test]
fn runtime_device_build_has_no_simulation() {
    for features in [
        &["--no-default-features"][..],
        &["--no-default-features", "--features", "cuda"],
        &["--no-default-features", "--features", "tensorrt"],
    ] {
        assert_absent("dreamer-runtime", features, &DEVICE_FORBIDDEN);
    }
}

#[test]
fn exporter_has_no_libtorch_and_no_runtime() {
    assert_absent(
        "dreamer-export",
        &[],
        &["tch", "torch-sys", "dreamer-runtime", "dreamer-trainer"],
    );
}

#[test]
fn trainer_does_not_depend_on_the_runtime_or_the_device_side() {
    assert_absent(
        "dreamer-trainer",
        &[],
        &[
            "dreamer-runtime",
            "dreamer-wire",
            "firmware-host",
            "dreamer-firmware",
            "serialport",
            "postcard",
            "embedded-hal",
        ],
    );
}

#[test]
fn the_checks_see_what_is_there() {
    // Guards the guards: the same queries must find tch in the trainer and the simulation in
    // the runtime's default (workstation) build.
    assert!(normal_dependencies("dreamer-trainer", &[]).contains("tch"));
    assert!(normal_dependencies("dreamer-runtime", &[]).contains("dreamer-tasks"));
}

/// Workspace crates each crate may depend on (normal and build dependencies), in data-flow
/// order; the contract crates (config, ort, bundle, wire) and the command lines' shared
/// crate (cli) depend on no workspace crate, except that what writes files (wire's std-only
/// reports among them) writes them through `dreamer-persist`, which depends on none.
const ALLOWED: [(&str, &[&str]); 18] = [
    ("dreamer-cli", &[]),
    ("dreamer-config", &[]),
    ("dreamer-persist", &[]),
    ("dreamer-ort", &[]),
    ("dreamer-bundle", &[]),
    ("dreamer-wire", &["dreamer-persist"]),
    // The episode file: written by the trainer's replay, read by the exporter's calibration.
    ("dreamer-episode", &["dreamer-persist"]),
    // Online learning over NATS: the stream layout both sides agree on, the device's uploader.
    (
        "dreamer-online",
        &["dreamer-episode", "dreamer-persist", "dreamer-bundle"],
    ),
    (
        "dreamer-tasks",
        &["dreamer-config", "dreamer-cli", "dreamer-persist"],
    ),
    // Gymnasium / DeepMind Control envs in Python workers, behind dreamer-tasks' types.
    ("dreamer-bridge", &["dreamer-tasks"]),
    // The learner (`dreamer learn`) takes episodes from the stream and publishes signed
    // bundles: the loop closes through the broker, never through the runtime.
    (
        "dreamer-trainer",
        &[
            "dreamer-config",
            "dreamer-tasks",
            "dreamer-bridge",
            "dreamer-export",
            "dreamer-ort",
            "dreamer-cli",
            "dreamer-persist",
            "dreamer-episode",
            "dreamer-online",
            "dreamer-bundle",
        ],
    ),
    // The bridge is on the environment side: export reads its record of a bridged env.
    (
        "dreamer-export",
        &[
            "dreamer-config",
            "dreamer-tasks",
            "dreamer-bridge",
            "dreamer-bundle",
            "dreamer-ort",
            "dreamer-cli",
            "dreamer-persist",
            "dreamer-episode",
        ],
    ),
    (
        "dreamer-runtime",
        &[
            "dreamer-bundle",
            "dreamer-ort",
            "dreamer-wire",
            "dreamer-tasks",
            "dreamer-cli",
            "dreamer-episode",
            "dreamer-persist",
            "dreamer-online",
        ],
    ),
    ("dreamer-firmware", &["dreamer-wire"]),
    (
        "firmware-host",
        &[
            "dreamer-firmware",
            "dreamer-wire",
            "dreamer-tasks",
            "dreamer-cli",
            "dreamer-persist",
        ],
    ),
    (
        "dreamer-hil",
        &["dreamer-wire", "dreamer-bundle", "dreamer-cli"],
    ),
    ("dreamer-tests", &[]),
    // Dev-only: what the fuzz targets share.
    ("dreamer-fuzz", &[]),
];

/// Each workspace package's direct normal and build dependencies on other workspace packages.
fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let out = cargo()
        .args([
            "metadata",
            "--offline",
            "--locked",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|name| members.contains(name))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn workspace_crates_depend_only_along_the_data_flow() {
    let edges = workspace_edges();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    for (package, deps) in &edges {
        let Some(may) = allowed.get(package.as_str()) else {
            panic!(
                "{package} is not placed in the data flow: add it to ALLOWED and docs/architecture.md"
            );
        };
        let against: Vec<_> = deps.iter().filter(|d| !may.contains(&d.as_str())).collect();
        assert!(
            against.is_empty(),
            "{package} depends on {against:?}, against the data flow (allowed: {may:?})"
        );
    }
}

#[test]
fn firmware_core_cannot_use_std() {
    let lib = dreamer_tests::repo_root().join("firmware/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let code: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .collect();
    assert!(
        code.contains(&"#![no_std]"),
        "{}: no unconditional #![no_std]",
        lib.display()
    );
    for line in &code {
        assert!(
            !(line.contains("cfg_attr") && line.contains("no_std")),
            "{}: conditional no_std: {line}",
            lib.display()
        );
        assert!(
            !line.contains("extern crate std") && !line.contains("extern crate alloc"),
            "{}: {line}",
            lib.display()
        );
    }
}
