//! The training run: random prefill, then acting with exploration noise and `train_steps`
//! updates every `train_every` environment steps, noise-free evaluation every `eval.every`
//! steps, checkpoints, logs, and resumption from the last checkpoint.

use std::path::{Path, PathBuf};

use dreamer_config::Config;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

use crate::agent::{Agent, Metrics, TrainError};
use crate::checkpoint::{self, CheckpointError, RunState};
use crate::env_loop::{self, Behaviour, Collector, layout_of};
use crate::envs::{EnvError, Envs};
use crate::logging::{self, LogError, Logger};
use crate::networks::Dims;
use crate::replay::{Replay, ReplayError};
use crate::seeds::{STREAM_COLLECT, STREAM_REPLAY, STREAM_VIDEO, stream_seed};
use crate::video;
use dreamer_bridge::EnvRecord;

/// Folder names inside a run's log folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The checkpoint with the highest evaluation return of the run.
pub const BEST_CHECKPOINT_DIR: &str = "best";
pub const REPLAY_DIR: &str = "replay";
/// A learner's published bundles (`dreamer learn`).
pub const BUNDLES_DIR: &str = "bundles";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVE_FILE: &str = "learning-curve.png";
pub const OPENLOOP_GIF: &str = "openloop.gif";
pub const OPENLOOP_PNG: &str = "openloop.png";
/// The prefix of TensorBoard event file names.
pub const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// What a run writes in its log folder (with the hidden `.<name>.tmp/.new/.old` siblings of
/// `dreamer_persist`, and the event files): what `--overwrite` deletes. Other files in the
/// folder are not the run's and stay: a learner's `inbox` among them, which holds the
/// episodes its broker consumer already took (a new run there goes on with them).
pub const RUN_FILES: [&str; 8] = [
    CHECKPOINT_DIR,
    BEST_CHECKPOINT_DIR,
    REPLAY_DIR,
    BUNDLES_DIR,
    METRICS_FILE,
    CURVE_FILE,
    OPENLOOP_GIF,
    OPENLOOP_PNG,
];

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("task: {0}")]
    Task(#[from] EnvError),
    #[error(
        "{0} already holds a run ({1} exists): pass --resume to continue it, --overwrite to \
         delete that run and start again, or choose another --logdir"
    )]
    Exists(PathBuf, String),
    #[error(
        "--resume: {0} has no checkpoint to resume from (a run stopped before its first \
         checkpoint starts again with --overwrite instead of --resume)"
    )]
    NothingToResume(PathBuf),
    #[error("--overwrite: cannot remove {path}: {source}")]
    Overwrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Persist(#[from] dreamer_persist::PersistError),
    #[error("checkpoint was made for {found}, the task now gives {expected}")]
    TaskMismatch { found: String, expected: String },
    #[error(
        "--resume: {task} now describes itself differently from the env the checkpoint was \
         trained on (recorded in state.json): {}; restore that env, or start a new run",
        differences.join("; ")
    )]
    EnvChanged {
        task: String,
        differences: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub logdir: PathBuf,
    pub resume: bool,
    /// Without `resume`: delete the run already in `logdir` (its [`RUN_FILES`]) first
    /// instead of refusing to start.
    pub overwrite: bool,
    pub device: Device,
    pub progress: bool,
    /// Stop after this many updates in this session (for tests); the run stays resumable.
    pub max_updates: Option<u64>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub env_steps: u64,
    pub updates: u64,
    pub eval_return: Option<f64>,
    pub wall_s: f64,
    /// (env steps, mean eval return) of every evaluation of this session.
    pub curve: Vec<(u64, f64)>,
    /// (env steps, mean eval return) of the best evaluation of the run, saved in `best/`.
    pub best_eval: Option<(u64, f64)>,
}

pub(crate) fn crossed(before: u64, after: u64, every: u64) -> bool {
    every > 0 && before / every != after / every
}

