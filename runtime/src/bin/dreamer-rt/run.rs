//! `run`: the policy in closed loop against a built-in task (the `sim` feature), at the
//! task's control rate or another; prints each episode's return and the loop's latency, and
//! with `--summary FILE` writes the returns as a typed [`RunSummary`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use dreamer_bundle::Manifest;
use dreamer_online::upload::{UploadOptions, Uploader};
use dreamer_runtime::control::LatencyRecorder;
use dreamer_runtime::explore::Exploration;
use dreamer_runtime::record::Recorder;
use dreamer_runtime::{Agent, GraphMode, Observation, RateDriver};
use dreamer_tasks::{Env, EnvSpec, FRAME_BYTES};
use dreamer_wire::report::{RunEpisode, RunSummary, write_report};

use crate::agent_args::{AgentArgs, load_agent};
use crate::broker_args::BrokerArgs;
use crate::follow::{Followed, PolicyFollower};
use crate::output::{print_latency, print_placements};
use crate::realtime_args::RealtimeArgs;
use crate::recording::{RecordArgs, finish_recording, finish_upload, policy_id};
use dreamer_cli::{errln, outln};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle folder.
    bundle: PathBuf,
    /// Task name (default: the one in the manifest).
    #[arg(long)]
    task: Option<String>,
    #[arg(long, default_value_t = 1)]
    episodes: u32,
    /// Seed of the first episode; episode i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Exact reset seed of every episode (e.g. the ones a trainer evaluation used); sets
    /// the number of episodes and overrides --seed.
    #[arg(long, value_delimiter = ',', value_name = "SEED,...")]
    env_seeds: Vec<u64>,
    /// Decisions per second (default: the task's control rate); 0 = as fast as possible.
    #[arg(long, allow_negative_numbers = true)]
    rate_hz: Option<f64>,
    /// Stop each episode after this many decisions (default: the task's episode length).
    #[arg(long)]
    max_decisions: Option<u32>,
    /// Prime the policy (a discarded run that brings its weights back into cache) this many
    /// microseconds before each deadline; 0 = off. Needs a lead above the step time.
    #[arg(long, default_value_t = 0)]
    prime_lead_us: u64,
    /// Explore as the trainer collects experience: add Gaussian noise of this standard
    /// deviation to each action sent (clipped to [-1, 1]; the model sees the noisy action),
    /// drawn from a generator seeded with --seed. With --sample-noise for the sampled policy.
    #[arg(long, value_name = "STD", allow_negative_numbers = true)]
    explore: Option<f64>,
    /// Also write the episodes' returns as JSON to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    realtime: RealtimeArgs,
    #[command(flatten)]
    agent: AgentArgs,
}

impl RunArgs {
    /// The reset seed of every episode, in order.
    fn seeds(&self) -> Vec<u64> {
        if self.env_seeds.is_empty() {
            (0..u64::from(self.episodes))
                .map(|i| self.seed + i)
                .collect()
        } else {
            self.env_seeds.clone()
        }
    }
}

