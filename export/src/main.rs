//! `dreamer-export CHECKPOINT_DIR --out BUNDLE_DIR [--batch N] [--fp16] [--no-verify]
//! [--ort-lib FILE] [--eval-return R] [--sign-key FILE]`
//!
//! `dreamer-export keygen --out DIR/NAME`: a signing key pair, `NAME.secret` and `NAME.pub`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dreamer_cli::stdout::print_line;
use dreamer_export::{BundleArgs, ExportOptions};

/// Turns a Dreamer checkpoint into a verified ONNX model bundle.
///
/// `dreamer-export keygen --out DIR/NAME` makes a key pair for `--sign-key`.
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

/// Makes an ed25519 key pair for signing bundles.
#[derive(Debug, Parser)]
#[command(name = "dreamer-export keygen")]
struct KeygenArgs {
    /// Path prefix of the key pair: writes `<OUT>.secret` (mode 0600; keep it in a secrets
    /// store, pass it to `--sign-key`) and `<OUT>.pub` (give it to runtimes as
    /// `--trusted-key`). Refuses to overwrite an existing key.
    #[arg(long, value_name = "DIR/NAME")]
    out: PathBuf,
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let (secret, public, fingerprint) = dreamer_bundle::generate_key_pair(&args.out)?;
    print_line(format_args!(
        "wrote {} (secret, keep private) and {} (public), key {fingerprint}",
        secret.display(),
        public.display()
    ))
    .map_err(|e| anyhow::Error::new(e.0).context("writing to stdout"))
}

fn main() -> anyhow::Result<()> {
    // A subcommand beside the positional checkpoint folder: dispatched before parsing, so
    // the export's own arguments keep their shape.
    if std::env::args_os().nth(1).is_some_and(|a| a == "keygen") {
        let args = KeygenArgs::parse_from(std::env::args_os().skip(1));
        return keygen(&args);
    }
    let args = Args::parse();
    let options = ExportOptions {
        verify: !args.no_verify,
        eval_return: args.eval_return,
        ..args.bundle.options()
    };
    let report = args
        .bundle
        .export(&args.checkpoint_dir, &options)
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
