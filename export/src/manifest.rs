//! The bundle's `manifest.json` (schema in `dreamer-bundle`): built from the checkpoint, the
//! task facts and the built graphs, and written beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use dreamer_bundle::contract::{Contract, ObservationKind, TaskDefinition};
use dreamer_bundle::{
    ActionInfo, CalibrationInfo, DType, GraphInfo, LatentInfo, MANIFEST_FILE, Manifest,
    ObservationInfo, PixelInfo, QuantizationInfo, StateInfo, TaskInfo, TensorInfo, TrainingInfo,
};

use crate::calibrate::Calibration;
use crate::checkpoint::{self, Checkpoint};
use crate::error::ExportError;
use crate::graphs::BuiltGraph;
use crate::onnx::{self, IR_VERSION, OPSET};
use crate::options::ExportOptions;
use crate::task::TaskFacts;

/// The manifest of a bundle of `graphs`, without the verification figures and the file
/// hashes (added once the files are written and checked).
pub fn manifest(
    ckpt: &Checkpoint,
    facts: &TaskFacts,
    options: &ExportOptions,
    graphs: &[BuiltGraph],
) -> Manifest {
    let a = ckpt.sizes.action;
    Manifest {
        format_version: dreamer_bundle::FORMAT_VERSION,
        task: TaskInfo {
            name: ckpt.task_name.clone(),
            control_period_s: facts.control_period_s,
            action_repeat: ckpt.action_repeat,
            episode_decisions: facts.episode_decisions,
        },
        observation: ObservationInfo {
            pixels: ckpt.obs.uses_pixels().then(|| PixelInfo {
                height: checkpoint::PIXEL_HW as u32,
                width: checkpoint::PIXEL_HW as u32,
                channels: checkpoint::PIXEL_CHANNELS as u32,
                layout: "HWC".to_string(),
                preprocess: "x / 255 - 0.5, then HWC -> CHW (inside the graph, the scaling \
                             folded into the first convolution; feed raw uint8)"
                    .to_string(),
            }),
            state: ckpt.sizes.obs_state.map(|o| StateInfo {
                size: o as u32,
                fields: facts.state_fields.clone(),
            }),
        },
        action: ActionInfo {
            size: a as u32,
            low: vec![-1.0; a],
            high: vec![1.0; a],
            physical_low: facts.physical_action_low.clone(),
            physical_high: facts.physical_action_high.clone(),
        },
        latent: LatentInfo {
            deter: ckpt.sizes.deter as u32,
            stoch: ckpt.sizes.stoch as u32,
            classes: ckpt.sizes.classes as u32,
            embed: ckpt.sizes.embed() as u32,
            initial: "zeros".to_string(),
            min_std: ckpt.min_std,
        },
        batch: options.batch as u32,
        precision: options.precision.name().to_string(),
        graph_form: options.graph_form,
        opset: OPSET,
        ir_version: IR_VERSION,
        graphs: graphs
            .iter()
            .map(|g| (g.role.to_string(), graph_info(g)))
            .collect(),
        training: TrainingInfo {
            env_steps: ckpt.env_steps,
            updates: ckpt.updates,
            eval_return: options.eval_return.or(ckpt.eval_return),
            config: ckpt.config_summary.clone(),
        },
        quantization: None,
        verification: None,
        files: BTreeMap::new(),
        contract: bundle_contract(ckpt, facts),
        environment: facts.environment.clone(),
    }
}

/// What the manifest says about an int8 bundle's quantization.
pub fn quantization_info(c: &Calibration) -> QuantizationInfo {
    let layers: BTreeSet<String> = c
        .ranges
        .keys()
        .map(|key| {
            key.trim_end_matches(".input")
                .trim_end_matches(".output")
                .to_string()
        })
        .collect();
    QuantizationInfo {
        scheme: "QDQ: activations uint8 per tensor (zero point from the calibrated range), \
                 weights int8 symmetric per output channel, biases int32 on the product scale"
            .to_string(),
        layers: layers.into_iter().collect(),
        calibration: CalibrationInfo {
            replay: c.replay.display().to_string(),
            episodes: c.episodes as u32,
            steps: c.steps as u32,
            method: "min-max of each layer input over the newest replay episodes, the float32 \
                     policy step in closed loop from the zero latent with the recorded actions \
                     and zero noise"
                .to_string(),
            ranges: c
                .ranges
                .iter()
                .map(|(key, &(lo, hi))| (key.clone(), [lo, hi]))
                .collect(),
        },
    }
}

/// The manifest entry of a built graph: its file and ports (a calibration graph's probes
/// listed as float32 outputs of unknown shape, `[]`).
pub fn graph_info(g: &BuiltGraph) -> GraphInfo {
    let tensor_info = |p: &onnx::Port| TensorInfo {
        name: p.name.clone(),
        dtype: match p.elem {
            onnx::ElemType::Float32 => DType::Float32,
            onnx::ElemType::Uint8 => DType::Uint8,
        },
        shape: p.shape.clone(),
    };
    let probes = g.probes.iter().map(|name| TensorInfo {
        name: name.clone(),
        dtype: DType::Float32,
        shape: Vec::new(),
    });
    GraphInfo {
        file: format!("{}.onnx", g.role),
        inputs: g.inputs.iter().map(tensor_info).collect(),
        outputs: g.outputs.iter().map(tensor_info).chain(probes).collect(),
    }
}

/// How to drive the graphs: the standard wiring for the checkpoint's observations, and the
/// task's timing and definition.
fn bundle_contract(ckpt: &Checkpoint, facts: &TaskFacts) -> Contract {
    let pixels = ckpt.obs.uses_pixels();
    let state = ckpt.sizes.obs_state.is_some();
    let observations: Vec<ObservationKind> = [
        (state, ObservationKind::State),
        (pixels, ObservationKind::Pixels),
    ]
    .into_iter()
    .filter_map(|(used, kind)| used.then_some(kind))
    .collect();
    Contract::standard(
        &observations,
        facts.physics_step_s,
        TaskDefinition {
            source: facts.definition_source.clone(),
            version: facts.definition_version,
        },
    )
}

/// Writes `manifest.json` into `dir`.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest).map_err(|e| ExportError::Serialize {
        graph: MANIFEST_FILE.to_string(),
        message: e.to_string(),
    })?;
    fs::write(&path, text + "\n").map_err(ExportError::io(&path))
}
