//! `dreamer-rt`: run, benchmark, describe and diagnose a Dreamer policy bundle on the device.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dreamer_bundle::{self as bundle, Manifest};
use dreamer_runtime::control::{self, LatencyRecorder, LatencySummary};
use dreamer_runtime::serve::ServeOptions;
use dreamer_runtime::{
    Agent, AgentOptions, DeviceOptions, GraphBench, GraphMode, LoopOptions, Noise, Observation,
    Provider, RateDriver, SafeAction,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

#[derive(Debug, Parser)]
#[command(
    name = "dreamer-rt",
    version,
    about = "Dreamer policy runtime (ONNX Runtime, no libtorch)"
)]
struct Cli {
    /// ONNX Runtime library (libonnxruntime.so); default: $ORT_DYLIB_PATH, next to this
    /// executable, then the build-time default.
    #[arg(long, global = true, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed loop against a built-in task at a fixed rate; prints returns and latency.
    Run(RunArgs),
    /// Latency percentiles per graph, for the agent's step, and for a bare session.run.
    Bench(BenchArgs),
    /// The bundle's manifest in human terms (checks file hashes too).
    Info {
        /// Bundle folder (holds manifest.json).
        bundle: PathBuf,
    },
    /// Serves a microcontroller over a serial port or pty: handshake, then one action per
    /// observation; prints a JSON summary at exit (SIGINT/SIGTERM).
    Serve(ServeArgs),
    /// Checks the ONNX Runtime library, providers, CPUs and optionally a bundle.
    Doctor {
        /// Bundle folder to load and step once.
        bundle: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct AgentArgs {
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
    fn options(&self, ort_lib: Option<PathBuf>) -> AgentOptions {
        AgentOptions {
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
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
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
    #[arg(long)]
    rate_hz: Option<f64>,
    /// Stop each episode after this many decisions (default: the task's episode length).
    #[arg(long)]
    max_decisions: Option<u32>,
    /// Pin the control thread to this CPU.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// SCHED_FIFO priority for the control thread (1-99), where permitted.
    #[arg(long)]
    rt_priority: Option<i32>,
    /// Lock memory (mlockall), where permitted.
    #[arg(long)]
    lock_memory: bool,
    /// Prime the policy (a discarded run that brings its weights back into cache) this many
    /// microseconds before each deadline; 0 = off. Needs a lead above the step time.
    #[arg(long, default_value_t = 0)]
    prime_lead_us: u64,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Bundle folder.
    bundle: PathBuf,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 5000)]
    steps: u32,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 200)]
    warmup: u32,
    /// Pin the benchmark thread to this CPU.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// SCHED_FIFO priority for the benchmark thread (1-99), as a control loop would run.
    #[arg(long)]
    rt_priority: Option<i32>,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Bundle folder.
    bundle: PathBuf,
    /// Serial device or pty path the firmware is on (e.g. /dev/ttyACM0, /dev/pts/7).
    #[arg(long)]
    port: PathBuf,
    /// Baud rate set on a real serial port (ignored by ptys).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Plant state file published by `firmware-host --state-file` (pixel policies: the
    /// simulated camera renders it).
    #[arg(long, value_name = "FILE")]
    camera_state: Option<PathBuf>,
    /// Give up when the firmware has not accepted the handshake within this many seconds
    /// (default: keep trying).
    #[arg(long)]
    handshake_timeout_s: Option<f64>,
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Pin the serving thread to this CPU.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// SCHED_FIFO priority for the serving thread (1-99), where permitted.
    #[arg(long)]
    rt_priority: Option<i32>,
    /// Lock memory (mlockall), where permitted.
    #[arg(long)]
    lock_memory: bool,
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> Result<()> {
    // Exit quietly when the output pipe closes (`dreamer-rt info b | head`), like other
    // Unix tools, instead of failing on the write.
    // SAFETY: sets a signal disposition to its default before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args, cli.ort_lib),
        Command::Bench(args) => bench(args, cli.ort_lib),
        Command::Info { bundle } => info(&bundle),
        Command::Serve(args) => serve(args, cli.ort_lib),
        Command::Doctor { bundle } => doctor(bundle.as_deref(), cli.ort_lib),
    }
}

