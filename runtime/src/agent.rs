//! The agent: one observation in, one action out, latent state kept inside.

use std::path::{Path, PathBuf};

use dreamer_bundle::{self as bundle, BundleError, Manifest, names};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::graph::GraphRunner;
use dreamer_ort::{OrtLibError, OrtRuntime};
use crate::provider::{DeviceOptions, GraphPlacement, Provider};

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    OrtLibrary(#[from] OrtLibError),
    #[error("graph `{graph}` ({file}): ONNX Runtime cannot create the session: {message}")]
    Session {
        graph: String,
        file: PathBuf,
        message: String,
    },
    #[error("graph `{graph}`: {message}")]
    Manifest { graph: String, message: String },
    #[error(
        "graph `{graph}`: execution provider {provider} is not available: {message} \
         (allow fallback to run on CPU instead)"
    )]
    Provider {
        graph: String,
        provider: Provider,
        message: String,
    },
    #[error("invalid option: {0}")]
    Options(String),
    #[error("warm-up step failed: {0}")]
    Warmup(StepError),
}

/// Why a step did not produce a policy action. The agent has then put its safe action in
/// [`Agent::action`] and left the latent state as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error("observation `{input}` is missing (the policy needs it)")]
    MissingInput { input: &'static str },
    #[error("observation `{input}` has {got} values, the policy needs {expected}")]
    WrongSize {
        input: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("observation `{input}` entry {index} is not finite")]
    NonFinite { input: &'static str, index: usize },
    #[error("ONNX Runtime failed in graph `{graph}`: {message}")]
    Runtime { graph: String, message: String },
    #[error("the policy produced a non-finite {output}")]
    NonFiniteOutput { output: &'static str },
}

/// One observation, borrowed: raw state values and/or raw HWC pixels, as the manifest's
/// `observation` section describes them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation<'a> {
    pub state: Option<&'a [f32]>,
    pub pixels: Option<&'a [u8]>,
}

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

/// Latent state views.
#[derive(Debug, Clone, Copy)]
pub struct Latent<'a> {
    /// Deterministic state `[D]`.
    pub h: &'a [f32],
    /// Stochastic state `[S]`.
    pub s: &'a [f32],
}

/// Where the observation goes in a graph.
#[derive(Debug, Clone, Copy)]
struct ObsInputs {
    state: Option<usize>,
    pixels: Option<usize>,
}

/// Indices of the fused graph's tensors.
#[derive(Debug)]
struct Fused {
    graph: GraphRunner,
    obs: ObsInputs,
    h: usize,
    s: usize,
    prev_action: usize,
    noise: usize,
    action_noise: usize,
    out_action: usize,
    out_h: usize,
    out_s: usize,
    out_surprise: usize,
}

/// The separate graphs and their tensor indices.
#[derive(Debug)]
struct Separate {
    encoder: GraphRunner,
    obs: ObsInputs,
    enc_embed: usize,
    rssm: GraphRunner,
    h: usize,
    s: usize,
    prev_action: usize,
    embed: usize,
    noise: usize,
    out_h: usize,
    out_s: usize,
    out_mean: usize,
    out_std: usize,
    out_prior_mean: usize,
    out_prior_std: usize,
    actor: GraphRunner,
    feat: usize,
    action_noise: usize,
    out_action: usize,
}

/// The split step's graphs and their tensor indices.
#[derive(Debug)]
struct Split {
    /// `rssm_img_step`: its inputs h, s and action hold the latent state and the previous
    /// action; its noise input stays zero.
    prepare: GraphRunner,
    h: usize,
    s: usize,
    prev_action: usize,
    prep_h: usize,
    prep_mean: usize,
    prep_std: usize,
    observe: GraphRunner,
    obs: ObsInputs,
    h_next: usize,
    prior_mean: usize,
    prior_std: usize,
    noise: usize,
    action_noise: usize,
    out_action: usize,
    out_s: usize,
    out_surprise: usize,
    /// Whether `observe`'s h_next and prior are the transition from the current latent and
    /// previous action.
    prepared: bool,
}

#[derive(Debug)]
enum Graphs {
    Fused(Box<Fused>),
    Separate(Box<Separate>),
    Split(Box<Split>),
}

