//! `dreamer`: train, evaluate and benchmark Dreamer agents.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dreamer_bundle::SecretKey;
use dreamer_cli::stdout::{closed_pipe_is_success, print_or_warn};
use dreamer_cli::{errln, say};
use dreamer_config::{Config, DEFAULT_PRESET};
use dreamer_online::{Broker, Credentials};
use dreamer_trainer::learn::{self, LearnOptions};
use dreamer_trainer::logging::WITHOUT_STDOUT;
use dreamer_trainer::run::{CHECKPOINT_DIR, RunOptions};
use dreamer_trainer::{checkpoint, device, env_loop, reference, run, video};
use tch::Device;

/// Random single-step cases in a reference file.
const REFERENCE_CASES: i64 = 16;

#[derive(Parser)]
#[command(name = "dreamer", version, about = "Dreamer (DreamerV1) on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch (default 1)
    #[arg(long)]
    threads: Option<usize>,
}

impl DeviceArgs {
    fn select(&self) -> Result<Device> {
        Ok(device::select(&self.device, self.threads)?)
    }
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Preset: paper, cpu-state or cpu-pixels [default: cpu-state]
    #[arg(long)]
    preset: Option<String>,
    /// TOML file whose keys replace the preset's
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one key, e.g. --set train.batch=16 (repeatable)
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn resolve(&self) -> Result<Config> {
        Ok(Config::resolve(
            self.preset.as_deref().unwrap_or(DEFAULT_PRESET),
            self.config.as_deref(),
            &self.sets,
        )?)
    }

    /// The configuration of a run in `logdir`: the command line's, or with `resume` the
    /// checkpoint's as [`ConfigArgs::for_resume`] changes it.
    fn for_run(&self, logdir: &Path, resume: bool) -> Result<Config> {
        if !resume {
            return self.resolve();
        }
        let dir = logdir.join(CHECKPOINT_DIR);
        // A save killed midway leaves the complete checkpoint beside `dir`.
        for repair in checkpoint::recover(&dir)? {
            errln!("--resume: {repair}");
        }
        if !dir.exists() {
            return Err(run::RunError::NothingToResume(logdir.to_path_buf()).into());
        }
        let (saved, _) = checkpoint::read_meta(&dir)
            .with_context(|| format!("--resume {}", logdir.display()))?;
        self.for_resume(&saved)
            .with_context(|| format!("--resume {}", logdir.display()))
    }

