//! The options and reports of recording experience on the device, shared by `run` (episodes
//! of a built-in task) and `serve` (the episodes a firmware reports): the spool and device
//! name, the policy's id in episode ids, and what recording and upload did at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use dreamer_bundle::Manifest;
use dreamer_online::upload::Uploader;
use dreamer_runtime::record::{Layout, RecordOptions, Recorder};

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Record every episode into this spool folder as episode files in the trainer's
    /// replay format: DIR/<device>/<policy>/ep<number>-<len>.npz, numbered on across runs.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// This device's name in recorded episode ids.
    #[arg(long, default_value = "device0", requires = "record")]
    pub device: String,
}

impl RecordArgs {
    /// A recorder for the policy of `bundle`, if recording was asked for; `max_steps`: the
    /// longest episode, its first observation included.
    pub fn start(
        &self,
        bundle: &Path,
        manifest: &Manifest,
        max_steps: usize,
    ) -> Result<Option<Recorder>> {
        let Some(spool) = &self.record else {
            return Ok(None);
        };
        let options = RecordOptions {
            spool: spool.clone(),
            device: self.device.clone(),
            policy: policy_id(bundle)?,
            layout: Layout {
                action: manifest.action.size as usize,
                state: manifest
                    .observation
                    .state
                    .as_ref()
                    .map_or(0, |s| s.size as usize),
                pixels: manifest.observation.pixels.is_some(),
            },
            max_steps,
            buffers: 4,
        };
        Recorder::start(options).context("--record").map(Some)
    }
}

/// The policy's id in recorded episodes: the first 16 hex digits of the sha256 of its
/// bundle's `manifest.json` (which lists every graph's hash).
pub fn policy_id(bundle: &Path) -> Result<String> {
    let manifest_file = bundle.join(dreamer_bundle::MANIFEST_FILE);
    let hash = dreamer_bundle::sha256_file(&manifest_file)
        .with_context(|| format!("cannot hash {}", manifest_file.display()))?;
    Ok(hash.chars().take(16).collect())
}

/// Stops recording once every episode is written; says what was recorded through `say`.
pub fn finish_recording(recorder: Recorder, say: impl Fn(&str)) -> Result<()> {
    let (counters, report) = recorder.finish()?;
    for (id, message) in &report.failed {
        say(&format!("recording: episode {id} not written: {message}"));
    }
    say(&format!(
        "recorded {} episodes into the spool ({} written, {} failed, {} not recorded: no free buffer, {} steps past the episode length)",
        counters.recorded,
        report.written.len(),
        report.failed.len(),
        counters.dropped,
        counters.truncated
    ));
    if let Some(last) = report.written.last() {
        say(&format!("  last episode id {last}"));
    }
    Ok(())
}

/// Uploads for at most `drain` more, leaves the rest in `spool`; says what was uploaded.
pub fn finish_upload(uploader: Uploader, spool: &Path, drain: Duration, say: impl Fn(&str)) {
    let report = uploader.drain(spool, drain);
    say(&format!(
        "uploaded {} episodes ({} already in the stream), {} left in the spool, {} failed attempts",
        report.uploaded.len(),
        report.duplicates.len(),
        report.left_in_spool,
        report.failures
    ));
    if let Some(error) = &report.last_error {
        say(&format!("  last upload error: {error}"));
    }
}
