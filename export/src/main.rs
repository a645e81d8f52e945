//! `dreamer-export CHECKPOINT_DIR --out BUNDLE_DIR [--batch N] [--fp16] [--no-verify]`

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dreamer_export::{ExportOptions, Precision};

/// Turns a Dreamer checkpoint into a verified ONNX model bundle.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Checkpoint folder (model.safetensors, config.toml, state.json, reference.safetensors).
    checkpoint_dir: PathBuf,
    /// Bundle folder to write; an existing bundle there is replaced once the new one verified.
    #[arg(long)]
    out: PathBuf,
    /// Static batch size of every graph.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Store the weights as float16 (computation stays float32).
    #[arg(long)]
    fp16: bool,
    /// Skip the ONNX Runtime verification against the checkpoint's reference file.
    #[arg(long)]
    no_verify: bool,
    /// ONNX Runtime library (default: $ORT_DYLIB_PATH, $DREAMER_ORT_DYLIB, the project's .deps).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Mean evaluation return to record in the manifest.
    #[arg(long)]
    eval_return: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = ExportOptions {
        batch: args.batch,
        precision: if args.fp16 {
            Precision::Float16
        } else {
            Precision::Float32
        },
        verify: !args.no_verify,
        onnxruntime: args.onnxruntime,
        eval_return: args.eval_return,
    };
    let report = dreamer_export::export(&args.checkpoint_dir, &args.out, &options)
        .with_context(|| format!("exporting {}", args.checkpoint_dir.display()))?;
    println!("{}", report.summary());
    Ok(())
}