pub fn run(args: RunArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    // SIGINT / SIGTERM end the episode in progress (recorded as far as it got) and the run,
    // which then writes, uploads and reports as at its normal end.
    crate::stop::on_signals();
    let options = args.agent.options(ort_lib)?;
    let mut agent = load_agent(&args.bundle, options.clone())?;
    let manifest = agent.manifest().clone();
    let task = args
        .task
        .clone()
        .unwrap_or_else(|| manifest.task.name.clone());
    let mut env = make_env(&task, &manifest)?;
    let rate_hz = args.rate_hz.unwrap_or(1.0 / env.spec().control_period_s);
    let mut driver = RateDriver::new(rate_hz).map_err(|e| anyhow::anyhow!("--rate-hz: {e}"))?;
    let decisions = args.max_decisions.unwrap_or(env.spec().max_decisions);

    outln!(
        "task {task}: {} decisions of {:.1} ms per episode; running at {}",
        env.spec().max_decisions,
        env.spec().control_period_s * 1e3,
        if rate_hz == 0.0 {
            "full speed".to_string()
        } else {
            format!("{rate_hz:.1} Hz")
        }
    );
    print_placements(&agent);
    for note in &args.realtime.apply().notes {
        outln!("  note: {note}");
    }

    let prime_lead = Duration::from_micros(args.prime_lead_us);
    if rate_hz > 0.0 && prime_lead >= driver.period() {
        bail!(
            "--prime-lead-us {} is not below the control period {:?}",
            args.prime_lead_us,
            driver.period()
        );
    }
    // Every option checked before anything is started or created.
    let broker = args.broker.broker()?;
    if args.broker.follow_policies.is_some() && options.trusted_keys.is_empty() {
        bail!("--follow-policies needs --trusted-key: policies from the network must be signed");
    }
    // The first observation, then one per decision.
    let mut recorder = args
        .record
        .start(&args.bundle, &manifest, decisions as usize + 1)?;
    // Uploads what the spool holds (from earlier runs too) while the episodes run.
    let uploader = match (&broker, &args.record.record) {
        (Some(broker), Some(spool)) => Some(
            Uploader::start(UploadOptions::new(spool.clone(), broker.clone()))
                .context("--upload")?,
        ),
        _ => None,
    };
    let follower = match (&args.broker.follow_policies, broker) {
        (Some(root), Some(broker)) => {
            let poll = Duration::from_millis(200);
            Some(PolicyFollower::start(
                broker,
                root.clone(),
                options.clone(),
                poll,
            ))
        }
        _ => None,
    };
    let mut exploration = args
        .explore
        .map(|std| Exploration::new(std, args.seed, manifest.action.size as usize))
        .transpose()
        .context("--explore")?;
    let mut latency = StepLatency::default();
    let mut episodes = Vec::new();
    for (index, seed) in args.seeds().into_iter().enumerate() {
        if crate::stop::requested() {
            break;
        }
        if let Some(followed) = follower.as_ref().and_then(PolicyFollower::try_next) {
            switch_policy(&mut agent, followed, recorder.as_mut(), env.spec(), index)?;
        }
        let episode = run_episode(
            EpisodeLoop {
                agent: &mut agent,
                env: env.as_mut(),
                driver: &mut driver,
                latency: &mut latency,
                prime_lead,
                decisions,
                recorder: recorder.as_mut(),
                exploration: exploration.as_mut(),
            },
            index,
            seed,
        )?;
        outln!(
            "episode {index} (seed {seed}): return {:.3} over {} decisions, {} faults",
            episode.episode_return,
            episode.decisions,
            episode.faults
        );
        episodes.push(episode);
    }
    if crate::stop::requested() {
        outln!("stopped by a signal after {} episodes", episodes.len());
    }
    let mean_return =
        episodes.iter().map(|e| e.episode_return).sum::<f64>() / episodes.len().max(1) as f64;
    outln!(
        "mean return {mean_return:.3} over {} episodes",
        episodes.len()
    );
    print_loop_report(&agent, &driver, &latency, rate_hz);
    if let Some(recorder) = recorder {
        finish_recording(recorder, |line| outln!("{line}"))?;
    }
    if let (Some(uploader), Some(spool)) = (uploader, &args.record.record) {
        let drain = Duration::from_secs_f64(args.broker.upload_drain_s);
        finish_upload(uploader, spool, drain, |line| outln!("{line}"));
    }
    if let Some(path) = &args.summary {
        let summary = RunSummary {
            task,
            episodes,
            mean_return,
        };
        write_report(&summary, Some(path))?;
    }
    Ok(())
}

/// Between episodes: the followed policy replaces the agent (the old one is dropped here,
/// off any deadline) and names the episodes recorded from now on.
fn switch_policy(
    agent: &mut Agent,
    followed: Followed,
    recorder: Option<&mut Recorder>,
    spec: &EnvSpec,
    index: usize,
) -> Result<()> {
    let manifest = followed.agent.manifest().clone();
    if let Err(e) = check_task_fits(&manifest, spec) {
        errln!(
            "policy v{}: refused, keeping the current policy: {e}",
            followed.version
        );
        return Ok(());
    }
    if let Some(recorder) = recorder {
        recorder.set_policy(&policy_id(&followed.bundle)?)?;
    }
    *agent = followed.agent;
    outln!(
        "episode {index}: now policy v{} ({})",
        followed.version,
        followed.bundle.display()
    );
    Ok(())
}

/// The task in the manifest's observation mode and action repeat, checked against the policy.
fn make_env(task: &str, manifest: &Manifest) -> Result<Box<dyn Env>> {
    if let Some(env) = manifest
        .environment
        .as_ref()
        .filter(|_| task == manifest.task.name)
    {
        bail!(
            "task `{task}` is a Python environment ({} `{}`, the manifest's `environment`): \
             `dreamer-rt run` drives the built-in tasks; drive this bundle from Python inside \
             that environment with bridge/python/drive_env.py (README, \"Your own environment\")",
            env.package,
            env.id
        );
    }
    let obs_mode = match (&manifest.observation.state, &manifest.observation.pixels) {
        (Some(_), Some(_)) => dreamer_tasks::ObsMode::Both,
        (None, Some(_)) => dreamer_tasks::ObsMode::Pixels,
        _ => dreamer_tasks::ObsMode::State,
    };
    let env = dreamer_tasks::make(
        task,
        dreamer_tasks::EnvOptions {
            obs_mode,
            action_repeat: manifest.task.action_repeat.max(1),
        },
    )
    .with_context(|| format!("cannot create task `{task}`"))?;
    check_task_fits(manifest, env.spec())?;
    Ok(env)
}

