//! docs/manifest.schema.json against the exporter and the Rust types: every bundle written
//! here matches it, every optional part of the types (present or absent) matches it, and
//! manifests broken in the ways a hand edit or a foreign writer would break them do not.

mod common;
mod schema;

use std::collections::BTreeMap;
use std::path::Path;

use common::Spec;
use dreamer_bundle::{Manifest, PixelInfo, VerificationInfo, contract};
use dreamer_export::{ExportOptions, Precision, export};
use serde_json::{Value, json};

/// Exports the checkpoint of `spec` with `options` and returns the manifest as written.
fn exported(dir: &Path, spec: &Spec, seed: u64, options: &ExportOptions) -> (Manifest, Value) {
    let ckpt = common::write_checkpoint(&dir.join("ckpt"), spec, seed);
    let out = dir.join("bundle");
    let report = export(&ckpt, &out, options).unwrap_or_else(|e| panic!("export failed: {e}"));
    (report.manifest, schema::assert_bundle(&out))
}

fn small(spec: Spec) -> Spec {
    Spec {
        steps: 5,
        cases: 2,
        ..spec
    }
}

fn state_manifest(dir: &Path) -> (Manifest, Value) {
    exported(dir, &small(Spec::state()), 31, &ExportOptions::default())
}

#[test]
fn the_schema_is_a_draft_2020_12_schema() {
    let schema = schema::schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("not a valid schema: {e}"));
    assert_eq!(
        schema["properties"]["format_version"]["const"],
        dreamer_bundle::FORMAT_VERSION
    );
}

#[test]
fn every_exported_variant_matches_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let both = Spec {
        obs: "both",
        task: "cartpole-swingup",
        o: 5,
        ..small(Spec::state())
    };
    let variants = [
        (
            "state-b1-f32",
            small(Spec::state()),
            ExportOptions::default(),
        ),
        (
            "pixels-b1-f16",
            small(Spec::pixels()),
            ExportOptions {
                precision: Precision::Float16,
                ..ExportOptions::default()
            },
        ),
        (
            "both-b3-unverified",
            both,
            ExportOptions {
                batch: 3,
                verify: false,
                ..ExportOptions::default()
            },
        ),
    ];
    for (seed, (name, spec, options)) in variants.into_iter().enumerate() {
        let (m, written) = exported(&tmp.path().join(name), &spec, 40 + seed as u64, &options);
        assert_eq!(m.verification.is_some(), options.verify, "{name}");
        assert_eq!(written["batch"], options.batch, "{name}");
        let c = &m.contract;
        let physics_step_s = if spec.task == "pendulum" { 0.05 } else { 0.01 };
        assert_eq!(c.timing.physics_step_s, physics_step_s, "{name}");
        assert_eq!(c.task_definition.source, "dreamer-tasks");
        assert_eq!(
            Some(c.task_definition.version),
            dreamer_tasks::definition_version(spec.task)
        );
        let encoding = &c.observation_encoding;
        assert_eq!(encoding.state.is_some(), spec.uses_state(), "{name}");
        assert_eq!(encoding.pixels.is_some(), spec.uses_pixels(), "{name}");
        let steps: Vec<&str> = c.steps.keys().map(String::as_str).collect();
        assert_eq!(
            steps,
            [contract::FUSED, contract::SEPARATE, contract::SPLIT]
        );
    }
}

#[test]
fn every_optional_part_of_the_types_matches_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = state_manifest(tmp.path());
    let mut full = m.clone();
    full.observation.pixels = Some(PixelInfo {
        height: 64,
        width: 64,
        channels: 3,
        layout: "HWC".to_string(),
        preprocess: "x / 255 - 0.5".to_string(),
    });
    full.training.eval_return = Some(-113.0);
    full.verification = Some(VerificationInfo {
        random_max_abs_err: BTreeMap::from([("actor".to_string(), 1e-7)]),
        trajectory_step_max_abs_err: Some(1e-6),
        trajectory_final_latent_max_abs_err: Some(1e-5),
        trajectory_surprise_max_rel_err: Some(1e-6),
        trajectory_steps: 5,
        onnxruntime_version: "1.31.1".to_string(),
    });
    full.contract.observation_encoding.pixels = Some(contract::PixelEncoding {
        values: contract::Values::Raw,
        channel_order: contract::ChannelOrder::Rgb,
    });
    let value = serde_json::to_value(&full).unwrap();
    schema::assert_valid(&value, "a manifest with every Option set");

    let mut sparse = m.clone();
    sparse.training.eval_return = None;
    sparse.verification = None;
    for scheme in sparse.contract.steps.values_mut() {
        scheme.surprise = None;
    }
    let value = serde_json::to_value(&sparse).unwrap();
    schema::assert_valid(&value, "a manifest with every Option unset");
    let mut partial = m;
    partial
        .verification
        .as_mut()
        .unwrap()
        .trajectory_step_max_abs_err = None;
    partial
        .verification
        .as_mut()
        .unwrap()
        .trajectory_surprise_max_rel_err = None;
    let value = serde_json::to_value(&partial).unwrap();
    schema::assert_valid(&value, "a manifest with the optional figures unset");
}

