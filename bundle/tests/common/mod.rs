//! A small valid bundle for the loader's tests: a state-only manifest with all six graphs,
//! whose graph files are stand-in bytes (the loader hashes them; it never parses ONNX).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use dreamer_bundle::contract::{Contract, ObservationKind, TaskDefinition};
use dreamer_bundle::{
    self as bundle, ActionInfo, DType, GraphInfo, LatentInfo, MANIFEST_FILE, Manifest,
    ObservationInfo, StateInfo, TaskInfo, TensorInfo, TrainingInfo, names,
};

pub const DETER: i64 = 128;
pub const STOCH: i64 = 4;
pub const EMBED: i64 = 6;
pub const ACTION: i64 = 2;
pub const STATE: i64 = 3;

fn t(name: &str, shape: &[i64]) -> TensorInfo {
    TensorInfo {
        name: name.to_string(),
        dtype: DType::Float32,
        shape: shape.to_vec(),
    }
}

fn graph(role: &str, inputs: Vec<TensorInfo>, outputs: Vec<TensorInfo>) -> (String, GraphInfo) {
    (
        role.to_string(),
        GraphInfo {
            file: format!("{role}.onnx"),
            inputs,
            outputs,
        },
    )
}

/// A valid manifest (empty `files`) for a 3-value state observation, 2 actions, deter 128.
pub fn manifest() -> Manifest {
    let (d, s, e, a, o) = (DETER, STOCH, EMBED, ACTION, STATE);
    let graphs: BTreeMap<String, GraphInfo> = [
        graph(
            bundle::ENCODER,
            vec![t(names::OBS_STATE, &[1, o])],
            vec![t(names::EMBED, &[1, e])],
        ),
        graph(
            bundle::RSSM_OBS_STEP,
            vec![
                t(names::H, &[1, d]),
                t(names::S, &[1, s]),
                t(names::PREV_ACTION, &[1, a]),
                t(names::EMBED, &[1, e]),
                t(names::NOISE, &[1, s]),
            ],
            vec![
                t(names::H_NEXT, &[1, d]),
                t(names::S_NEXT, &[1, s]),
                t(names::MEAN, &[1, s]),
                t(names::STD, &[1, s]),
                t(names::PRIOR_MEAN, &[1, s]),
                t(names::PRIOR_STD, &[1, s]),
            ],
        ),
        graph(
            bundle::RSSM_IMG_STEP,
            vec![
                t(names::H, &[1, d]),
                t(names::S, &[1, s]),
                t(names::ACTION, &[1, a]),
                t(names::NOISE, &[1, s]),
            ],
            vec![
                t(names::H_NEXT, &[1, d]),
                t(names::S_NEXT, &[1, s]),
                t(names::MEAN, &[1, s]),
                t(names::STD, &[1, s]),
            ],
        ),
        graph(
            bundle::ACTOR,
            vec![t(names::FEAT, &[1, d + s]), t(names::ACTION_NOISE, &[1, a])],
            vec![
                t(names::ACTION, &[1, a]),
                t(names::MEAN, &[1, a]),
                t(names::STD, &[1, a]),
            ],
        ),
        graph(
            bundle::POLICY_STEP,
            vec![
                t(names::OBS_STATE, &[1, o]),
                t(names::H, &[1, d]),
                t(names::S, &[1, s]),
                t(names::PREV_ACTION, &[1, a]),
                t(names::NOISE, &[1, s]),
                t(names::ACTION_NOISE, &[1, a]),
            ],
            vec![
                t(names::ACTION, &[1, a]),
                t(names::H_NEXT, &[1, d]),
                t(names::S_NEXT, &[1, s]),
                t(names::SURPRISE, &[1]),
            ],
        ),
        graph(
            bundle::POLICY_OBSERVE,
            vec![
                t(names::OBS_STATE, &[1, o]),
                t(names::H_NEXT, &[1, d]),
                t(names::PRIOR_MEAN, &[1, s]),
                t(names::PRIOR_STD, &[1, s]),
                t(names::NOISE, &[1, s]),
                t(names::ACTION_NOISE, &[1, a]),
            ],
            vec![
                t(names::ACTION, &[1, a]),
                t(names::S_NEXT, &[1, s]),
                t(names::SURPRISE, &[1]),
            ],
        ),
    ]
    .into_iter()
    .collect();
    Manifest {
        format_version: bundle::FORMAT_VERSION,
        task: TaskInfo {
            name: "pendulum".into(),
            control_period_s: 0.05,
            action_repeat: 2,
            episode_decisions: 100,
        },
        observation: ObservationInfo {
            pixels: None,
            state: Some(StateInfo {
                size: STATE as u32,
                fields: vec!["cos".into(), "sin".into(), "omega".into()],
            }),
        },
        action: ActionInfo {
            size: ACTION as u32,
            low: vec![-1.0; 2],
            high: vec![1.0; 2],
            physical_low: vec![-2.0; 2],
            physical_high: vec![2.0; 2],
        },
        latent: LatentInfo {
            deter: DETER as u32,
            stoch: STOCH as u32,
            classes: 0,
            embed: EMBED as u32,
            initial: "zeros".into(),
            min_std: 0.1,
        },
        batch: 1,
        precision: "float32".into(),
        quantization: None,
        graph_form: dreamer_bundle::GraphForm::Decomposed,
        opset: 17,
        ir_version: 8,
        graphs,
        training: TrainingInfo {
            env_steps: 0,
            updates: 0,
            eval_return: None,
            config: BTreeMap::new(),
        },
        verification: None,
        files: BTreeMap::new(),
        contract: contract(),
        environment: None,
    }
}

fn contract() -> Contract {
    Contract::standard(
        &[ObservationKind::State],
        0.025,
        TaskDefinition {
            source: "dreamer-tasks".into(),
            version: 1,
        },
    )
}

/// Stand-in bytes of graph `role`.
pub fn graph_bytes(role: &str) -> Vec<u8> {
    format!("not really onnx: {role}").into_bytes()
}

/// Writes every graph of `manifest` and lists its hash, then writes the manifest.
pub fn write(dir: &Path, mut manifest: Manifest) -> Manifest {
    fs::create_dir_all(dir).unwrap();
    for (role, graph) in &manifest.graphs.clone() {
        let bytes = graph_bytes(role);
        fs::write(dir.join(&graph.file), &bytes).unwrap();
        manifest
            .files
            .insert(graph.file.clone(), bundle::sha256_hex(&bytes));
    }
    write_manifest(dir, &manifest);
    manifest
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) {
    let text = serde_json::to_string_pretty(manifest).unwrap();
    fs::write(dir.join(MANIFEST_FILE), text).unwrap();
}

/// A valid bundle in `dir`.
pub fn valid(dir: &Path) -> Manifest {
    write(dir, manifest())
}
