//! `doctor`: checks what running a policy needs on this machine (the ONNX Runtime library
//! and its providers, CPUs, real-time permission, optionally a bundle) and prints the fix for
//! each failure.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use dreamer_bundle::{Authenticity, Bundle};
use dreamer_runtime::{Agent, AgentOptions, Provider, control};

use crate::agent_args::TrustArgs;
use dreamer_cli::outln;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub bundle: BundleCheck,
}

/// The bundle to check, if any, and the keys it must be signed by.
#[derive(Debug, Args)]
pub struct BundleCheck {
    /// Bundle folder to load and step once.
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl BundleCheck {
    /// The bundle check asked for: `None` when neither a bundle nor a key was given. (Named
    /// after `Option::as_deref`, which the dispatcher called when this was a plain path.)
    pub fn as_deref(&self) -> Option<&BundleCheck> {
        (self.bundle.is_some() || !self.trust.trusted_keys.is_empty()).then_some(self)
    }
}

pub fn doctor(check: Option<&BundleCheck>, ort_lib: Option<PathBuf>) -> Result<()> {
    let mut failures = 0;
    outln!("dreamer-rt {}", env!("CARGO_PKG_VERSION"));
    outln!("ONNX Runtime library search:");
    for candidate in dreamer_ort::candidates(ort_lib.as_deref()) {
        outln!(
            "  {} ({}): {}",
            candidate.path.display(),
            candidate.source,
            if candidate.path.is_file() {
                "found"
            } else {
                "missing"
            }
        );
    }
    let runtime = match dreamer_ort::load(ort_lib.as_deref()) {
        Ok(runtime) => {
            outln!(
                "ok    ONNX Runtime {} loaded from {}",
                runtime.version,
                runtime.path.display()
            );
            outln!("      {}", runtime.build_info);
            Some(runtime)
        }
        Err(e) => {
            failures += 1;
            outln!("FAIL  {e}");
            None
        }
    };
    if runtime.is_some() {
        match dreamer_ort::available_providers() {
            Ok(list) => {
                outln!(
                    "ok    execution providers in the library: {}",
                    list.join(", ")
                );
                for provider in [Provider::Cuda, Provider::TensorRt] {
                    let in_lib = list.iter().any(|p| p == provider.ort_name());
                    let compiled = provider.compiled_in();
                    let state = match (in_lib, compiled) {
                        (true, true) => "usable (--provider {p})".to_string(),
                        (true, false) => "in the library, but this binary lacks it: rebuild with `--features {p}`".to_string(),
                        (false, true) => "compiled in, but the library lacks it: load a GPU build of ONNX Runtime (docs/jetson.md)".to_string(),
                        (false, false) => "not available (CPU build)".to_string(),
                    };
                    outln!(
                        "      {provider}: {}",
                        state.replace("{p}", &provider.to_string())
                    );
                }
            }
            Err(e) => {
                failures += 1;
                outln!("FAIL  cannot list execution providers: {e}");
            }
        }
    }
    outln!(
        "ok    CPUs: {} online, {} usable by this process",
        control::online_cpus(),
        control::allowed_cpus()
    );
    match realtime_permitted() {
        Ok(()) => outln!("ok    SCHED_FIFO real-time priority is permitted"),
        Err(e) => outln!(
            "note  SCHED_FIFO not permitted ({e}): loops run at normal priority; grant \
             CAP_SYS_NICE (`sudo setcap cap_sys_nice+ep dreamer-rt`) or an rtprio limit"
        ),
    }
    if let Some(check) = check {
        failures += check_bundle(check, ort_lib, runtime.is_some());
    }
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    outln!("all checks passed");
    Ok(())
}

/// Tries SCHED_FIFO on a short-lived thread, so the caller's scheduling is untouched.
fn realtime_permitted() -> Result<(), String> {
    std::thread::spawn(|| control::set_fifo_priority(1))
        .join()
        .unwrap_or_else(|_| Err("probe thread failed".to_string()))
}

/// Reads the trusted keys, opens the bundle through the same loader as `run` (signature,
/// values, file hashes), then loads and steps it when ONNX Runtime is there. Returns the
/// number of failed checks.
fn check_bundle(check: &BundleCheck, ort_lib: Option<PathBuf>, have_runtime: bool) -> u32 {
    let keys = match check.trust.keys() {
        Ok(keys) => {
            for key in &keys {
                outln!(
                    "ok    trusted key {} ({})",
                    key.fingerprint(),
                    key.origin().display()
                );
            }
            keys
        }
        Err(e) => {
            outln!("FAIL  {e:#}");
            outln!("      fix: pass the `.pub` file written by `dreamer-export keygen`");
            return 1;
        }
    };
    let Some(dir) = check.bundle.as_deref() else {
        return 0;
    };
    let opened = match Bundle::open(dir, &keys) {
        Ok(opened) => opened,
        Err(e) => {
            outln!("FAIL  {e}");
            outln!(
                "      fix: copy the bundle folder again (every file, manifest.json.sig included), \
                 re-export it, or check that it comes from whom you think"
            );
            return 1;
        }
    };
    let m = &opened.manifest;
    outln!(
        "ok    bundle {}: task {}, {} graphs, manifest values consistent, {} files match their sha256",
        dir.display(),
        m.task.name,
        m.graphs.len(),
        m.files.len()
    );
    match &opened.authenticity {
        Authenticity::NotChecked => outln!("note  {}", opened.authenticity),
        verified => outln!("ok    {verified}"),
    }
    if !have_runtime {
        return 0;
    }
    let options = AgentOptions {
        ort_lib,
        trusted_keys: keys,
        ..AgentOptions::default()
    };
    match Agent::load(dir, options) {
        Ok(agent) => {
            outln!(
                "ok    policy loaded and stepped (warm-up) on {}",
                agent.placements()[0].primary()
            );
            0
        }
        Err(e) => {
            outln!("FAIL  {e}");
            outln!(
                "      fix: re-export the bundle with dreamer-export, or check it was copied whole"
            );
            1
        }
    }
}