/// Train from `config` (or continue the run in `options.logdir` with `--resume`, in which
/// case `config` is the checkpoint's configuration with the user's overrides).
///
/// A bridged task's workers end with the run, whatever its end: they are reaped when the
/// collector and the evaluation envs are dropped (an error included), and a process killed
/// by a signal (Ctrl-C) takes them with it (each asked the kernel to kill it when its parent
/// dies; docs/bridge.md).
pub fn train(config: &Config, options: &RunOptions) -> Result<Summary, RunError> {
    // The task is checked before anything is created on disk: built-in names by
    // dreamer-tasks, a bridged env by starting its workers (an unknown id, a missing package
    // or Python fails here).
    let collector = Collector::new(config)?;
    in_logdir(&options.logdir, || train_in(config, options, collector))
}

/// Runs `work`, which creates the run in `logdir`; when it fails, the folders it created
/// and left empty are removed again.
pub(crate) fn in_logdir<T, E>(logdir: &Path, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let created = missing_folders(logdir);
    let result = work();
    if result.is_err() {
        // A run that fails before it writes anything (a bad --resume, a task that does not
        // match the checkpoint) leaves no empty folders behind. `remove_dir` removes empty
        // folders only, so whatever a run did write stays.
        let _ = std::fs::remove_dir(logdir.join(REPLAY_DIR));
        for dir in &created {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
    result
}

/// `dir` and those of its ancestors that do not exist yet, deepest first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// A run opened in its log folder: new (after `--overwrite` removed an earlier one), or
/// resumed from its checkpoint with its replay reopened at the checkpoint's count and its
/// metrics log cut back to the checkpoint's step.
pub(crate) struct OpenRun {
    pub agent: Agent,
    pub state: RunState,
    pub replay: Replay,
    pub logger: Logger,
}

/// Opens the run in `options.logdir` for a task of `dims`; `env_now` is a bridged task's
/// env as its workers describe it now (checked against the checkpoint's record).
pub(crate) fn open_run(
    config: &Config,
    options: &RunOptions,
    dims: Dims,
    env_now: Option<EnvRecord>,
) -> Result<OpenRun, RunError> {
    logging::check_writable(&options.logdir)?;
    let checkpoint_dir = options.logdir.join(CHECKPOINT_DIR);
    // Said once the logger prints: what a killed session left and this one repaired.
    let mut notes = Vec::new();
    let (agent, state) = if options.resume {
        for dir in [&checkpoint_dir, &options.logdir.join(BEST_CHECKPOINT_DIR)] {
            for repair in checkpoint::recover(dir)? {
                notes.push(format!("recovered an interrupted save: {repair}"));
            }
        }
        if !checkpoint_dir.exists() {
            return Err(RunError::NothingToResume(options.logdir.clone()));
        }
        let (_, mut state) = checkpoint::read_meta(&checkpoint_dir)?;
        if state.dims() != dims || state.task != config.run.task {
            return Err(RunError::TaskMismatch {
                found: format!("{} {:?}", state.task, state.dims()),
                expected: format!("{} {:?}", config.run.task, dims),
            });
        }
        if let Some(now) = env_now {
            if let Some(saved) = &state.env {
                let differences = saved.differences(&now);
                if !differences.is_empty() {
                    return Err(RunError::EnvChanged {
                        task: config.run.task.clone(),
                        differences,
                    });
                }
                let versions = saved.version_changes(&now);
                if !versions.is_empty() {
                    notes.push(format!(
                        "{}: package versions changed since the checkpoint: {}",
                        config.run.task,
                        versions.join(", ")
                    ));
                }
            }
            state.env = Some(now);
        }
        let mut agent = Agent::new(config, dims, options.device);
        checkpoint::load_into(&checkpoint_dir, &mut agent)?;
        // Records logged after the checkpoint (by a session killed before its next one)
        // are logged again as this session repeats those steps.
        let dropped = logging::truncate_after(&options.logdir.join(METRICS_FILE), state.env_steps)?;
        if dropped > 0 {
            notes.push(format!(
                "{dropped} records of {METRICS_FILE} after the checkpoint's {} env steps were \
                 removed (the steps run again)",
                state.env_steps
            ));
        }
        (agent, state)
    } else {
        let existing = run_files_in(&options.logdir)?;
        if let Some(first) = existing.first() {
            if !options.overwrite {
                let name = first.file_name().unwrap_or_default().to_string_lossy();
                return Err(RunError::Exists(options.logdir.clone(), name.into_owned()));
            }
            remove_run_files(&existing)?;
        }
        let mut state = RunState::new(&config.run.task, dims);
        state.env = env_now;
        (Agent::new(config, dims, options.device), state)
    };
    let replay_limit = options.resume.then_some(state.episodes as usize);
    let replay = Replay::open(
        &options.logdir.join(REPLAY_DIR),
        layout_of(dims),
        replay_limit,
    )?;
    if replay.missing() > 0 {
        // Training goes on with the episodes that are left, but not silently: the run no
        // longer replays what an uninterrupted one would.
        dreamer_cli::errln!(
            "warning: {} of the {} replay episodes the checkpoint counts are missing from {}; \
             resuming with the {} found",
            replay.missing(),
            state.episodes,
            replay.dir().display(),
            replay.episodes()
        );
    }
    let wall_offset = options
        .resume
        .then(|| wall_of_last_record(&options.logdir))
        .flatten()
        .unwrap_or(0.0);
    let mut logger = Logger::new(
        &options.logdir,
        config.run.steps,
        state.env_steps,
        wall_offset,
        options.progress,
    )?;
    if options.resume {
        logger.resumed_after(state.env_steps)?;
    }
    for note in notes {
        logger.println(note);
    }
    Ok(OpenRun {
        agent,
        state,
        replay,
        logger,
    })
}

fn train_in(
    config: &Config,
    options: &RunOptions,
    mut collector: Collector,
) -> Result<Summary, RunError> {
    let OpenRun {
        mut agent,
        mut state,
        mut replay,
        mut logger,
    } = open_run(
        config,
        options,
        collector.dims(),
        collector.envs().record(config),
    )?;
    let dims = collector.dims();
    let checkpoint_dir = options.logdir.join(CHECKPOINT_DIR);
    logger.println(format!(
        "training {} from {} on {:?}: {} env steps, logs in {}",
        config.run.task,
        config.run.obs_mode,
        options.device,
        config.run.steps,
        options.logdir.display()
    ));

    let steps_per_decision = config.run.action_repeat as u64 * collector.num_envs() as u64;
    let mut curve = Vec::new();
    let mut session_updates = 0u64;
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(
        config.run.seed,
        STREAM_COLLECT,
        state.collect_draws,
    ));
    let mut last_train: Vec<(&'static str, f64)> = Vec::new();
    let mut last_episode_return = None;
    // Made at the first evaluation and kept: a bridged task's workers start once a run.
    let mut eval_envs = None;
    if !options.resume && config.eval.every > 0 {
        // The untrained policy's return: the "before" of the learning curve.
        evaluate_and_log(&agent, &mut eval_envs, &mut state, &mut curve, &mut logger)?;
        save_if_best(&agent, &mut state, &options.logdir)?;
    }
    while state.env_steps < config.run.steps {
        if options.max_updates.is_some_and(|m| session_updates >= m) {
            break;
        }
        let before = state.env_steps;
        let behaviour = if before < config.collect.prefill {
            Behaviour::Random
        } else {
            Behaviour::Explore(&agent, config.collect.expl_noise)
        };
        let finished = collector.step(behaviour, &mut rng)?;
        state.env_steps += steps_per_decision;
        let after = state.env_steps;
        for episode in finished {
            let total = episode.total_reward();
            last_episode_return = Some(total);
            replay.add(episode)?;
            state.episodes += 1;
            logger.record("episode", after, state.updates, &[("return", total)])?;
        }
        logger.set_position(after);

        let prefilled = after >= config.collect.prefill && replay.episodes() > 0;
        let mut updates = 0;
        if prefilled && state.updates == 0 {
            updates += config.collect.pretrain;
        }
        if prefilled && crossed(before, after, config.collect.train_every) {
            updates += config.collect.train_steps;
        }
        if updates > 0 {
            let metrics = run_updates(&mut agent, &replay, &mut state, updates)?;
            session_updates += updates;
            logger.record("train", after, state.updates, &metrics)?;
            last_train = metrics;
        }
        let at_end = after >= config.run.steps;
        if dims.pixels && state.updates > 0 && crossed(before, after, config.log.openloop_every) {
            log_openloop(&agent, &replay, &mut logger, &options.logdir, after)?;
        }
        if crossed(before, after, config.eval.every) || (at_end && config.eval.every == 0) {
            evaluate_and_log(&agent, &mut eval_envs, &mut state, &mut curve, &mut logger)?;
            save_if_best(&agent, &mut state, &options.logdir)?;
        }
        let metric = |name: &str| last_train.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        logger.set_message(logging::progress_message(
            last_episode_return,
            state.eval_return,
            metric("model_loss"),
            metric("value_loss"),
        ));
        if crossed(before, after, config.log.checkpoint_every) || at_end {
            // Episodes still in progress are not in replay, and a session resumed from this
            // checkpoint starts new ones from a fresh collector and the next collection
            // draw: this session does the same (every env reset, none rebuilt), so that both
            // collect the same data.
            collector.restart();
            state.collect_draws += 1;
            rng = ChaCha8Rng::seed_from_u64(stream_seed(
                config.run.seed,
                STREAM_COLLECT,
                state.collect_draws,
            ));
            logger.sync()?;
            checkpoint::save(&checkpoint_dir, &agent, &state)?;
        }
    }
    if options.max_updates.is_some() {
        checkpoint::save(&checkpoint_dir, &agent, &state)?;
    }
    finish_run(&logger, &options.logdir, &curve);
    Ok(Summary {
        env_steps: state.env_steps,
        updates: state.updates,
        eval_return: state.eval_return,
        wall_s: logger.wall_s(),
        curve,
        best_eval: state.best_eval,
    })
}

/// The end of a session: the progress display closed and, after evaluations, the learning
/// curve of the whole run drawn.
pub(crate) fn finish_run(logger: &Logger, logdir: &Path, curve: &[(u64, f64)]) {
    logger.finish();
    if !curve.is_empty() {
        let all = crate::plot::read_eval_curve(&logdir.join(METRICS_FILE));
        let png = logdir.join(CURVE_FILE);
        if let Err(e) = crate::plot::write_curve(&png, &all) {
            logger.println(format!("warning: learning curve not written: {e}"));
        }
    }
}

/// After an evaluation: when it beats every earlier one, the agent goes to `best/`
/// (written atomically like the main checkpoint). Selected on the evaluation's own episodes,
/// its return is an optimistic estimate; `dreamer eval` re-measures it on fresh episodes.
pub(crate) fn save_if_best(
    agent: &Agent,
    state: &mut RunState,
    logdir: &Path,
) -> Result<(), RunError> {
    let Some(latest) = state.eval_return else {
        return Ok(());
    };
    if state.best_eval.is_some_and(|(_, best)| best >= latest) {
        return Ok(());
    }
    state.best_eval = Some((state.env_steps, latest));
    checkpoint::save(&logdir.join(BEST_CHECKPOINT_DIR), agent, state)?;
    Ok(())
}

/// Noise-free evaluation at the current env step: logged, printed, and added to the curve.
/// `envs` holds the evaluation envs (made here the first time).
pub(crate) fn evaluate_and_log(
    agent: &Agent,
    envs: &mut Option<Envs>,
    state: &mut RunState,
    curve: &mut Vec<(u64, f64)>,
    logger: &mut Logger,
) -> Result<(), RunError> {
    let envs = match envs {
        Some(envs) => envs,
        None => envs.insert(env_loop::eval_envs(
            agent,
            agent.config.eval.episodes,
            false,
        )?),
    };
    let draw = if agent.config.eval.same_starts {
        0
    } else {
        state.eval_draws
    };
    let evaluation = env_loop::evaluate_in(envs, agent, draw, false)?;
    state.eval_draws += 1;
    let (mean, std) = (evaluation.mean(), evaluation.std());
    let at = state.env_steps;
    state.eval_return = Some(mean);
    curve.push((at, mean));
    logger.record(
        "eval",
        at,
        state.updates,
        &[("return", mean), ("return_std", std)],
    )?;
    logger.println(format!(
        "env steps {at:>8}  updates {:>6}  eval return {mean:9.2} +- {std:7.2}  wall {:7.1} s",
        state.updates,
        logger.wall_s()
    ));
    Ok(())
}

/// Run `count` updates, each on a fresh replay sample; returns the mean of each metric.
pub fn run_updates(
    agent: &mut Agent,
    replay: &Replay,
    state: &mut RunState,
    count: u64,
) -> Result<Metrics, RunError> {
    let t = &agent.config.train;
    let (batch_size, length) = (t.batch as usize, t.length as usize);
    let seed = agent.config.run.seed;
    let mut sums: Metrics = Vec::new();
    let mut done = 0u64;
    for _ in 0..count {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, STREAM_REPLAY, state.updates));
        let Some(sample) = replay.sample(batch_size, length, &mut rng) else {
            break;
        };
        let batch = sample.to_batch(agent.device());
        let metrics = agent.update(&batch, state.updates)?;
        state.updates += 1;
        done += 1;
        if sums.is_empty() {
            sums = metrics;
        } else {
            for (sum, (_, value)) in sums.iter_mut().zip(metrics) {
                sum.1 += value;
            }
        }
    }
    for sum in &mut sums {
        sum.1 /= done as f64;
    }
    Ok(sums)
}

