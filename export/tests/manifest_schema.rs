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
        trajectory_action_max_abs_err: Some(1e-6),
        trajectory_steps: 5,
        onnxruntime_version: "1.31.1".to_string(),
        returns: Some(dreamer_bundle::ReturnCheck {
            episodes: 2,
            first_seed: 1_000_000,
            float32_returns: vec![-120.0, -130.0],
            bundle_returns: vec![-121.0, -131.0],
            float32_mean: -125.0,
            bundle_mean: -126.0,
            drop: 0.008,
            tolerance: 0.05,
        }),
    });
    full.precision = "int8".to_string();
    full.quantization = Some(dreamer_bundle::QuantizationInfo {
        scheme: "QDQ".to_string(),
        layers: vec!["actor.l0".to_string()],
        calibration: dreamer_bundle::CalibrationInfo {
            replay: "runs/x/replay".to_string(),
            episodes: 3,
            steps: 600,
            method: "min-max".to_string(),
            ranges: BTreeMap::from([("actor.l0.input".to_string(), [-1.5, 2.0])]),
        },
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

/// A checkpoint of a Python environment (`gym:`): the manifest names it, its task facts come
/// from the checkpoint's `env` record, and it matches the schema; a record of another task or
/// observation mode, a malformed one or none is refused, naming it.
#[test]
fn a_bridged_checkpoint_exports_with_its_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small(Spec::state());
    let task = "gym:my_pkg.envs:Arm-v0";
    let ckpt = common::write_bridged_checkpoint(
        &tmp.path().join("ckpt"),
        &spec,
        5,
        task,
        Some(common::env_record(&spec, task)),
    );
    let out = tmp.path().join("bundle");
    let m = export(&ckpt, &out, &ExportOptions::default())
        .unwrap_or_else(|e| panic!("export failed: {e}"))
        .manifest;
    let written = schema::assert_bundle(&out);
    assert_eq!(m.task.name, task);
    assert_eq!((m.task.episode_decisions, m.task.action_repeat), (100, 2));
    assert!((m.task.control_period_s - 0.1).abs() < 1e-12);
    assert_eq!(m.contract.timing.physics_step_s, 0.05);
    assert_eq!(
        (
            m.action.physical_low.clone(),
            m.action.physical_high.clone()
        ),
        (vec![-2.0], vec![2.0])
    );
    assert_eq!(
        m.observation.state.as_ref().unwrap().fields,
        ["obs[0]", "obs[1]", "obs[2]"]
    );
    assert_eq!(
        written["contract"]["task_definition"],
        json!({"source": "environment", "version": 1})
    );
    let env = &written["environment"];
    assert_eq!(
        (&env["package"], &env["id"], &env["kwargs"]),
        (
            &json!("gymnasium"),
            &json!("my_pkg.envs:Arm-v0"),
            &json!({"g": 9.81})
        )
    );
    assert_eq!(
        env["state_layout"],
        json!([{"name": "obs", "shape": [3], "dtype": "float32"}])
    );
    assert_eq!(env["episode_env_steps"], 200);
    assert_eq!(env["versions"]["gymnasium"], "1.4.0");
    let config = written["training"]["config"].as_object().unwrap();
    assert_eq!(config["run.env_kwargs"], r#"{"g": 9.81}"#);
    assert!(!config.contains_key("run.python"), "{config:?}");
    // A built-in task's manifest has no `environment` key at all.
    let (_, built_in) = state_manifest(&tmp.path().join("built-in"));
    assert!(built_in.get("environment").is_none());

    let refused = |name: &str, record: Option<Value>| {
        let ckpt = common::write_bridged_checkpoint(&tmp.path().join(name), &spec, 5, task, record);
        let out = tmp.path().join(format!("{name}-bundle"));
        let e = export(&ckpt, &out, &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(!out.exists(), "{name}");
        e
    };
    let e = refused("other", Some(common::env_record(&spec, "gym:Other-v0")));
    assert!(e.contains("describes `gym:Other-v0`"), "{e}");
    let mut pixels = common::env_record(&spec, task);
    pixels["obs_mode"] = json!("pixels");
    let e = refused("pixels", Some(pixels));
    assert!(
        e.contains("obs_mode pixels and action_repeat 2, the config says state"),
        "{e}"
    );
    let mut broken = common::env_record(&spec, task);
    broken["state_layout"] = json!("obs");
    let e = refused("broken", Some(broken));
    assert!(e.contains("state.json") && e.contains("key `env`"), "{e}");
    let e = refused("none", None);
    assert!(e.contains("state.json has no `env` record"), "{e}");
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
