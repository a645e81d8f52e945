//! `dreamer-export CHECKPOINT_DIR --out BUNDLE_DIR [--batch N] [--fp16] [--no-verify]
//! [--ort-lib FILE] [--eval-return R]`

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dreamer_cli::stdout::print_line;
use dreamer_export::{BundleArgs, ExportOptions};

/// Turns a Dreamer checkpoint into a verified ONNX model bundle.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Checkpoint folder (model.safetensors, config.toml, state.json, reference.safetensors).
    checkpoint_dir: PathBuf,
    #[command(flatten)]
    bundle: BundleArgs,
    /// Skip the ONNX Runtime verification against the checkpoint's reference file.
    #[arg(long)]
    no_verify: bool,
    /// Mean evaluation return to record in the manifest.
    #[arg(long)]
    eval_return: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = ExportOptions {
        verify: !args.no_verify,
        eval_return: args.eval_return,
        ..args.bundle.options()
    };
    let report = dreamer_export::export(&args.checkpoint_dir, &args.bundle.out, &options)
        .with_context(|| format!("exporting {}", args.checkpoint_dir.display()))?;
    // Not println!: it panics when stdout is closed (`| true`) or full (`>/dev/full`).
    match print_line(format_args!("{}", report.summary())) {
        // The reader has gone; the bundle is written and there is no one to tell.
        Err(e) if !e.is_closed_pipe() => {
            Err(anyhow::Error::new(e.0).context("writing the summary to stdout"))
        }
        _ => Ok(()),
    }
}
