//! The agent: one observation in, one action out, latent state kept inside.
//!
//! Which graphs a step runs is the step mode's business (`crate::step`); the agent adds what
//! every mode shares: the noise generator, the safe action after a failure, warm-up and the
//! fault counters.

use std::path::Path;

use dreamer_bundle::{Authenticity, Bundle, Manifest};
use dreamer_ort::OrtRuntime;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{LoadError, StepError};
use crate::options::{AgentOptions, Noise, SafeAction};
use crate::provider::GraphPlacement;
use crate::step::{self, ObservationSizes, StepGraphs};

pub use crate::step::{Latent, Observation};

/// Steps taken since load (warm-up excluded), and how many failed, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounters {
    pub steps: u64,
    /// Observations refused (missing, wrong size, NaN or infinite).
    pub bad_observations: u64,
    /// ONNX Runtime errors and non-finite policy outputs.
    pub runtime_errors: u64,
}

impl StepCounters {
    pub fn faults(&self) -> u64 {
        self.bad_observations + self.runtime_errors
    }
}

/// A loaded policy with its latent state.
#[derive(Debug)]
pub struct Agent {
    manifest: Manifest,
    authenticity: Authenticity,
    runtime: &'static OrtRuntime,
    /// The graphs of `options.mode`, holding the latent state and previous action.
    graphs: Box<dyn StepGraphs>,
    options: AgentOptions,
    /// The action most recently handed out (policy or safe action) `[A]`.
    action: Vec<f32>,
    /// Safe action when `SafeAction::Fixed`, else zeros `[A]`.
    fixed_action: Vec<f32>,
    surprise: f32,
    rng: Option<ChaCha8Rng>,
    counters: StepCounters,
    observation_sizes: ObservationSizes,
}

impl Agent {
    /// Opens a bundle: checks its signature against `options.trusted_keys` (when any), the
    /// manifest's version and values and every file's sha256, creates the sessions for
    /// `options.mode` from the verified graph bytes, and warms up.
    pub fn load(bundle_dir: &Path, options: AgentOptions) -> Result<Agent, LoadError> {
        let bundle = Bundle::open(bundle_dir, &options.trusted_keys)?;
        let manifest = &bundle.manifest;
        if manifest.batch != 1 {
            return Err(LoadError::Manifest {
                graph: "*".to_string(),
                message: format!(
                    "batch is {}; the agent drives one system (batch 1)",
                    manifest.batch
                ),
            });
        }
        let action_size = manifest.action.size as usize;
        let fixed_action = match &options.safe_action {
            SafeAction::Fixed(v) if v.len() != action_size => {
                return Err(LoadError::Options(format!(
                    "the fixed safe action has {} values, the policy's action has {action_size}",
                    v.len()
                )));
            }
            SafeAction::Fixed(v) if v.iter().any(|x| !x.is_finite()) => {
                return Err(LoadError::Options(
                    "the fixed safe action is not finite".to_string(),
                ));
            }
            SafeAction::Fixed(v) => v.clone(),
            _ => vec![0.0; action_size],
        };
        let runtime = dreamer_ort::load(options.ort_lib.as_deref())?;
        let graphs = step::open(&bundle, &options)?;
        let observation_sizes = ObservationSizes::of(manifest);
        // The graph bytes are in the sessions now; only the manifest is kept.
        let Bundle {
            manifest,
            authenticity,
            ..
        } = bundle;
        let mut agent = Agent {
            runtime,
            graphs,
            action: vec![0.0; action_size],
            fixed_action,
            surprise: 0.0,
            rng: None,
            counters: StepCounters::default(),
            observation_sizes,
            options,
            manifest,
            authenticity,
        };
        agent.warm_up()?;
        Ok(agent)
    }

    fn warm_up(&mut self) -> Result<(), LoadError> {
        let sizes = self.observation_sizes;
        let state = vec![0.0f32; sizes.state];
        let pixels = vec![0u8; sizes.pixels];
        let obs = Observation {
            state: (sizes.state > 0).then_some(&state[..]),
            pixels: (sizes.pixels > 0).then_some(&pixels[..]),
        };
        for _ in 0..self.options.warmup_steps {
            self.step(&obs).map_err(LoadError::Warmup)?;
        }
        self.reset();
        self.counters = StepCounters::default();
        if let Noise::Sampled { seed } = self.options.noise {
            self.rng = Some(ChaCha8Rng::seed_from_u64(seed));
        }
        Ok(())
    }