    /// The configuration a resumed run continues with: the saved one, with the keys
    /// `--preset`, `--config` and `--set` may change on resume (any other change is refused
    /// by name).
    fn for_resume(&self, saved: &Config) -> Result<Config> {
        Ok(saved.for_resume(self.preset.as_deref(), self.config.as_deref(), &self.sets)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train an agent (default: cpu-state preset on pendulum)
    Train {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run folder: metrics.jsonl, TensorBoard events, replay/, checkpoint/
        #[arg(long)]
        logdir: Option<PathBuf>,
        /// Continue the run in --logdir from its checkpoint. --preset, --config and --set may
        /// then change only run.steps, run.python, eval.every, eval.episodes,
        /// log.checkpoint_every and log.openloop_every
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Delete the run already in --logdir (checkpoints, replay, metrics, event files,
        /// images) and start a new one there
        #[arg(long)]
        overwrite: bool,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Learn from the episodes deployed devices send over NATS JetStream (`dreamer-rt run
    /// --record --upload`), and publish a verified, signed bundle every --publish-every
    /// updates for them to follow (docs/online.md)
    Learn {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run folder: as for train, plus inbox/ (episodes taken from the broker) and
        /// bundles/v<N> (the published bundles)
        #[arg(long)]
        logdir: PathBuf,
        /// Continue the learner's run in --logdir from its checkpoint
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Delete the run already in --logdir and start a new one there (inbox/ stays: the
        /// episodes the broker already handed over)
        #[arg(long)]
        overwrite: bool,
        /// The NATS server (JetStream), e.g. nats://127.0.0.1:4222
        #[arg(long, value_name = "URL")]
        broker: String,
        /// User name for the broker; the password comes from $DREAMER_NATS_PASSWORD
        #[arg(long, value_name = "USER", conflicts_with = "nats_creds")]
        nats_user: Option<String>,
        /// A NATS credentials file (JWT and nkey seed, as `nsc` writes it)
        #[arg(long, value_name = "FILE")]
        nats_creds: Option<PathBuf>,
        /// The learner's durable consumer: its position in the episode stream
        #[arg(long, default_value = "learner", value_name = "NAME")]
        consumer: String,
        /// Sign every published bundle with this key (`dreamer-export keygen`); devices
        /// follow only bundles signed by a key they trust
        #[arg(long, value_name = "FILE")]
        sign_key: PathBuf,
        /// Updates between two published bundles
        #[arg(long, default_value_t = 100, value_name = "N")]
        publish_every: u64,
        /// Stop once no episode arrived for this many seconds and the owed updates are done
        /// [default: run until run.steps env steps arrived]
        #[arg(long, value_name = "S")]
        idle_stop_s: Option<f64>,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Run noise-free episodes with a checkpoint and print the mean and std of the return
    Eval {
        /// Checkpoint folder (a run's checkpoint/ or the run folder itself)
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        /// Write the first episode as an animated GIF
        #[arg(long)]
        video: Option<PathBuf>,
        /// Evaluation draw (selects the reset seeds)
        #[arg(long, default_value_t = 0)]
        draw: u64,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Export a checkpoint to a verified ONNX model bundle (writes the reference forward
    /// pass into the checkpoint, builds the graphs, checks them with ONNX Runtime)
    Export {
        /// Checkpoint folder (a run's checkpoint/ or the run folder itself)
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        bundle: dreamer_export::BundleArgs,
        /// Closed-loop steps recorded for the verification
        #[arg(long, default_value_t = 500)]
        reference_steps: usize,
    },
    /// Write reference.safetensors (the exporter's verification data) into a checkpoint
    Reference {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Recorded trajectory length
        #[arg(long, default_value_t = 500)]
        steps: usize,
        /// Random cases
        #[arg(long, default_value_t = REFERENCE_CASES)]
        cases: i64,
    },
    /// Measure updates/s and environment steps/s of a configuration on this machine
    Bench {
        #[command(flatten)]
        config: ConfigArgs,
        /// Updates to time
        #[arg(long, default_value_t = 20)]
        updates: u64,
        /// Environment decisions to time with the agent acting
        #[arg(long, default_value_t = 1000)]
        decisions: u64,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Gather the runs under a folder (<runs>/<task>/seed<N>/) into learning.csv (task, seed,
    /// env_steps, return), one learning-curve PNG per task (published 100k scores drawn in)
    /// and summary.md (per task: mean and worst seed at the last evaluations, each seed's
    /// best, whether each curve holds)
    Table {
        /// The folder holding <task>/seed<N>/ run folders
        #[arg(long, default_value = "runs/learning")]
        runs: PathBuf,
    },
    /// Report libtorch, CUDA, threads, ONNX Runtime and its providers, each failure with its fix
    Doctor {
        #[command(flatten)]
        device: DeviceArgs,
    },
}

/// `runs/<task>-seed<seed>`, the task name reduced to letters, digits, `-`, `_` and `.`
/// (`gym:my_pkg.envs:MyEnv-v0` -> `gym-my_pkg.envs-MyEnv-v0`): a colon would read as
/// TensorBoard's `name:path` and a slash (`gym:ALE/Pong-v5`) as a folder.
fn default_logdir(config: &Config) -> PathBuf {
    let task: String = config
        .run
        .task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    PathBuf::from(format!("runs/{task}-seed{}", config.run.seed))
}

/// The checkpoint folder a command was given: `path` itself, or the `checkpoint/` of a run
/// folder. A save killed midway leaves the complete copy beside the folder: commands that
/// write into the checkpoint (`repair`) finish that save first; readers (which may run
/// while the trainer saves) read the complete copy and change nothing.
fn checkpoint_folder(path: PathBuf, repair: bool) -> Result<PathBuf> {
    let nested = path.join(CHECKPOINT_DIR);
    let holds_one = |dir: &std::path::Path| checkpoint::readable(dir).is_some();
    let dir = if !path.join(checkpoint::STATE_FILE).exists() && holds_one(&nested) {
        nested
    } else {
        path
    };
    if repair {
        for note in checkpoint::recover(&dir)? {
            errln!("{note}");
        }
        return Ok(dir);
    }
    Ok(checkpoint::readable(&dir).unwrap_or(dir))
}

fn main() -> std::process::ExitCode {
    // A closed stdout (`| head`): the command's work is done or pointless, and there is
    // nothing to report.
    match closed_pipe_is_success(run_cli(Cli::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already include their cause's text; print each cause once.
            let mut message = String::new();
            for cause in e.chain() {
                let text = cause.to_string();
                if !message.contains(&text) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&text);
                }
            }
            // Not eprintln!: it panics when stderr is closed too.
            errln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            logdir,
            resume,
            overwrite,
            quiet,
            device,
        } => {
            // A resumed run's configuration is the saved one: resolving the command line on
            // its own (a preset's built-in task with a bridged task's run.env_kwargs) would
            // refuse what the resume rule should judge.
            let logdir = match logdir {
                Some(dir) => dir,
                None => default_logdir(&config.resolve()?),
            };
            let resolved = config.for_run(&logdir, resume)?;
            let device = device.select()?;
            let options = RunOptions {
                logdir,
                resume,
                overwrite,
                device,
                progress: !quiet,
                max_updates: None,
            };
            let summary = run::train(&resolved, &options)?;
            print_or_warn(
                format_args!(
                    "done: {} env steps, {} updates, eval return {}, wall {:.1} s",
                    summary.env_steps,
                    summary.updates,
                    summary
                        .eval_return
                        .map_or("n/a".to_string(), |r| format!("{r:.2}")),
                    summary.wall_s
                ),
                WITHOUT_STDOUT,
            );
            if let (Some(first), Some(last)) = (summary.curve.first(), summary.curve.last())
                && first.0 < last.0
            {
                print_or_warn(
                    format_args!(
                        "eval return {:.2} at {} env steps -> {:.2} at {} env steps",
                        first.1, first.0, last.1, last.0
                    ),
                    WITHOUT_STDOUT,
                );
            }
            if let Some((at, best)) = summary.best_eval {
                print_or_warn(
                    format_args!(
                        "best eval return {best:.2} at {at} env steps, agent in {}",
                        options.logdir.join(run::BEST_CHECKPOINT_DIR).display()
                    ),
                    WITHOUT_STDOUT,
                );
            }
        }
        Command::Learn {
            config,
            logdir,
            resume,
            overwrite,
            broker,
            nats_user,
            nats_creds,
            consumer,
            sign_key,
            publish_every,
            idle_stop_s,
            quiet,
            device,
        } => {
            if publish_every == 0 {
                bail!("--publish-every must be at least 1 update");
            }
            let idle_stop = match idle_stop_s {
                Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => bail!("--idle-stop-s {s} is not a number of seconds"),
                None => None,
            };
            // Everything the command line names is checked before the run folder is touched.
            let signing_key = SecretKey::read(&sign_key)
                .with_context(|| format!("--sign-key {}", sign_key.display()))?;
            let credentials = Credentials::from_args(nats_user.as_deref(), nats_creds.as_deref())?;
            let resolved = config.for_run(&logdir, resume)?;
            let options = LearnOptions {
                run: RunOptions {
                    logdir,
                    resume,
                    overwrite,
                    device: device.select()?,
                    progress: !quiet,
                    max_updates: None,
                },
                broker: Broker {
                    url: broker,
                    credentials,
                },
                consumer,
                publish_every,
                signing_key,
                export: dreamer_export::ExportOptions::default(),
                idle_stop,
            };
            let summary = learn::learn(&resolved, &options)?;
            print_or_warn(
                format_args!(
                    "done: {} episodes ({} env steps) in replay, {} updates, eval return {}, \
                     policies published this session: {}, duplicates {}, rejected {}, wall {:.1} s",
                    summary.episodes,
                    summary.env_steps,
                    summary.updates,
                    summary
                        .eval_return
                        .map_or("n/a".to_string(), |r| format!("{r:.2}")),
                    if summary.published.is_empty() {
                        "none".to_string()
                    } else {
                        summary
                            .published
                            .iter()
                            .map(|v| format!("v{v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    },
                    summary.duplicates,
                    summary.rejected,
                    summary.wall_s
                ),
                WITHOUT_STDOUT,
            );
        }
        Command::Eval {
            checkpoint: dir,
            episodes,
            video: video_path,
            draw,
            device,
        } => {
            if episodes == 0 {
                bail!("--episodes must be at least 1");
            }
            let device = device.select()?;
            let dir = checkpoint_folder(dir, false)?;
            let (agent, _) = checkpoint::load(&dir, device)?;
            let evaluation = env_loop::evaluate(&agent, episodes, draw, video_path.is_some())?;
            say!(
                "{} episodes of {}: mean return {:.2}, std {:.2}",
                episodes,
                agent.config.run.task,
                evaluation.mean(),
                evaluation.std()
            );
            if let Some(path) = video_path {
                video::write_gif(&path, &evaluation.frames, 64, 64)
                    .with_context(|| format!("writing {}", path.display()))?;
                say!("video: {}", path.display());
            }
        }
        Command::Export {
            checkpoint: dir,
            bundle,
            reference_steps,
        } => {
            device::select("cpu", None)?;
            let dir = checkpoint_folder(dir, true)?;
            reference::write_reference(&dir, reference_steps, REFERENCE_CASES)?;
            let report = bundle
                .export(&dir, &bundle.options())
                .with_context(|| format!("exporting {}", dir.display()))?;
            say!("{}", report.summary());
        }
        Command::Reference {
            checkpoint: dir,
            steps,
            cases,
        } => {
            device::select("cpu", None)?;
            let dir = checkpoint_folder(dir, true)?;
            let path = reference::write_reference(&dir, steps, cases)?;
            say!("wrote {}", path.display());
        }
        Command::Bench {
            config,
            updates,
            decisions,
            device,
        } => {
            let config = config.resolve()?;
            let device = device.select()?;
            bench(&config, device, updates, decisions)?;
        }
        Command::Table { runs } => {
            let report = dreamer_trainer::table::write_table(&runs)?;
            for (task, seed, evaluations) in &report.runs {
                say!("{task} seed {seed}: {evaluations} evaluations");
            }
            say!("wrote {}", report.csv.display());
            for picture in &report.pictures {
                say!("wrote {}", picture.display());
            }
            say!("wrote {}:", report.summary.display());
            say!(
                "{}",
                dreamer_trainer::table::summary_markdown(&report.summaries).trim_end()
            );
        }
        Command::Doctor { device } => doctor(&device)?,
    }
    Ok(())
}

/// What the trainer runs on, each problem with its fix. Fails when a check fails.
fn doctor(device_args: &DeviceArgs) -> Result<()> {
    let mut failures = 0;
    let libtorch = device::libtorch_dir();
    match device::libtorch_version() {
        Some(v) => say!("ok    libtorch {v} at {}", libtorch.display()),
        None => say!(
            "ok    libtorch at {} (no build-version file; tch 0.24 expects 2.11.0)",
            libtorch.display()
        ),
    }
    match device::load_cuda_library() {
        device::CudaLibrary::Absent => say!(
            "      CPU-only libtorch (no lib/libtorch_cuda.so). For a GPU: scripts/fetch-deps --cuda \
             (or --libtorch DIR of a PyTorch 2.11 install), then rebuild"
        ),
        device::CudaLibrary::Loaded(path) => say!("ok    loaded {}", path.display()),
        device::CudaLibrary::Failed(path, why) => {
            failures += 1;
            say!(
                "FAIL  {} is present but does not load: {why}\n      fix: the CUDA libraries it \
                 needs must be beside it (a full `pip install torch==2.11.0`), or use a CPU libtorch",
                path.display()
            );
        }
    }
    let cuda_devices = if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    };
    say!(
        "      CUDA devices seen by libtorch: {cuda_devices}, cuDNN: {}",
        tch::Cuda::cudnn_is_available()
    );
    match device::select(&device_args.device, device_args.threads) {
        Ok(d) => say!("ok    device {d:?}"),
        Err(e) => {
            failures += 1;
            say!("FAIL  device: {e}\n      fix: --device cpu, or a CUDA libtorch on a GPU machine");
        }
    }
    say!(
        "      CPU threads: libtorch uses {} (--threads), the machine has {}",
        tch::get_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // ONNX Runtime is what `dreamer export` verifies bundles with.
    match dreamer_ort::load(None) {
        Ok(ort) => {
            say!(
                "ok    ONNX Runtime {} at {}",
                ort.version,
                ort.path.display()
            );
            match dreamer_ort::available_providers() {
                Ok(p) => say!("      execution providers: {}", p.join(", ")),
                Err(e) => say!("      execution providers: unknown ({e})"),
            }
        }
        Err(e) => {
            failures += 1;
            // The error already says where it looked and how to fix it.
            say!("FAIL  ONNX Runtime: {e}");
        }
    }
    say!("      tasks: {}", dreamer_tasks::TASK_NAMES.join(", "));
    let python = dreamer_bridge::resolve_python(None);
    say!(
        "      bridged tasks: gym:<id>, dmc:<domain>-<task>; workers' Python: {}, found as {}; \
         scripts/check-envs tests it",
        python.path.display(),
        python.lookup
    );
    say!(
        "      presets: {}",
        dreamer_config::PRESETS.map(|p| p.0).join(", ")
    );
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    say!("all checks passed");
    Ok(())
}

/// Time updates on replayed random episodes and acting with the agent.
fn bench(config: &Config, device: Device, updates: u64, decisions: u64) -> Result<()> {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    let dir = std::env::temp_dir().join(format!("dreamer-bench-{}", std::process::id()));
    let mut collector = env_loop::Collector::new(config)?;
    let dims = collector.dims();
    let mut agent = dreamer_trainer::agent::Agent::new(config, dims, device);
    let mut replay = dreamer_trainer::replay::Replay::open(&dir, env_loop::layout_of(dims), None)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let steps_per_decision = config.run.action_repeat as u64 * collector.num_envs() as u64;

    // Random episodes until a batch can be sampled.
    let start = Instant::now();
    let mut random_decisions = 0u64;
    while replay.episodes() < 2 {
        for episode in collector.step(env_loop::Behaviour::Random, &mut rng)? {
            replay.add(episode)?;
        }
        random_decisions += 1;
    }
    let random_rate =
        (random_decisions * steps_per_decision) as f64 / start.elapsed().as_secs_f64();

    let mut state = checkpoint::RunState::new(&config.run.task, dims);
    run::run_updates(&mut agent, &replay, &mut state, 2)?; // warm-up
    let start = Instant::now();
    run::run_updates(&mut agent, &replay, &mut state, updates)?;
    let update_s = start.elapsed().as_secs_f64() / updates as f64;

    let start = Instant::now();
    for _ in 0..decisions {
        collector.step(
            env_loop::Behaviour::Explore(&agent, config.collect.expl_noise),
            &mut rng,
        )?;
    }
    let act_rate = (decisions * steps_per_decision) as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    // Wall time per env step of a run: acting, plus train_steps updates every train_every steps.
    let per_step = 1.0 / act_rate
        + update_s * config.collect.train_steps as f64 / config.collect.train_every as f64;
    say!(
        "{} from {} (action repeat {}, batch {}x{}, horizon {}) on {:?}, {} threads",
        config.run.task,
        config.run.obs_mode,
        config.run.action_repeat,
        config.train.batch,
        config.train.length,
        config.train.horizon,
        device,
        tch::get_num_threads()
    );
    say!(
        "updates/s:                       {:.2} ({:.1} ms/update)",
        1.0 / update_s,
        update_s * 1e3
    );
    say!("env steps/s, random actions:     {random_rate:.0}");
    say!("env steps/s, agent acting:       {act_rate:.0}");
    say!(
        "env steps/s with the training schedule ({} updates / {} steps): {:.1}",
        config.collect.train_steps,
        config.collect.train_every,
        1.0 / per_step
    );
    Ok(())
}
