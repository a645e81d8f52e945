//! `doctor`: checks what running a policy needs on this machine (the ONNX Runtime library
//! and its providers, CPUs, real-time permission, optionally a bundle) and prints the fix for
//! each failure.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use dreamer_bundle as bundle;
use dreamer_runtime::{Agent, AgentOptions, Provider, control};

use dreamer_cli::outln;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Bundle folder to load and step once.
    pub bundle: Option<PathBuf>,
}

pub fn doctor(bundle_dir: Option<&Path>, ort_lib: Option<PathBuf>) -> Result<()> {
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
    if let Some(dir) = bundle_dir {
        match bundle::open(dir) {
            Ok(manifest) => {
                outln!(
                    "ok    bundle {}: task {}, {} graphs, checksums match",
                    dir.display(),
                    manifest.task.name,
                    manifest.graphs.len()
                );
                if runtime.is_some() {
                    match Agent::load(
                        dir,
                        AgentOptions {
                            ort_lib: ort_lib.clone(),
                            ..AgentOptions::default()
                        },
                    ) {
                        Ok(agent) => outln!(
                            "ok    policy loaded and stepped (warm-up) on {}",
                            agent.placements()[0].primary()
                        ),
                        Err(e) => {
                            failures += 1;
                            outln!("FAIL  {e}");
                            outln!(
                                "      fix: re-export the bundle with dreamer-export, or check it was copied whole"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                outln!("FAIL  {e}");
                outln!(
                    "      fix: copy the bundle folder again (all files and manifest.json), or re-export it"
                );
            }
        }
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