/// A loaded policy with its latent state.
#[derive(Debug)]
pub struct Agent {
    manifest: Manifest,
    runtime: &'static OrtRuntime,
    graphs: Graphs,
    options: AgentOptions,
    /// The action most recently handed out (policy or safe action) `[A]`.
    action: Vec<f32>,
    /// Safe action when `SafeAction::Fixed`, else zeros `[A]`.
    fixed_action: Vec<f32>,
    surprise: f32,
    rng: Option<ChaCha8Rng>,
    counters: StepCounters,
    state_size: usize,
    pixel_size: usize,
}

impl Agent {
    /// Opens a bundle: checks the manifest version and every file's sha256, creates the
    /// sessions for `options.mode`, and warms up.
    pub fn load(bundle_dir: &Path, options: AgentOptions) -> Result<Agent, LoadError> {
        let manifest = bundle::open(bundle_dir)?;
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
        let graphs = match options.mode {
            GraphMode::Fused => {
                Graphs::Fused(Box::new(open_fused(bundle_dir, &manifest, &options)?))
            }
            GraphMode::Separate => {
                Graphs::Separate(Box::new(open_separate(bundle_dir, &manifest, &options)?))
            }
            GraphMode::Split => {
                Graphs::Split(Box::new(open_split(bundle_dir, &manifest, &options)?))
            }
        };
        let state_size = manifest
            .observation
            .state
            .as_ref()
            .map_or(0, |s| s.size as usize);
        let pixel_size = manifest
            .observation
            .pixels
            .as_ref()
            .map_or(0, |p| (p.height * p.width * p.channels) as usize);
        let mut agent = Agent {
            runtime,
            graphs,
            action: vec![0.0; action_size],
            fixed_action,
            surprise: 0.0,
            rng: None,
            counters: StepCounters::default(),
            state_size,
            pixel_size,
            options,
            manifest,
        };
        agent.check_sizes()?;
        agent.warm_up()?;
        Ok(agent)
    }

    /// The graphs' observation inputs must agree with the manifest's observation section.
    fn check_sizes(&self) -> Result<(), LoadError> {
        let (graph, obs) = match &self.graphs {
            Graphs::Fused(f) => (&f.graph, f.obs),
            Graphs::Separate(s) => (&s.encoder, s.obs),
            Graphs::Split(s) => (&s.observe, s.obs),
        };
        let check = |index: Option<usize>, name: &str, expected: usize| match index {
            Some(i) => {
                let len: i64 = graph.input_info(i).shape.iter().product();
                if len as usize != expected {
                    return Err(LoadError::Manifest {
                        graph: graph.role.clone(),
                        message: format!(
                            "input `{name}` holds {len} values but the manifest's observation \
                             section describes {expected}"
                        ),
                    });
                }
                Ok(())
            }
            None if expected > 0 => Err(LoadError::Manifest {
                graph: graph.role.clone(),
                message: format!("the manifest describes `{name}` but the graph has no such input"),
            }),
            None => Ok(()),
        };
        check(obs.state, names::OBS_STATE, self.state_size)?;
        check(obs.pixels, names::OBS_PIXELS, self.pixel_size)?;
        if obs.state.is_none() && obs.pixels.is_none() {
            return Err(LoadError::Manifest {
                graph: graph.role.clone(),
                message: "takes neither `obs_state` nor `obs_pixels`".to_string(),
            });
        }
        Ok(())
    }