fn check_task_fits(manifest: &Manifest, spec: &EnvSpec) -> Result<()> {
    if spec.action_size != manifest.action.size as usize {
        bail!(
            "task `{}` takes {} action values but the policy produces {}",
            spec.task,
            spec.action_size,
            manifest.action.size
        );
    }
    if let Some(state) = &manifest.observation.state
        && state.size as usize != spec.state_size
    {
        bail!(
            "task `{}` observes {} state values but the policy expects {}",
            spec.task,
            spec.state_size,
            state.size
        );
    }
    if let Some(p) = &manifest.observation.pixels
        && (p.height * p.width * p.channels) as usize != FRAME_BYTES
    {
        bail!(
            "the policy expects {}x{}x{} pixels, the tasks render {} bytes",
            p.height,
            p.width,
            p.channels,
            FRAME_BYTES
        );
    }
    Ok(())
}

/// The agent's latency over all episodes: the step (observation to action) and, in split
/// mode, the prepare after the action.
#[derive(Default)]
struct StepLatency {
    step: LatencyRecorder,
    prepare: LatencyRecorder,
}

/// What an episode runs with; the driver and the latency carry over between episodes.
struct EpisodeLoop<'a> {
    agent: &'a mut Agent,
    env: &'a mut dyn Env,
    driver: &'a mut RateDriver,
    latency: &'a mut StepLatency,
    prime_lead: Duration,
    /// At most this many decisions.
    decisions: u32,
    /// Where the episode is recorded, if it is.
    recorder: Option<&'a mut Recorder>,
    /// Noise added to the actions sent, if any.
    exploration: Option<&'a mut Exploration>,
}

fn run_episode(run: EpisodeLoop<'_>, index: usize, seed: u64) -> Result<RunEpisode> {
    let EpisodeLoop {
        agent,
        env,
        driver,
        latency,
        prime_lead,
        decisions,
        mut recorder,
        mut exploration,
    } = run;
    let uses_state = agent.manifest().observation.state.is_some();
    let uses_pixels = agent.manifest().observation.pixels.is_some();
    let mut action = vec![0.0f32; agent.manifest().action.size as usize];
    let mut obs = env.reset(seed);
    agent.reset();
    if let Some(recorder) = recorder.as_deref_mut() {
        recorder.begin();
        recorder.step(&obs.state, &obs.pixels, &action, 0.0, 1.0);
    }
    let faults_before = agent.counters().faults();
    let mut total = 0.0;
    let mut taken = 0;
    while taken < decisions && !crate::stop::requested() {
        if prime_lead > Duration::ZERO {
            driver.sleep_until_before_next(prime_lead);
            agent.prime().context("priming the policy failed")?;
        }
        driver.wait();
        let started = Instant::now();
        let outcome = agent.step(&Observation {
            state: uses_state.then_some(&obs.state[..]),
            pixels: uses_pixels.then_some(&obs.pixels[..]),
        });
        match outcome {
            Ok(a) => action.copy_from_slice(a),
            Err(error) => {
                // Best-effort: a closed stderr must not stop (or panic) the loop.
                errln!("episode {index} decision {taken}: {error}; sent the safe action");
                action.copy_from_slice(agent.action());
            }
        }
        if let Some(exploration) = exploration.as_deref_mut() {
            // The model's next transition starts from the action actually sent.
            let noisy = exploration.apply(&action);
            if agent.override_action(noisy).is_ok() {
                action.copy_from_slice(noisy);
            }
        }
        latency.step.record(started.elapsed());
        // Split steps: the next transition, off the observation-to-action path. A failure
        // here repeats in the next step, which counts it and sends the safe action.
        let started = Instant::now();
        let _ = agent.prepare();
        latency.prepare.record(started.elapsed());
        let step = env
            .step(&action)
            .with_context(|| format!("task `{}` refused the action {action:?}", env.spec().task))?;
        total += step.reward;
        taken += 1;
        if let Some(recorder) = recorder.as_deref_mut() {
            let discount = if step.terminated { 0.0 } else { 1.0 };
            let reward = step.reward as f32;
            recorder.step(&step.obs.state, &step.obs.pixels, &action, reward, discount);
        }
        obs = step.obs;
        driver.done();
        if step.terminated || step.truncated {
            break;
        }
    }
    if let Some(recorder) = recorder {
        recorder.end();
    }
    Ok(RunEpisode {
        seed,
        episode_return: total,
        decisions: taken,
        faults: agent.counters().faults() - faults_before,
    })
}

/// The latency and fault lines after the episodes.
fn print_loop_report(agent: &Agent, driver: &RateDriver, latency: &StepLatency, rate_hz: f64) {
    outln!("latency:");
    print_latency("agent step", &latency.step.summary());
    if agent.options().mode == GraphMode::Split {
        print_latency("agent prepare (after action)", &latency.prepare.summary());
    }
    print_latency("tick (step + task)", &driver.work());
    if rate_hz > 0.0 {
        print_latency("wake-up lateness", &driver.wake_late());
        outln!(
            "  deadline misses {} (deadlines skipped {}) at period {:?}",
            driver.misses(),
            driver.skipped(),
            driver.period()
        );
    }
    let counters = agent.counters();
    outln!(
        "faults: {} bad observations, {} runtime errors in {} steps",
        counters.bad_observations,
        counters.runtime_errors,
        counters.steps
    );
}
