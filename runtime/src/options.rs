//! What can be chosen when loading an agent: graphs, noise, safe action, sessions.

use std::path::PathBuf;

use dreamer_bundle::PublicKey;

use crate::provider::{DeviceOptions, Provider};

/// Which graphs a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphMode {
    /// The fused `policy_step` graph: one ONNX Runtime call per step.
    #[default]
    Fused,
    /// `encoder`, then `rssm_obs_step`, then `actor`: for devices or providers that cannot
    /// take the fused graph. Surprise is computed here from the posterior and prior.
    Separate,
    /// The fused step split in two: [`Agent::prepare`] runs `rssm_img_step` (zero noise) on
    /// the latent and action once the action is out, and [`Agent::step`] runs only
    /// `policy_observe` on the observation. Same actions as `Fused`, shorter
    /// observation-to-action path. Needs a bundle with `policy_observe`.
    ///
    /// [`Agent::prepare`]: crate::Agent::prepare
    /// [`Agent::step`]: crate::Agent::step
    Split,
}

/// Sampling noise fed to the posterior and the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Noise {
    /// All zeros: the deterministic policy (posterior mean, action `tanh(mean)`).
    #[default]
    Zero,
    /// Standard normal noise from a ChaCha8 generator with this seed: the stochastic policy.
    Sampled { seed: u64 },
}

/// What a failed step hands to the actuator instead of a policy action.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SafeAction {
    /// Repeat the last action sent.
    #[default]
    Hold,
    /// All zeros (the middle of the normalised range).
    Zero,
    /// This vector (normalised units, length = action size).
    Fixed(Vec<f32>),
}

/// Everything that can be set when loading an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// ONNX Runtime library to load; `None` searches (see `dreamer_ort`).
    pub ort_lib: Option<PathBuf>,
    pub provider: Provider,
    pub device: DeviceOptions,
    /// Run on CPU when the requested provider cannot be registered, instead of failing.
    pub allow_fallback: bool,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Let ONNX Runtime's worker threads spin while idle (lower median latency, but they
    /// steal cores from the control loop on small machines).
    pub spinning: bool,
    pub mode: GraphMode,
    pub noise: Noise,
    pub safe_action: SafeAction,
    /// Steps run on zero observations at load time so the first real step is not slow.
    pub warmup_steps: u32,
    /// Keys one of which must have signed the bundle (`manifest.json.sig`); empty: the
    /// bundle's origin is not checked (see [`Agent::authenticity`]).
    ///
    /// [`Agent::authenticity`]: crate::Agent::authenticity
    pub trusted_keys: Vec<PublicKey>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            ort_lib: None,
            provider: Provider::Cpu,
            device: DeviceOptions::default(),
            allow_fallback: false,
            intra_threads: 1,
            spinning: false,
            mode: GraphMode::Fused,
            noise: Noise::Zero,
            safe_action: SafeAction::Hold,
            warmup_steps: 10,
            trusted_keys: Vec::new(),
        }
    }
}