/// Open-loop prediction on replayed sequences: 5 context frames, then the prior on the
/// recorded actions. Logged to TensorBoard and written as `<logdir>/openloop.gif` (and a
/// still, `openloop.png`: every third step of the first sequence).
fn log_openloop(
    agent: &Agent,
    replay: &Replay,
    logger: &mut Logger,
    logdir: &Path,
    env_steps: u64,
) -> Result<(), RunError> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(stream_seed(agent.config.run.seed, STREAM_VIDEO, env_steps));
    let Some(sample) = replay.sample(3, agent.config.train.length as usize, &mut rng) else {
        return Ok(());
    };
    let batch = sample.to_batch(agent.device());
    let Some(frames) = video::openloop_frames(agent, &batch, 5, 3) else {
        return Ok(());
    };
    let (width, height) = (3 * 64, 3 * 64);
    match video::encode_gif(&frames, width, height) {
        Ok(gif) => {
            dreamer_persist::write_file(&logdir.join(OPENLOOP_GIF), &gif)?;
            logger.gif("openloop", env_steps, width as u32, height as u32, gif)?;
            let (still, w, h) = video::openloop_strip(&frames, width, height, 3);
            if let Err(e) = video::write_png(&logdir.join(OPENLOOP_PNG), &still, w, h) {
                logger.println(format!("warning: open-loop still not written: {e}"));
            }
        }
        Err(e) => logger.println(format!("warning: open-loop video not written: {e}")),
    }
    Ok(())
}