fn load_agent(bundle_dir: &Path, options: AgentOptions) -> Result<Agent> {
    Agent::load(bundle_dir, options)
        .with_context(|| format!("cannot load the policy bundle {}", bundle_dir.display()))
}

fn print_placements(agent: &Agent) {
    for placement in agent.placements() {
        println!("  provider  {placement}");
    }
}

fn print_latency(label: &str, summary: &LatencySummary) {
    println!("  {label:<28} {summary}");
}

// ---------------------------------------------------------------------------------------
// run

fn run(args: RunArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let mut agent = load_agent(&args.bundle, args.agent.options(ort_lib))?;
    let manifest = agent.manifest().clone();
    let task = args
        .task
        .clone()
        .unwrap_or_else(|| manifest.task.name.clone());
    let obs_mode = match (&manifest.observation.state, &manifest.observation.pixels) {
        (Some(_), Some(_)) => dreamer_tasks::ObsMode::Both,
        (None, Some(_)) => dreamer_tasks::ObsMode::Pixels,
        _ => dreamer_tasks::ObsMode::State,
    };
    let mut env = dreamer_tasks::make(
        &task,
        dreamer_tasks::EnvOptions {
            obs_mode,
            action_repeat: manifest.task.action_repeat.max(1),
        },
    )
    .with_context(|| format!("cannot create task `{task}`"))?;
    check_task_fits(&manifest, env.spec())?;
    let rate_hz = args.rate_hz.unwrap_or(1.0 / env.spec().control_period_s);
    let decisions = args.max_decisions.unwrap_or(env.spec().max_decisions);

    println!(
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
    let realtime = control::apply_realtime(&LoopOptions {
        pin_cpu: args.pin_cpu,
        realtime_priority: args.rt_priority,
        lock_memory: args.lock_memory,
    });
    for note in &realtime.notes {
        println!("  note: {note}");
    }

    let mut driver = RateDriver::new(rate_hz).map_err(anyhow::Error::msg)?;
    let prime_lead = std::time::Duration::from_micros(args.prime_lead_us);
    if rate_hz > 0.0 && prime_lead >= driver.period() {
        bail!(
            "--prime-lead-us {} is not below the control period {:?}",
            args.prime_lead_us,
            driver.period()
        );
    }
    let mut step_latency = LatencyRecorder::default();
    let mut prepare_latency = LatencyRecorder::default();
    let mut action = vec![0.0f32; manifest.action.size as usize];
    let mut returns = Vec::new();
    let seeds: Vec<u64> = if args.env_seeds.is_empty() {
        (0..u64::from(args.episodes))
            .map(|i| args.seed + i)
            .collect()
    } else {
        args.env_seeds.clone()
    };
    for (episode, &seed) in seeds.iter().enumerate() {
        let mut obs = env.reset(seed);
        agent.reset();
        let faults_before = agent.counters().faults();
        let mut total = 0.0;
        let mut taken = 0;
        while taken < decisions {
            if prime_lead > std::time::Duration::ZERO {
                driver.sleep_until_before_next(prime_lead);
                agent.prime().context("priming the policy failed")?;
            }
            driver.wait();
            let started = Instant::now();
            let outcome = agent.step(&Observation {
                state: manifest
                    .observation
                    .state
                    .is_some()
                    .then_some(&obs.state[..]),
                pixels: manifest
                    .observation
                    .pixels
                    .is_some()
                    .then_some(&obs.pixels[..]),
            });
            match outcome {
                Ok(a) => action.copy_from_slice(a),
                Err(error) => {
                    eprintln!("episode {episode} decision {taken}: {error}; sent the safe action");
                    action.copy_from_slice(agent.action());
                }
            }
            step_latency.record(started.elapsed());
            // Split steps: the next transition, off the observation-to-action path. A failure
            // here repeats in the next step, which counts it and sends the safe action.
            let started = Instant::now();
            let _ = agent.prepare();
            prepare_latency.record(started.elapsed());
            let step = env
                .step(&action)
                .with_context(|| format!("task `{task}` refused the action {action:?}"))?;
            total += step.reward;
            taken += 1;
            obs = step.obs;
            driver.done();
            if step.terminated || step.truncated {
                break;
            }
        }
        println!(
            "episode {episode} (seed {seed}): return {total:.3} over {taken} decisions, {} faults",
            agent.counters().faults() - faults_before
        );
        returns.push(total);
    }
    let mean = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
    println!("mean return {mean:.3} over {} episodes", returns.len());
    println!("latency:");
    print_latency("agent step", &step_latency.summary());
    if agent.options().mode == GraphMode::Split {
        print_latency("agent prepare (after action)", &prepare_latency.summary());
    }
    print_latency("tick (step + task)", &driver.work());
    if rate_hz > 0.0 {
        print_latency("wake-up lateness", &driver.wake_late());
        println!(
            "  deadline misses {} (deadlines skipped {}) at period {:?}",
            driver.misses(),
            driver.skipped(),
            driver.period()
        );
    }
    let counters = agent.counters();
    println!(
        "faults: {} bad observations, {} runtime errors in {} steps",
        counters.bad_observations, counters.runtime_errors, counters.steps
    );
    Ok(())
}

fn check_task_fits(manifest: &Manifest, spec: &dreamer_tasks::EnvSpec) -> Result<()> {
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
        && (p.height * p.width * p.channels) as usize != dreamer_tasks::FRAME_BYTES
    {
        bail!(
            "the policy expects {}x{}x{} pixels, the tasks render {} bytes",
            p.height,
            p.width,
            p.channels,
            dreamer_tasks::FRAME_BYTES
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bench

/// Random observations in the manifest's layout.
fn random_observations(manifest: &Manifest, count: usize) -> Vec<(Vec<f32>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let state = manifest
        .observation
        .state
        .as_ref()
        .map_or(0, |s| s.size as usize);
    let pixels = manifest
        .observation
        .pixels
        .as_ref()
        .map_or(0, |p| (p.height * p.width * p.channels) as usize);
    (0..count)
        .map(|_| {
            (
                (0..state)
                    .map(|_| rng.sample::<f32, _>(StandardNormal))
                    .collect(),
                (0..pixels).map(|_| rng.random()).collect(),
            )
        })
        .collect()
}

fn time_n(n: u32, recorder: &mut LatencyRecorder, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..n {
        let started = Instant::now();
        f()?;
        recorder.record(started.elapsed());
    }
    Ok(())
}

fn bench(args: BenchArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let options = args.agent.options(ort_lib);
    let manifest = bundle::open(&args.bundle)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let realtime = control::apply_realtime(&LoopOptions {
        pin_cpu: args.pin_cpu,
        realtime_priority: args.rt_priority,
        lock_memory: false,
    });
    let runtime = dreamer_ort::load(options.ort_lib.as_deref())?;
    println!(
        "bench {}: ONNX Runtime {} ({}), provider {}, {} intra-op thread(s), spinning {}, {} steps",
        args.bundle.display(),
        runtime.version,
        runtime.path.display(),
        options.provider,
        options.intra_threads,
        if options.spinning { "on" } else { "off" },
        args.steps
    );
    if let Some(cpu) = realtime.pinned_cpu {
        println!("  pinned to CPU {cpu}");
    }
    if let Some(priority) = realtime.fifo_priority {
        println!("  SCHED_FIFO priority {priority}");
    }
    for note in &realtime.notes {
        println!("  note: {note}");
    }
    let observations = random_observations(&manifest, 64);
    let view = |i: usize| {
        let (state, pixels) = &observations[i % observations.len()];
        Observation {
            state: manifest.observation.state.is_some().then_some(&state[..]),
            pixels: manifest.observation.pixels.is_some().then_some(&pixels[..]),
        }
    };

    println!("graphs (bound tensors, random inputs):");
    for role in bundle::GRAPH_ROLES {
        if !manifest.graphs.contains_key(role) {
            continue;
        }
        let mut graph = GraphBench::open(&args.bundle, &manifest, role, &options, 1)?;
        for _ in 0..args.warmup {
            graph.run_bound().map_err(anyhow::Error::msg)?;
        }
        let mut rec = LatencyRecorder::default();
        time_n(args.steps, &mut rec, || {
            graph.run_bound().map_err(anyhow::Error::msg)
        })?;
        print_latency(role, &rec.summary());
        println!("  {:<28} on {}", "", graph.placement().primary());
    }

    // The agent's fused step against ort's ordinary Session::run of the same graph,
    // interleaved in rounds so machine noise hits both alike.
    let mut fused = load_agent(
        &args.bundle,
        AgentOptions {
            mode: GraphMode::Fused,
            ..options.clone()
        },
    )?;
    let mut bare = GraphBench::open(&args.bundle, &manifest, bundle::POLICY_STEP, &options, 2)?;
    let mut bound = GraphBench::open(&args.bundle, &manifest, bundle::POLICY_STEP, &options, 2)?;
    // The other step modes, where the bundle has their graphs.
    let has = |roles: &[&str]| roles.iter().all(|r| manifest.graphs.contains_key(*r));
    let mode_agent = |mode, roles: &[&str]| -> Result<Option<Agent>> {
        if !has(roles) {
            return Ok(None);
        }
        let options = AgentOptions {
            mode,
            ..options.clone()
        };
        load_agent(&args.bundle, options).map(Some)
    };
    let mut separate = mode_agent(
        GraphMode::Separate,
        &[bundle::ENCODER, bundle::RSSM_OBS_STEP, bundle::ACTOR],
    )?;
    let mut split = mode_agent(
        GraphMode::Split,
        &[bundle::RSSM_IMG_STEP, bundle::POLICY_OBSERVE],
    )?;
    for i in 0..args.warmup as usize {
        fused.step(&view(i))?;
        bare.run_session_api().map_err(anyhow::Error::msg)?;
        bound.run_bound().map_err(anyhow::Error::msg)?;
        if let Some(agent) = separate.as_mut() {
            agent.step(&view(i))?;
        }
        if let Some(agent) = split.as_mut() {
            agent.step(&view(i))?;
            agent.prepare()?;
        }
    }
    let rounds = 10;
    let per_round = (args.steps / rounds).max(1);
    let mut agent_rec = LatencyRecorder::default();
    let mut bare_rec = LatencyRecorder::default();
    let mut bound_rec = LatencyRecorder::default();
    let mut separate_rec = LatencyRecorder::default();
    let mut split_rec = LatencyRecorder::default();
    let mut prepare_rec = LatencyRecorder::default();
    let mut i = 0usize;
    for _ in 0..rounds {
        time_n(per_round, &mut agent_rec, || {
            i += 1;
            fused.step(&view(i))?;
            Ok(())
        })?;
        time_n(per_round, &mut bare_rec, || {
            bare.run_session_api().map_err(anyhow::Error::msg)
        })?;
        time_n(per_round, &mut bound_rec, || {
            bound.run_bound().map_err(anyhow::Error::msg)
        })?;
        if let Some(agent) = separate.as_mut() {
            time_n(per_round, &mut separate_rec, || {
                i += 1;
                agent.step(&view(i))?;
                Ok(())
            })?;
        }
        if let Some(agent) = split.as_mut() {
            // Step (observation to action) and prepare (after the action) timed apart.
            for _ in 0..per_round {
                i += 1;
                let started = Instant::now();
                agent.step(&view(i))?;
                split_rec.record(started.elapsed());
                let started = Instant::now();
                agent.prepare()?;
                prepare_rec.record(started.elapsed());
            }
        }
    }
    let agent_summary = agent_rec.summary();
    let bare_summary = bare_rec.summary();
    let bound_summary = bound_rec.summary();
    let overhead = |base: &LatencySummary| {
        format!(
            "p50 {:+.1}%, mean {:+.1}%",
            100.0 * (agent_summary.p50_us / base.p50_us - 1.0),
            100.0 * (agent_summary.mean_us / base.mean_us - 1.0)
        )
    };
    println!("policy step (interleaved in {rounds} rounds):");
    print_latency("agent step (fused)", &agent_summary);
    print_latency("bare session.run (fused)", &bare_summary);
    print_latency("bound run (fused)", &bound_summary);
    println!(
        "  agent overhead vs bare session.run: {}",
        overhead(&bare_summary)
    );
    println!(
        "  agent overhead vs bound run:        {}",
        overhead(&bound_summary)
    );
    if separate.is_some() {
        print_latency("agent step (separate)", &separate_rec.summary());
    }
    if split.is_some() {
        print_latency("agent step (split)", &split_rec.summary());
        print_latency("  prepare (after the action)", &prepare_rec.summary());
    }

    for placement in fused.placements() {
        println!("  provider  {placement}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// info

fn info(bundle_dir: &Path) -> Result<()> {
    let manifest = bundle::read_manifest(bundle_dir)
        .with_context(|| format!("cannot read the bundle {}", bundle_dir.display()))?;
    let m = &manifest;
    println!(
        "bundle {} (format {})",
        bundle_dir.display(),
        m.format_version
    );
    println!(
        "task      {}: one decision every {:.1} ms ({:.1} Hz), action repeat {}, {} decisions per episode",
        m.task.name,
        m.task.control_period_s * 1e3,
        1.0 / m.task.control_period_s,
        m.task.action_repeat,
        m.task.episode_decisions
    );
    if let Some(state) = &m.observation.state {
        println!(
            "observe   state: {} values [{}]",
            state.size,
            state.fields.join(", ")
        );
    }
    if let Some(p) = &m.observation.pixels {
        println!(
            "observe   pixels: {}x{}x{} u8 {} (graph computes {})",
            p.height, p.width, p.channels, p.layout, p.preprocess
        );
    }
    let a = &m.action;
    println!(
        "act       {} values, normalised {:?} .. {:?}",
        a.size, a.low, a.high
    );
    println!(
        "          physical range: {:?} .. {:?}",
        a.physical_low, a.physical_high
    );
    println!(
        "latent    deter {}, stoch {}, embed {}, start {}, min std {}",
        m.latent.deter, m.latent.stoch, m.latent.embed, m.latent.initial, m.latent.min_std
    );
    println!(
        "model     {} weights, opset {}, IR {}, batch {}",
        m.precision, m.opset, m.ir_version, m.batch
    );
    println!(
        "trained   {} env steps, {} updates{}",
        m.training.env_steps,
        m.training.updates,
        m.training
            .eval_return
            .map_or(String::new(), |r| format!(", eval return {r:.2}"))
    );
    for (key, value) in &m.training.config {
        println!("          {key} = {value}");
    }
    println!("graphs:");
    for (role, graph) in &m.graphs {
        let size = std::fs::metadata(bundle_dir.join(&graph.file)).map_or(0, |md| md.len());
        println!("  {role} ({}, {:.1} KiB)", graph.file, size as f64 / 1024.0);
        let fmt = |t: &bundle::TensorInfo| format!("{} {:?} {:?}", t.name, t.dtype, t.shape);
        println!(
            "    in:  {}",
            graph.inputs.iter().map(fmt).collect::<Vec<_>>().join(", ")
        );
        println!(
            "    out: {}",
            graph.outputs.iter().map(fmt).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(v) = &m.verification {
        println!(
            "verified  against the trainer with ONNX Runtime {} over {} closed-loop steps",
            v.onnxruntime_version, v.trajectory_steps
        );
        for (graph, err) in &v.random_max_abs_err {
            println!("  {graph}: max abs error {err:.2e} on random inputs");
        }
        if let Some(e) = v.trajectory_step_max_abs_err {
            println!("  trajectory: max abs error per step {e:.2e}");
        }
        if let Some(e) = v.trajectory_final_latent_max_abs_err {
            println!("  trajectory: final latent max abs error {e:.2e}");
        }
    } else {
        println!("verified  no (the manifest carries no verification record)");
    }
    match bundle::open(bundle_dir) {
        Ok(_) => println!("files     {} checked, sha256 ok", m.files.len()),
        Err(e) => bail!("files     {e}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// serve

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn serve(args: ServeArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let mut agent = load_agent(&args.bundle, args.agent.options(ort_lib))?;
    let realtime = control::apply_realtime(&LoopOptions {
        pin_cpu: args.pin_cpu,
        realtime_priority: args.rt_priority,
        lock_memory: args.lock_memory,
    });
    for note in &realtime.notes {
        eprintln!("serve: note: {note}");
    }
    let handshake_timeout = match args.handshake_timeout_s {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--handshake-timeout-s must be a positive number of seconds, got {s}"),
        None => None,
    };
    let options = ServeOptions {
        baud: args.baud,
        camera_state: args.camera_state.clone(),
        handshake_timeout,
        ..ServeOptions::new(args.port.clone())
    };
    eprintln!(
        "serve: {} (task {}) on {}",
        args.bundle.display(),
        agent.manifest().task.name,
        args.port.display()
    );
    let summary = dreamer_runtime::serve::serve(&mut agent, &options, &STOP)
        .with_context(|| format!("serving {} failed", args.port.display()))?;
    let text = serde_json::to_string_pretty(&summary.to_json())?;
    if let Some(path) = &args.summary {
        write_atomically(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// Writes to a temporary file next to `path`, then renames it into place.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------------------
// doctor

fn doctor(bundle_dir: Option<&Path>, ort_lib: Option<PathBuf>) -> Result<()> {
    let mut failures = 0;
    println!("dreamer-rt {}", env!("CARGO_PKG_VERSION"));
    println!("ONNX Runtime library search:");
    for candidate in dreamer_ort::candidates(ort_lib.as_deref()) {
        println!(
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
            println!(
                "ok    ONNX Runtime {} loaded from {}",
                runtime.version,
                runtime.path.display()
            );
            println!("      {}", runtime.build_info);
            Some(runtime)
        }
        Err(e) => {
            failures += 1;
            println!("FAIL  {e}");
            None
        }
    };
    if runtime.is_some() {
        match dreamer_ort::available_providers() {
            Ok(list) => {
                println!(
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
                    println!(
                        "      {provider}: {}",
                        state.replace("{p}", &provider.to_string())
                    );
                }
            }
            Err(e) => {
                failures += 1;
                println!("FAIL  cannot list execution providers: {e}");
            }
        }
    }
    println!(
        "ok    CPUs: {} online, {} usable by this process",
        control::online_cpus(),
        control::allowed_cpus()
    );
    match realtime_permitted() {
        Ok(()) => println!("ok    SCHED_FIFO real-time priority is permitted"),
        Err(e) => println!(
            "note  SCHED_FIFO not permitted ({e}): loops run at normal priority; grant \
             CAP_SYS_NICE (`sudo setcap cap_sys_nice+ep dreamer-rt`) or an rtprio limit"
        ),
    }
    if let Some(dir) = bundle_dir {
        match bundle::open(dir) {
            Ok(manifest) => {
                println!(
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
                        Ok(agent) => println!(
                            "ok    policy loaded and stepped (warm-up) on {}",
                            agent.placements()[0].primary()
                        ),
                        Err(e) => {
                            failures += 1;
                            println!("FAIL  {e}");
                            println!(
                                "      fix: re-export the bundle with dreamer-export, or check it was copied whole"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                println!("FAIL  {e}");
                println!(
                    "      fix: copy the bundle folder again (all files and manifest.json), or re-export it"
                );
            }
        }
    }
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    println!("all checks passed");
    Ok(())
}

/// Tries SCHED_FIFO on a short-lived thread, so the caller's scheduling is untouched.
fn realtime_permitted() -> Result<(), String> {
    std::thread::spawn(|| control::set_fifo_priority(1))
        .join()
        .unwrap_or_else(|_| Err("probe thread failed".to_string()))
}
