//! `info`: the bundle's manifest in human terms, opened (signature, values, file hashes)
//! by the same loader as every other command.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dreamer_bundle as bundle;

use crate::agent_args::TrustArgs;
use dreamer_cli::outln;

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub bundle: InfoTarget,
}

/// The bundle to describe and the keys it must be signed by.
#[derive(Debug, Args)]
pub struct InfoTarget {
    /// Bundle folder (holds manifest.json).
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn info(target: &InfoTarget) -> Result<()> {
    let bundle_dir = &target.bundle;
    let opened = target.trust.open(bundle_dir)?;
    let manifest = &opened.manifest;
    let m = &manifest;
    outln!(
        "bundle {} (format {})",
        bundle_dir.display(),
        m.format_version
    );
    outln!(
        "task      {}: one decision every {:.1} ms ({:.1} Hz), action repeat {}, {} decisions per episode",
        m.task.name,
        m.task.control_period_s * 1e3,
        1.0 / m.task.control_period_s,
        m.task.action_repeat,
        m.task.episode_decisions
    );
    if let Some(env) = &m.environment {
        let joined = |items: Vec<String>| items.join(", ");
        outln!(
            "env       {} `{}` kwargs {{{}}} ({} env steps per episode; {}), layout [{}]",
            env.package,
            env.id,
            joined(
                env.kwargs
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {v}"))
                    .collect()
            ),
            env.episode_env_steps,
            joined(
                env.versions
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect()
            ),
            joined(
                env.state_layout
                    .iter()
                    .map(|leaf| format!("{} {:?} {}", leaf.name, leaf.shape, leaf.dtype))
                    .collect()
            )
        );
    }
    if let Some(state) = &m.observation.state {
        outln!(
            "observe   state: {} values [{}]",
            state.size,
            state.fields.join(", ")
        );
    }
    if let Some(p) = &m.observation.pixels {
        outln!(
            "observe   pixels: {}x{}x{} u8 {} (graph computes {})",
            p.height,
            p.width,
            p.channels,
            p.layout,
            p.preprocess
        );
    }
    let a = &m.action;
    outln!(
        "act       {} values, normalised {:?} .. {:?}",
        a.size,
        a.low,
        a.high
    );
    outln!(
        "          physical range: {:?} .. {:?}",
        a.physical_low,
        a.physical_high
    );
    let kind = match m.latent.classes {
        0 => "Gaussian".to_string(),
        k => format!("{} categoricals of {k}", m.latent.stoch / k),
    };
    outln!(
        "latent    deter {}, stoch {} ({kind}), embed {}, start {}, min std {}",
        m.latent.deter,
        m.latent.stoch,
        m.latent.embed,
        m.latent.initial,
        m.latent.min_std
    );
    outln!(
        "model     {} weights, opset {}, IR {}, batch {}",
        m.precision,
        m.opset,
        m.ir_version,
        m.batch
    );
    outln!(
        "trained   {} env steps, {} updates{}",
        m.training.env_steps,
        m.training.updates,
        m.training
            .eval_return
            .map_or(String::new(), |r| format!(", eval return {r:.2}"))
    );
    for (key, value) in &m.training.config {
        outln!("          {key} = {value}");
    }
    outln!("graphs:");
    for (role, graph) in &m.graphs {
        let size = opened.graph_bytes(role).map_or(0, <[u8]>::len);
        outln!("  {role} ({}, {:.1} KiB)", graph.file, size as f64 / 1024.0);
        let fmt = |t: &bundle::TensorInfo| format!("{} {:?} {:?}", t.name, t.dtype, t.shape);
        outln!(
            "    in:  {}",
            graph.inputs.iter().map(fmt).collect::<Vec<_>>().join(", ")
        );
        outln!(
            "    out: {}",
            graph.outputs.iter().map(fmt).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(v) = &m.verification {
        outln!(
            "verified  against the trainer with ONNX Runtime {} over {} closed-loop steps",
            v.onnxruntime_version,
            v.trajectory_steps
        );
        for (graph, err) in &v.random_max_abs_err {
            outln!("  {graph}: max abs error {err:.2e} on random inputs");
        }
        if let Some(e) = v.trajectory_step_max_abs_err {
            outln!("  trajectory: max abs error per step {e:.2e}");
        }
        if let Some(e) = v.trajectory_final_latent_max_abs_err {
            outln!("  trajectory: final latent max abs error {e:.2e}");
        }
    } else {
        outln!("verified  no (the manifest carries no verification record)");
    }
    outln!(
        "files     {} checked, sha256 ok, every graph listed",
        m.files.len()
    );
    outln!("origin    {}", opened.authenticity);
    Ok(())
}
