//! The agent options every subcommand that loads a policy takes (provider, threads, step
//! mode, noise, safe action, trusted keys), and loading the agent with them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use dreamer_bundle::{Authenticity, Bundle, PublicKey};
use dreamer_runtime::{Agent, AgentOptions, DeviceOptions, GraphMode, Noise, Provider, SafeAction};

/// Which keys a bundle must be signed by; every command that opens a bundle takes these.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Public key file (`dreamer-ed25519-public <hex>`, from `dreamer-export keygen`): the
    /// bundle must carry a signature by it (repeat for several keys; any one suffices).
    /// Without one, the bundle's origin is not checked.
    #[arg(long = "trusted-key", value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
}

impl TrustArgs {
    /// Reads the key files; the error names the bad one.
    pub fn keys(&self) -> Result<Vec<PublicKey>> {
        self.trusted_keys
            .iter()
            .map(|path| PublicKey::read(path).context("cannot use the trusted key"))
            .collect()
    }

    /// Opens the bundle at `dir` through the one loader, signature checked against these keys.
    pub fn open(&self, dir: &Path) -> Result<Bundle> {
        Bundle::open(dir, &self.keys()?)
            .with_context(|| format!("cannot open the bundle {}", dir.display()))
    }
}

/// The one-line stderr notice when a bundle's origin was not checked; once per process
/// (`bench` loads the same bundle several times).
pub fn warn_if_unchecked(bundle_dir: &Path, authenticity: &Authenticity) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if *authenticity == Authenticity::NotChecked && !SAID.swap(true, Ordering::Relaxed) {
        dreamer_cli::errln!("note: {}: {authenticity}", bundle_dir.display());
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Execution provider: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu")]
    provider: Provider,
    /// CUDA device ordinal (cuda, tensorrt).
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// Let TensorRT use fp16 kernels.
    #[arg(long)]
    fp16: bool,
    /// Folder for TensorRT engines (reused across starts).
    #[arg(long, value_name = "DIR")]
    trt_engine_cache: Option<PathBuf>,
    /// Folder for TensorRT's timing cache.
    #[arg(long, value_name = "DIR")]
    trt_timing_cache: Option<PathBuf>,
    /// Run on CPU if the requested provider cannot be used (otherwise that is an error).
    #[arg(long)]
    allow_fallback: bool,
    /// ONNX Runtime intra-op threads per graph.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Let ONNX Runtime's idle threads spin (faster median, worse tail on small machines).
    #[arg(long)]
    spin: bool,
    /// Run encoder, rssm_obs_step and actor separately instead of the fused policy_step.
    #[arg(long, conflicts_with = "split")]
    separate: bool,
    /// Split each step: rssm_img_step right after the action is out, policy_observe on the
    /// next observation (needs a bundle with policy_observe).
    #[arg(long)]
    split: bool,
    /// Sample the policy with this noise seed (default: deterministic, zero noise).
    #[arg(long, value_name = "SEED")]
    sample_noise: Option<u64>,
    /// Action on a refused observation or runtime error: hold, zero, or values `a,b,...`.
    #[arg(long, default_value = "hold", value_parser = parse_safe_action)]
    safe_action: SafeAction,
    #[command(flatten)]
    trust: TrustArgs,
}

fn parse_safe_action(text: &str) -> Result<SafeAction, String> {
    match text {
        "hold" => Ok(SafeAction::Hold),
        "zero" => Ok(SafeAction::Zero),
        list => list
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map(SafeAction::Fixed)
            .map_err(|_| {
                format!("`{list}` is not hold, zero or a comma-separated list of numbers")
            }),
    }
}

impl AgentArgs {
    /// The agent options these arguments ask for; fails on an unreadable trusted key.
    pub fn options(&self, ort_lib: Option<PathBuf>) -> Result<AgentOptions> {
        Ok(AgentOptions {
            ort_lib,
            provider: self.provider,
            device: DeviceOptions {
                device_id: self.device_id,
                fp16: self.fp16,
                trt_engine_cache: self.trt_engine_cache.clone(),
                trt_timing_cache: self.trt_timing_cache.clone(),
            },
            allow_fallback: self.allow_fallback,
            intra_threads: self.threads,
            spinning: self.spin,
            mode: if self.separate {
                GraphMode::Separate
            } else if self.split {
                GraphMode::Split
            } else {
                GraphMode::Fused
            },
            noise: self
                .sample_noise
                .map_or(Noise::Zero, |seed| Noise::Sampled { seed }),
            safe_action: self.safe_action.clone(),
            warmup_steps: 10,
            trusted_keys: self.trust.keys()?,
        })
    }
}

/// Loads the bundle in `bundle_dir`; the error names the folder. Says on stderr when the
/// bundle's origin was not checked.
pub fn load_agent(bundle_dir: &Path, options: AgentOptions) -> Result<Agent> {
    let agent = Agent::load(bundle_dir, options)
        .with_context(|| format!("cannot load the policy bundle {}", bundle_dir.display()))?;
    warn_if_unchecked(bundle_dir, agent.authenticity());
    Ok(agent)
}
