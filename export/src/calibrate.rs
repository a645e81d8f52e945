//! Calibration of an int8 bundle: the float32 policy step, with every quantizable layer's
//! input as an extra output (`graphs::probe_graph`), run in closed loop over episodes of
//! the run's own replay; the range (min, max) each input takes there sets its
//! quantization.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dreamer_bundle::{GraphForm, names};
use dreamer_episode::{Episode, FRAME_BYTES, Layout};

use crate::checkpoint::Checkpoint;
use crate::error::ExportError;
use crate::graphs::{self, probe_output};
use crate::manifest::graph_info;
use crate::quantize::ActivationQuant;
use crate::verify::feeds::{self, Feed, Latent, Noise};
use crate::verify::init_onnxruntime;
use crate::verify::session::Graph;

/// The activation ranges of every quantizable layer, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The replay folder read.
    pub replay: PathBuf,
    pub episodes: usize,
    pub steps: usize,
    /// Probe key -> (min, max) over every calibration step.
    pub ranges: BTreeMap<String, (f32, f32)>,
}

impl Calibration {
    /// The uint8 quantization of the activation under probe `key`. Every key of every graph
    /// is present: the probes are those of `policy_step`, which holds every layer.
    pub fn quant(&self, key: &str) -> ActivationQuant {
        let (lo, hi) = self.ranges.get(key).copied().unwrap_or((0.0, 0.0));
        ActivationQuant::from_range(lo, hi)
    }
}

/// The replay folder of the run a checkpoint folder belongs to: `<run>/replay` beside
/// `<run>/checkpoint` and `<run>/best`.
pub fn default_replay(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("replay")
}

/// Runs the probe graph over up to `max_steps` steps of the newest episodes in `replay`
/// (those of the trained policy, whose observations the deployed bundle will see), each
/// from the zero latent with the recorded actions and zero noise.
pub fn calibrate(
    ckpt: &Checkpoint,
    form: GraphForm,
    replay: &Path,
    max_steps: usize,
    onnxruntime: Option<&Path>,
) -> Result<Calibration, ExportError> {
    let fail = |message: String| ExportError::Calibration {
        path: replay.to_path_buf(),
        message,
    };
    let files = dreamer_episode::list(replay).map_err(|e| fail(e.to_string()))?;
    if files.is_empty() {
        return Err(fail(
            "no episode files (ep*.npz): an int8 bundle is calibrated on the run's replay \
             (--calibration-replay names another folder)"
                .to_string(),
        ));
    }
    let layout = Layout {
        action: ckpt.sizes.action,
        state: ckpt.sizes.obs_state.unwrap_or(0),
        pixels: ckpt.obs.uses_pixels(),
    };
    let probe = graphs::probe_graph(ckpt, form).map_err(|e| ExportError::Serialize {
        graph: "calibration".to_string(),
        message: e.to_string(),
    })?;
    let runtime = init_onnxruntime(onnxruntime)?;
    let mut graph = Graph::from_model(
        runtime.environment(),
        probe.role,
        PathBuf::from("calibration policy_step (in memory)"),
        graph_info(&probe),
        &probe.bytes,
    )?;
    let mut calibration = Calibration {
        replay: replay.to_path_buf(),
        episodes: 0,
        steps: 0,
        ranges: BTreeMap::new(),
    };
    for file in files.iter().rev() {
        if calibration.steps >= max_steps {
            break;
        }
        let episode = dreamer_episode::load(file, layout).map_err(|e| fail(e.to_string()))?;
        let steps = episode.len().min(max_steps - calibration.steps);
        let latent = (ckpt.sizes.deter, ckpt.sizes.stoch);
        run_episode(
            &mut graph,
            &episode,
            (layout, latent, steps),
            &probe.probes,
            &mut calibration,
        )?;
        calibration.episodes += 1;
        calibration.steps += steps;
    }
    if calibration.steps == 0 {
        return Err(fail("the episodes hold no steps".to_string()));
    }
    Ok(calibration)
}

/// The first `steps` steps of `episode` through the probe graph, widening the ranges.
fn run_episode(
    graph: &mut Graph,
    episode: &Episode,
    (layout, (d, s), steps): (Layout, (usize, usize), usize),
    probes: &[String],
    calibration: &mut Calibration,
) -> Result<(), ExportError> {
    let a = layout.action;
    let mut h = vec![0.0; d];
    let mut z = vec![0.0; s];
    for t in 0..steps {
        let mut observation = Vec::new();
        if layout.pixels {
            let frame = &episode.pixels[t * FRAME_BYTES..][..FRAME_BYTES];
            observation.push((names::OBS_PIXELS, Feed::U8(frame.to_vec())));
        }
        if layout.state > 0 {
            let state = &episode.state[t * layout.state..][..layout.state];
            observation.push((names::OBS_STATE, Feed::F32(state.to_vec())));
        }
        let from = Latent {
            h,
            s: z,
            action: episode.action[t * a..][..a].to_vec(),
        };
        let noise = Noise {
            state: vec![0.0; s],
            action: vec![0.0; a],
        };
        let mut out = graph.run(feeds::policy_step(observation, from, noise))?;
        for name in probes {
            let values = out.get(name).map(Vec::as_slice).unwrap_or_default();
            let key = name.strip_prefix(&probe_output("")).unwrap_or(name);
            let range = calibration
                .ranges
                .entry(key.to_string())
                .or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &v in values {
                range.0 = range.0.min(v);
                range.1 = range.1.max(v);
            }
        }
        h = out.remove(names::H_NEXT).unwrap_or_default();
        z = out.remove(names::S_NEXT).unwrap_or_default();
    }
    Ok(())
}