/// The wall time of the last record of an earlier session, to continue the clock.
fn wall_of_last_record(logdir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(logdir.join(METRICS_FILE)).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("wall_s")?
        .as_f64()
}

/// The paths in `logdir` that belong to a run ([`RUN_FILES`], their `dreamer_persist`
/// siblings, event files), sorted; an empty replay folder does not count.
fn run_files_in(logdir: &Path) -> Result<Vec<PathBuf>, RunError> {
    let listing = std::fs::read_dir(logdir).map_err(|source| LogError {
        path: logdir.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| LogError {
            path: logdir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let plain = name
            .strip_prefix('.')
            .and_then(|n| {
                [".tmp", ".new", ".old"]
                    .iter()
                    .find_map(|suffix| n.strip_suffix(suffix))
            })
            .unwrap_or(&name);
        let path = entry.path();
        let empty_folder = path.is_dir()
            && std::fs::read_dir(&path).is_ok_and(|mut entries| entries.next().is_none());
        if (RUN_FILES.contains(&plain) || plain.starts_with(EVENTS_PREFIX))
            && !(name == REPLAY_DIR && empty_folder)
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Delete the run files `paths` (from [`run_files_in`]) for `--overwrite`.
fn remove_run_files(paths: &[PathBuf]) -> Result<(), RunError> {
    for path in paths {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        removed.map_err(|source| RunError::Overwrite {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