    /// Starts a new episode: h, s and the previous action back to zero.
    pub fn reset(&mut self) {
        self.action.fill(0.0);
        self.surprise = 0.0;
        self.graphs.reset();
    }

    /// One control step. On success returns the policy's action (normalised, `[A]`); on
    /// failure the error, with the safe action in [`Agent::action`], the latent state
    /// unchanged and the fault counted. Allocates nothing in steady state.
    ///
    /// In [`GraphMode::Split`] the step runs only `policy_observe` when [`Agent::prepare`]
    /// was called since the last step, and prepares first otherwise.
    ///
    /// [`GraphMode::Split`]: crate::GraphMode::Split
    pub fn step(&mut self, obs: &Observation<'_>) -> Result<&[f32], StepError> {
        self.counters.steps += 1;
        match self.graphs.step(obs, self.rng.as_mut(), &mut self.action) {
            Ok(surprise) => {
                self.surprise = surprise;
                Ok(&self.action)
            }
            Err(error) => {
                match error {
                    StepError::Runtime { .. } | StepError::NonFiniteOutput { .. } => {
                        self.counters.runtime_errors += 1
                    }
                    _ => self.counters.bad_observations += 1,
                }
                self.apply_safe_action();
                Err(error)
            }
        }
    }

    /// Makes `action` (normalised, `[A]`) the action sent for the current step in place of
    /// the policy's: the policy's action with exploration noise, say, as the trainer collects
    /// experience, or what an actuator's own limits made of it. The next step's transition
    /// starts from it. Call it before [`Agent::prepare`]. A wrong length or a non-finite
    /// value is an error and leaves the policy's action. Allocates nothing.
    pub fn override_action(&mut self, action: &[f32]) -> Result<(), StepError> {
        if action.len() != self.action.len() || action.iter().any(|x| !x.is_finite()) {
            return Err(StepError::InvalidAction {
                expected: self.action.len(),
                got: action.len(),
            });
        }
        self.action.copy_from_slice(action);
        self.graphs.set_previous_action(&self.action);
        Ok(())
    }

    /// Puts the safe action in `action` and makes it the previous action the model sees next.
    fn apply_safe_action(&mut self) {
        match self.options.safe_action {
            // `action` already holds the last action sent.
            SafeAction::Hold => {}
            SafeAction::Zero | SafeAction::Fixed(_) => {
                self.action.copy_from_slice(&self.fixed_action)
            }
        }
        self.graphs.set_previous_action(&self.action);
    }

    /// [`GraphMode::Split`]: computes the next step's transition and prior from the latent
    /// state and the action just handed out (`rssm_img_step`, zero noise), so the next
    /// [`Agent::step`] runs only `policy_observe`. Call it right after the action is out, in
    /// the slack before the next observation. Does nothing in the other modes or when already
    /// prepared. On failure the next step prepares again (and counts a failure there). The
    /// latent state does not change. Allocates nothing.
    ///
    /// [`GraphMode::Split`]: crate::GraphMode::Split
    pub fn prepare(&mut self) -> Result<(), StepError> {
        self.graphs.prepare()
    }

    /// Runs the step's graphs on the current inputs and discards the results: the latent
    /// state, action and counters do not change. At low control rates the weights fall out of
    /// the CPU caches between steps; priming shortly before a deadline brings them back so
    /// the real step runs warm. Allocates nothing.
    pub fn prime(&mut self) -> Result<(), StepError> {
        self.graphs.prime()
    }

    /// The action most recently handed out: the policy's, or the safe action after a failure.
    pub fn action(&self) -> &[f32] {
        &self.action
    }

    /// KL(posterior || prior) of the last successful step, summed over the stochastic
    /// dimensions: large when the observation surprises the model.
    pub fn surprise(&self) -> f32 {
        self.surprise
    }

    /// The posterior latent state after the last successful step.
    pub fn latent(&self) -> Latent<'_> {
        self.graphs.latent()
    }

    pub fn counters(&self) -> StepCounters {
        self.counters
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the bundle's signature was checked at load, and by which trusted key.
    pub fn authenticity(&self) -> &Authenticity {
        &self.authenticity
    }

    pub fn options(&self) -> &AgentOptions {
        &self.options
    }

    /// The ONNX Runtime library in use.
    pub fn runtime(&self) -> &'static OrtRuntime {
        self.runtime
    }

    /// Which provider runs each graph.
    pub fn placements(&self) -> Vec<&GraphPlacement> {
        self.graphs.placements()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_can_move_to_a_control_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Agent>();
    }
}