/// Sets (or, for `None`, removes) the value at `pointer` (a JSON pointer).
fn mutate(manifest: &Value, pointer: &str, value: Option<Value>) -> Value {
    let mut out = manifest.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = out
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the manifest"));
    match (target, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(key.to_string(), v);
        }
        (Value::Object(map), None) => {
            assert!(map.remove(key).is_some(), "no {pointer} to remove");
        }
        (Value::Array(list), Some(v)) => list[key.parse::<usize>().unwrap()] = v,
        (other, _) => panic!("{parent} is {other}"),
    }
    out
}

#[test]
fn broken_manifests_fail_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, written) = state_manifest(tmp.path());
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("/format_version", Some(json!(1))),
        ("/contract", None),
        ("/task/action_repeat", Some(json!(0))),
        ("/task/control_period_s", Some(json!("0.1"))),
        ("/batch", Some(json!(-1))),
        ("/precision", Some(json!("bfloat16"))),
        ("/observation/state", Some(Value::Null)),
        ("/latent/initial", Some(json!("ones"))),
        ("/latent/extra", Some(json!(1))),
        ("/action/low", Some(json!([]))),
        ("/graphs/critic", Some(written["graphs"]["actor"].clone())),
        ("/graphs/actor", None),
        ("/graphs/actor/inputs/0/dtype", Some(json!("float64"))),
        ("/graphs/actor/inputs/0/shape", Some(json!([1, -1]))),
        ("/files/actor.onnx", Some(json!("ABC"))),
        ("/files/..", Some(json!("0".repeat(64)))),
        ("/graphs/actor/file", Some(json!("/etc/actor.onnx"))),
        ("/graphs/actor/file", Some(json!("../actor.onnx"))),
        ("/training/config/model.deter", Some(json!(12))),
        ("/verification/trajectory_steps", Some(json!(-5))),
        (
            "/contract/steps/fused/inputs/policy_step/h",
            Some(json!({"source": "previous_step", "graph": "policy_step"})),
        ),
        (
            "/contract/steps/fused/inputs/policy_step/noise",
            Some(json!({"source": "random"})),
        ),
        (
            "/contract/steps/fused/inputs/policy_step/obs_state",
            Some(json!({"source": "observation", "observation": "lidar"})),
        ),
        (
            "/contract/steps/fused/inputs/policy_step/s",
            Some(json!({"source": "this_step", "concat": []})),
        ),
        (
            "/contract/steps/fused/runs",
            Some(json!(["policy_step", "policy_step"])),
        ),
        (
            "/contract/steps/fused/action",
            Some(json!({"graph": "policy_step"})),
        ),
        ("/contract/noise/distribution", Some(json!("uniform"))),
        ("/contract/timing/physics_step_s", Some(json!(0))),
        ("/contract/timing/hold", None),
        ("/contract/action_mapping/kind", Some(json!("affine"))),
        ("/contract/task_definition/version", Some(json!(0))),
        (
            "/contract/observation_encoding/state",
            Some(json!({"values": "scaled"})),
        ),
        ("/contract/initial_state/reset", Some(json!("never"))),
    ];
    let mut accepted = Vec::new();
    for (pointer, value) in cases {
        let broken = mutate(&written, pointer, value.clone());
        if schema::violations(&broken).is_empty() {
            accepted.push(format!("{pointer} = {value:?}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "the schema accepts:\n{}",
        accepted.join("\n")
    );
}