    fn warm_up(&mut self) -> Result<(), LoadError> {
        let state = vec![0.0f32; self.state_size];
        let pixels = vec![0u8; self.pixel_size];
        let obs = Observation {
            state: (self.state_size > 0).then_some(&state[..]),
            pixels: (self.pixel_size > 0).then_some(&pixels[..]),
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
        match &mut self.graphs {
            Graphs::Fused(f) => {
                for index in [f.h, f.s, f.prev_action] {
                    f.graph.input_f32(index).fill(0.0);
                }
            }
            Graphs::Separate(s) => {
                for index in [s.h, s.s, s.prev_action] {
                    s.rssm.input_f32(index).fill(0.0);
                }
            }
            Graphs::Split(s) => {
                for index in [s.h, s.s, s.prev_action] {
                    s.prepare.input_f32(index).fill(0.0);
                }
                s.prepared = false;
            }
        }
    }

    /// One control step. On success returns the policy's action (normalised, `[A]`); on
    /// failure the error, with the safe action in [`Agent::action`], the latent state
    /// unchanged and the fault counted. Allocates nothing in steady state.
    ///
    /// In [`GraphMode::Split`] the step runs only `policy_observe` when [`Agent::prepare`]
    /// was called since the last step, and prepares first otherwise.
    pub fn step(&mut self, obs: &Observation<'_>) -> Result<&[f32], StepError> {
        self.counters.steps += 1;
        let outcome = match &mut self.graphs {
            Graphs::Fused(f) => step_fused(f, obs, self.rng.as_mut(), &mut self.action),
            Graphs::Separate(s) => step_separate(s, obs, self.rng.as_mut(), &mut self.action),
            Graphs::Split(s) => step_split(s, obs, self.rng.as_mut(), &mut self.action),
        };
        match outcome {
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

    /// Puts the safe action in `action` and makes it the previous action the model sees next.
    fn apply_safe_action(&mut self) {
        match self.options.safe_action {
            // `action` already holds the last action sent.
            SafeAction::Hold => {}
            SafeAction::Zero | SafeAction::Fixed(_) => {
                self.action.copy_from_slice(&self.fixed_action)
            }
        }
        let prev = match &mut self.graphs {
            Graphs::Fused(f) => f.graph.input_f32(f.prev_action),
            Graphs::Separate(s) => s.rssm.input_f32(s.prev_action),
            Graphs::Split(s) => {
                // The transition must be recomputed with the safe action.
                s.prepared = false;
                s.prepare.input_f32(s.prev_action)
            }
        };
        prev.copy_from_slice(&self.action);
    }

    /// [`GraphMode::Split`]: computes the next step's transition and prior from the latent
    /// state and the action just handed out (`rssm_img_step`, zero noise), so the next
    /// [`Agent::step`] runs only `policy_observe`. Call it right after the action is out, in
    /// the slack before the next observation. Does nothing in the other modes or when already
    /// prepared. On failure the next step prepares again (and counts a failure there). The
    /// latent state does not change. Allocates nothing.
    pub fn prepare(&mut self) -> Result<(), StepError> {
        match &mut self.graphs {
            Graphs::Split(s) if !s.prepared => prepare_split(s),
            _ => Ok(()),
        }
    }

    /// Runs the step's graphs on the current inputs and discards the results: the latent
    /// state, action and counters do not change. At low control rates the weights fall out of
    /// the CPU caches between steps; priming shortly before a deadline brings them back so
    /// the real step runs warm. Allocates nothing.
    pub fn prime(&mut self) -> Result<(), StepError> {
        match &mut self.graphs {
            Graphs::Fused(f) => run(&mut f.graph),
            Graphs::Separate(s) => {
                run(&mut s.encoder)?;
                run(&mut s.rssm)?;
                run(&mut s.actor)
            }
            // The observation half only: `prepare` runs right after each action anyway.
            Graphs::Split(s) => run(&mut s.observe),
        }
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
        match &self.graphs {
            Graphs::Fused(f) => Latent {
                h: f.graph.input_f32_ref(f.h),
                s: f.graph.input_f32_ref(f.s),
            },
            Graphs::Separate(s) => Latent {
                h: s.rssm.input_f32_ref(s.h),
                s: s.rssm.input_f32_ref(s.s),
            },
            Graphs::Split(s) => Latent {
                h: s.prepare.input_f32_ref(s.h),
                s: s.prepare.input_f32_ref(s.s),
            },
        }
    }

    pub fn counters(&self) -> StepCounters {
        self.counters
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
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
        match &self.graphs {
            Graphs::Fused(f) => vec![&f.graph.placement],
            Graphs::Separate(s) => {
                vec![&s.encoder.placement, &s.rssm.placement, &s.actor.placement]
            }
            Graphs::Split(s) => vec![&s.observe.placement, &s.prepare.placement],
        }
    }
}

fn obs_inputs(graph: &GraphRunner) -> ObsInputs {
    ObsInputs {
        state: graph.input_index(names::OBS_STATE),
        pixels: graph.input_index(names::OBS_PIXELS),
    }
}

/// Tensors copied into each other must agree in size; checked once at load.
fn same_size(graph: &str, what: &str, a: usize, b: usize) -> Result<(), LoadError> {
    if a == b {
        Ok(())
    } else {
        Err(LoadError::Manifest {
            graph: graph.to_string(),
            message: format!("{what}: {a} values against {b}"),
        })
    }
}

fn open_fused(dir: &Path, manifest: &Manifest, options: &AgentOptions) -> Result<Fused, LoadError> {
    let graph = GraphRunner::open(dir, manifest, bundle::POLICY_STEP, options)?;
    let fused = Fused {
        obs: obs_inputs(&graph),
        h: graph.require_input(names::H)?,
        s: graph.require_input(names::S)?,
        prev_action: graph.require_input(names::PREV_ACTION)?,
        noise: graph.require_input(names::NOISE)?,
        action_noise: graph.require_input(names::ACTION_NOISE)?,
        out_action: graph.require_output(names::ACTION)?,
        out_h: graph.require_output(names::H_NEXT)?,
        out_s: graph.require_output(names::S_NEXT)?,
        out_surprise: graph.require_output(names::SURPRISE)?,
        graph,
    };
    let (g, role) = (&fused.graph, bundle::POLICY_STEP);
    let a = manifest.action.size as usize;
    same_size(
        role,
        "h_next against h",
        g.output_len(fused.out_h),
        g.input_len(fused.h),
    )?;
    same_size(
        role,
        "s_next against s",
        g.output_len(fused.out_s),
        g.input_len(fused.s),
    )?;
    same_size(
        role,
        "action against the manifest's action size",
        g.output_len(fused.out_action),
        a,
    )?;
    same_size(
        role,
        "prev_action against the manifest's action size",
        g.input_len(fused.prev_action),
        a,
    )?;
    same_size(
        role,
        "surprise (batch 1)",
        g.output_len(fused.out_surprise),
        1,
    )?;
    Ok(fused)
}

fn open_separate(
    dir: &Path,
    manifest: &Manifest,
    options: &AgentOptions,
) -> Result<Separate, LoadError> {
    let encoder = GraphRunner::open(dir, manifest, bundle::ENCODER, options)?;
    let rssm = GraphRunner::open(dir, manifest, bundle::RSSM_OBS_STEP, options)?;
    let actor = GraphRunner::open(dir, manifest, bundle::ACTOR, options)?;
    let separate = Separate {
        obs: obs_inputs(&encoder),
        enc_embed: encoder.require_output(names::EMBED)?,
        h: rssm.require_input(names::H)?,
        s: rssm.require_input(names::S)?,
        prev_action: rssm.require_input(names::PREV_ACTION)?,
        embed: rssm.require_input(names::EMBED)?,
        noise: rssm.require_input(names::NOISE)?,
        out_h: rssm.require_output(names::H_NEXT)?,
        out_s: rssm.require_output(names::S_NEXT)?,
        out_mean: rssm.require_output(names::MEAN)?,
        out_std: rssm.require_output(names::STD)?,
        out_prior_mean: rssm.require_output(names::PRIOR_MEAN)?,
        out_prior_std: rssm.require_output(names::PRIOR_STD)?,
        feat: actor.require_input(names::FEAT)?,
        action_noise: actor.require_input(names::ACTION_NOISE)?,
        out_action: actor.require_output(names::ACTION)?,
        encoder,
        rssm,
        actor,
    };
    let d = separate
        .rssm
        .input_info(separate.h)
        .shape
        .iter()
        .product::<i64>();
    let s = separate
        .rssm
        .input_info(separate.s)
        .shape
        .iter()
        .product::<i64>();
    let f = separate
        .actor
        .input_info(separate.feat)
        .shape
        .iter()
        .product::<i64>();
    if d + s != f {
        return Err(LoadError::Manifest {
            graph: bundle::ACTOR.to_string(),
            message: format!("input `feat` holds {f} values, h and s hold {d} + {s}"),
        });
    }
    let g = &separate;
    let a = manifest.action.size as usize;
    let (enc, rssm, actor) = (bundle::ENCODER, bundle::RSSM_OBS_STEP, bundle::ACTOR);
    same_size(
        enc,
        "embed against rssm_obs_step's embed",
        g.encoder.output_len(g.enc_embed),
        g.rssm.input_len(g.embed),
    )?;
    same_size(
        rssm,
        "h_next against h",
        g.rssm.output_len(g.out_h),
        g.rssm.input_len(g.h),
    )?;
    same_size(
        rssm,
        "s_next against s",
        g.rssm.output_len(g.out_s),
        g.rssm.input_len(g.s),
    )?;
    same_size(
        rssm,
        "prev_action against the manifest's action size",
        g.rssm.input_len(g.prev_action),
        a,
    )?;
    same_size(
        actor,
        "action against the manifest's action size",
        g.actor.output_len(g.out_action),
        a,
    )?;
    Ok(separate)
}

fn open_split(dir: &Path, manifest: &Manifest, options: &AgentOptions) -> Result<Split, LoadError> {
    if !manifest.graphs.contains_key(bundle::POLICY_OBSERVE) {
        return Err(LoadError::Manifest {
            graph: bundle::POLICY_OBSERVE.to_string(),
            message: "the bundle has no such graph (it was exported before split steps \
                      existed): re-export it for the split step, or use the fused or separate \
                      step"
                .to_string(),
        });
    }
    let prepare = GraphRunner::open(dir, manifest, bundle::RSSM_IMG_STEP, options)?;
    let observe = GraphRunner::open(dir, manifest, bundle::POLICY_OBSERVE, options)?;
    let split = Split {
        h: prepare.require_input(names::H)?,
        s: prepare.require_input(names::S)?,
        prev_action: prepare.require_input(names::ACTION)?,
        prep_h: prepare.require_output(names::H_NEXT)?,
        prep_mean: prepare.require_output(names::MEAN)?,
        prep_std: prepare.require_output(names::STD)?,
        obs: obs_inputs(&observe),
        h_next: observe.require_input(names::H_NEXT)?,
        prior_mean: observe.require_input(names::PRIOR_MEAN)?,
        prior_std: observe.require_input(names::PRIOR_STD)?,
        noise: observe.require_input(names::NOISE)?,
        action_noise: observe.require_input(names::ACTION_NOISE)?,
        out_action: observe.require_output(names::ACTION)?,
        out_s: observe.require_output(names::S_NEXT)?,
        out_surprise: observe.require_output(names::SURPRISE)?,
        prepare,
        observe,
        prepared: false,
    };
    let (g, a) = (&split, manifest.action.size as usize);
    let (img, obs) = (bundle::RSSM_IMG_STEP, bundle::POLICY_OBSERVE);
    let checks = [
        (
            img,
            "h_next against h",
            g.prepare.output_len(g.prep_h),
            g.prepare.input_len(g.h),
        ),
        (
            obs,
            "h_next against rssm_img_step's h_next",
            g.observe.input_len(g.h_next),
            g.prepare.output_len(g.prep_h),
        ),
        (
            obs,
            "prior_mean against rssm_img_step's mean",
            g.observe.input_len(g.prior_mean),
            g.prepare.output_len(g.prep_mean),
        ),
        (
            obs,
            "prior_std against rssm_img_step's std",
            g.observe.input_len(g.prior_std),
            g.prepare.output_len(g.prep_std),
        ),
        (
            obs,
            "s_next against rssm_img_step's s",
            g.observe.output_len(g.out_s),
            g.prepare.input_len(g.s),
        ),
        (
            img,
            "action against the manifest's action size",
            g.prepare.input_len(g.prev_action),
            a,
        ),
        (
            obs,
            "action against the manifest's action size",
            g.observe.output_len(g.out_action),
            a,
        ),
        (
            obs,
            "surprise (batch 1)",
            g.observe.output_len(g.out_surprise),
            1,
        ),
    ];
    for (graph, what, x, y) in checks {
        same_size(graph, what, x, y)?;
    }
    Ok(split)
}

/// Validates and copies the observation into the graph inputs.
fn write_observation(
    graph: &mut GraphRunner,
    inputs: ObsInputs,
    obs: &Observation<'_>,
) -> Result<(), StepError> {
    if let Some(index) = inputs.state {
        let input = names::OBS_STATE;
        let values = obs.state.ok_or(StepError::MissingInput { input })?;
        let target = graph.input_f32(index);
        if values.len() != target.len() {
            return Err(StepError::WrongSize {
                input,
                expected: target.len(),
                got: values.len(),
            });
        }
        if let Some(index) = values.iter().position(|x| !x.is_finite()) {
            return Err(StepError::NonFinite { input, index });
        }
        target.copy_from_slice(values);
    }
    if let Some(index) = inputs.pixels {
        let input = names::OBS_PIXELS;
        let values = obs.pixels.ok_or(StepError::MissingInput { input })?;
        let target = graph.input_u8(index);
        if values.len() != target.len() {
            return Err(StepError::WrongSize {
                input,
                expected: target.len(),
                got: values.len(),
            });
        }
        target.copy_from_slice(values);
    }
    Ok(())
}

fn fill_noise(target: &mut [f32], rng: Option<&mut ChaCha8Rng>) {
    if let Some(rng) = rng {
        target
            .iter_mut()
            .for_each(|x| *x = rng.sample(StandardNormal));
    }
}

fn run(graph: &mut GraphRunner) -> Result<(), StepError> {
    graph.run().map_err(|message| StepError::Runtime {
        graph: graph.role.clone(),
        message,
    })
}

fn check_finite(values: &[f32], output: &'static str) -> Result<(), StepError> {
    if values.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(StepError::NonFiniteOutput { output })
    }
}

/// Returns the surprise; writes the action into `action` and commits the new latent state.
fn step_fused(
    f: &mut Fused,
    obs: &Observation<'_>,
    mut rng: Option<&mut ChaCha8Rng>,
    action: &mut [f32],
) -> Result<f32, StepError> {
    write_observation(&mut f.graph, f.obs, obs)?;
    fill_noise(f.graph.input_f32(f.noise), rng.as_deref_mut());
    fill_noise(f.graph.input_f32(f.action_noise), rng);
    run(&mut f.graph)?;
    let g = &mut f.graph;
    check_finite(g.output_f32(f.out_action), names::ACTION)?;
    check_finite(g.output_f32(f.out_h), names::H_NEXT)?;
    check_finite(g.output_f32(f.out_s), names::S_NEXT)?;
    // Commit: the posterior becomes the state, the action the previous action.
    copy_output_to_input(g, f.out_h, f.h);
    copy_output_to_input(g, f.out_s, f.s);
    copy_output_to_input(g, f.out_action, f.prev_action);
    action.copy_from_slice(g.output_f32(f.out_action));
    Ok(g.output_f32(f.out_surprise)[0])
}

fn copy_output_to_input(graph: &mut GraphRunner, output: usize, input: usize) {
    let (src, len) = {
        let out = graph.output_f32(output);
        (out.as_ptr(), out.len())
    };
    // SAFETY: output and input are distinct tensors owned by the graph; `src` stays valid
    // while the input is written because no output is touched.
    let src = unsafe { std::slice::from_raw_parts(src, len) };
    graph.input_f32(input).copy_from_slice(src);
}

fn step_separate(
    g: &mut Separate,
    obs: &Observation<'_>,
    mut rng: Option<&mut ChaCha8Rng>,
    action: &mut [f32],
) -> Result<f32, StepError> {
    write_observation(&mut g.encoder, g.obs, obs)?;
    run(&mut g.encoder)?;
    g.rssm
        .input_f32(g.embed)
        .copy_from_slice(g.encoder.output_f32(g.enc_embed));
    fill_noise(g.rssm.input_f32(g.noise), rng.as_deref_mut());
    run(&mut g.rssm)?;
    check_finite(g.rssm.output_f32(g.out_h), names::H_NEXT)?;
    check_finite(g.rssm.output_f32(g.out_s), names::S_NEXT)?;
    {
        let h_next = g.rssm.output_f32(g.out_h);
        let s_next = g.rssm.output_f32(g.out_s);
        let feat = g.actor.input_f32(g.feat);
        feat[..h_next.len()].copy_from_slice(h_next);
        feat[h_next.len()..].copy_from_slice(s_next);
    }
    fill_noise(g.actor.input_f32(g.action_noise), rng);
    run(&mut g.actor)?;
    check_finite(g.actor.output_f32(g.out_action), names::ACTION)?;
    let surprise = gaussian_kl(
        g.rssm.output_f32(g.out_mean),
        g.rssm.output_f32(g.out_std),
        g.rssm.output_f32(g.out_prior_mean),
        g.rssm.output_f32(g.out_prior_std),
    );
    // Commit only after every graph succeeded.
    copy_output_to_input(&mut g.rssm, g.out_h, g.h);
    copy_output_to_input(&mut g.rssm, g.out_s, g.s);
    action.copy_from_slice(g.actor.output_f32(g.out_action));
    g.rssm.input_f32(g.prev_action).copy_from_slice(action);
    Ok(surprise)
}

/// Runs the transition and prior on the latent state and previous action and hands them to
/// `policy_observe`.
fn prepare_split(g: &mut Split) -> Result<(), StepError> {
    run(&mut g.prepare)?;
    check_finite(g.prepare.output_f32(g.prep_h), names::H_NEXT)?;
    check_finite(g.prepare.output_f32(g.prep_mean), names::PRIOR_MEAN)?;
    check_finite(g.prepare.output_f32(g.prep_std), names::PRIOR_STD)?;
    let pairs = [
        (g.prep_h, g.h_next),
        (g.prep_mean, g.prior_mean),
        (g.prep_std, g.prior_std),
    ];
    for (output, input) in pairs {
        g.observe
            .input_f32(input)
            .copy_from_slice(g.prepare.output_f32(output));
    }
    g.prepared = true;
    Ok(())
}

fn step_split(
    g: &mut Split,
    obs: &Observation<'_>,
    mut rng: Option<&mut ChaCha8Rng>,
    action: &mut [f32],
) -> Result<f32, StepError> {
    write_observation(&mut g.observe, g.obs, obs)?;
    if !g.prepared {
        prepare_split(g)?;
    }
    fill_noise(g.observe.input_f32(g.noise), rng.as_deref_mut());
    fill_noise(g.observe.input_f32(g.action_noise), rng);
    run(&mut g.observe)?;
    check_finite(g.observe.output_f32(g.out_action), names::ACTION)?;
    check_finite(g.observe.output_f32(g.out_s), names::S_NEXT)?;
    // Commit: the prepared h' and the posterior sample become the state, the action the
    // previous action; the transition is now stale.
    g.prepare
        .input_f32(g.h)
        .copy_from_slice(g.observe.input_f32_ref(g.h_next));
    g.prepare
        .input_f32(g.s)
        .copy_from_slice(g.observe.output_f32(g.out_s));
    action.copy_from_slice(g.observe.output_f32(g.out_action));
    g.prepare.input_f32(g.prev_action).copy_from_slice(action);
    g.prepared = false;
    Ok(g.observe.output_f32(g.out_surprise)[0])
}

/// KL(N(mean_q, std_q) || N(mean_p, std_p)) summed over dimensions (docs/checkpoint-format.md).
pub fn gaussian_kl(mean_q: &[f32], std_q: &[f32], mean_p: &[f32], std_p: &[f32]) -> f32 {
    mean_q
        .iter()
        .zip(std_q)
        .zip(mean_p.iter().zip(std_p))
        .map(|((&mq, &sq), (&mp, &sp))| {
            (sp / sq).ln() + (sq * sq + (mq - mp) * (mq - mp)) / (2.0 * sp * sp) - 0.5
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::gaussian_kl;

    #[test]
    fn agent_can_move_to_a_control_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Agent>();
    }

    #[test]
    fn kl_of_identical_gaussians_is_zero_and_grows_with_distance() {
        let m = [0.3f32, -1.0];
        let s = [0.5f32, 2.0];
        assert!(gaussian_kl(&m, &s, &m, &s).abs() < 1e-6);
        // One dimension, unit std, means 1 apart: KL = 1/2.
        assert!((gaussian_kl(&[1.0], &[1.0], &[0.0], &[1.0]) - 0.5).abs() < 1e-6);
    }
}
