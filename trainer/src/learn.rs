//! The learner: trains on the episodes deployed devices send over NATS JetStream instead of
//! collecting its own, and publishes a verified, signed bundle every `publish_every` updates
//! for the devices to follow.
//!
//! It is a training run in every other respect (the same log folder, checkpoints, replay,
//! evaluation in the configured task, `--resume`), with one difference in pacing: updates
//! follow the environment steps that arrive, at the run's own replay ratio (`train_steps`
//! updates every `train_every` env steps after `prefill`), and the learner takes no more
//! episodes from the broker while it owes more than one round of updates. What it has not
//! taken waits in the durable stream, so the ratio holds however fast the devices are.
//!
//! Nothing is lost or counted twice across a kill: an episode goes from the stream into the
//! inbox (acknowledged once its file is written), from the inbox into replay, and is
//! confirmed (its inbox file replaced by a marker) only after the checkpoint that counts it
//! is saved. The checkpoint's `state.json` lists the episodes it took but had not confirmed
//! yet, so a learner killed between the save and the confirmation confirms them on restart
//! instead of adding them again.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dreamer_bundle::SecretKey;
use dreamer_config::Config;
use dreamer_episode::Episode;
use dreamer_export::{ExportError, ExportOptions};
use dreamer_online::ingest::Ingest;
use dreamer_online::{Broker, EpisodeId, OnlineError, policy};

use crate::agent::Agent;
use crate::checkpoint::{self, RunState};
use crate::env_loop::{self, layout_of};
use crate::logging::Logger;
use crate::reference::{self, ReferenceError};
use crate::replay::Replay;
use crate::run::{
    self, BUNDLES_DIR, CHECKPOINT_DIR, OpenRun, RunError, RunOptions, crossed, evaluate_and_log,
    run_updates, save_if_best,
};

/// Where a learner's run folder keeps what its consumer took from the stream.
pub const INBOX_DIR: &str = "inbox";

/// Episodes taken from the stream per poll at most: the inbox holds little more than the
/// learner is about to train on, the rest waits in the stream.
const POLL_BATCH: usize = 8;
/// Updates run between two polls at most, so the broker hears from the learner often
/// (messages it delivered stay unacknowledged until the next poll).
const UPDATES_PER_ROUND: u64 = 5;
/// Closed-loop steps of the reference the exporter verifies each bundle against.
const REFERENCE_STEPS: usize = 500;
const REFERENCE_CASES: i64 = 16;
/// Pause between two tries to reach a broker that did not answer.
const BROKER_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error("publishing: {0}")]
    Reference(#[from] ReferenceError),
    #[error("publishing: {0}")]
    Export(#[from] ExportError),
    #[error("state.json lists `{0}` as taken from the inbox, which is not an episode id")]
    BadTakenId(String),
}

impl From<checkpoint::CheckpointError> for LearnError {
    fn from(e: checkpoint::CheckpointError) -> Self {
        LearnError::Run(e.into())
    }
}

impl From<crate::logging::LogError> for LearnError {
    fn from(e: crate::logging::LogError) -> Self {
        LearnError::Run(e.into())
    }
}

impl From<crate::replay::ReplayError> for LearnError {
    fn from(e: crate::replay::ReplayError) -> Self {
        LearnError::Run(e.into())
    }
}

#[derive(Debug)]
pub struct LearnOptions {
    pub run: RunOptions,
    pub broker: Broker,
    /// The durable consumer's name: the learner's position in the episode stream.
    pub consumer: String,
    /// Updates between two published bundles.
    pub publish_every: u64,
    /// The key every published bundle is signed with (devices trust its public half).
    pub signing_key: SecretKey,
    pub export: ExportOptions,
    /// Stop once no episode arrived for this long and every owed update is done (`None`:
    /// run until `run.steps` env steps arrived).
    pub idle_stop: Option<Duration>,
}

/// What a learner session did.
#[derive(Debug, Clone, Default)]
pub struct LearnSummary {
    pub env_steps: u64,
    pub updates: u64,
    /// Episodes in the run's replay.
    pub episodes: u64,
    /// This session: episodes the broker delivered that the inbox already had.
    pub duplicates: u64,
    /// This session: messages refused (not an episode of this task's layout, a bad id).
    pub rejected: u64,
    /// This session: the versions published.
    pub published: Vec<u64>,
    pub eval_return: Option<f64>,
    pub curve: Vec<(u64, f64)>,
    pub wall_s: f64,
}

/// The updates a run owes after `env_steps`: the single-process schedule (`pretrain` once
/// the prefill is in, then `train_steps` per `train_every` env steps).
pub fn updates_due(config: &Config, env_steps: u64) -> u64 {
    let c = &config.collect;
    if env_steps < c.prefill || c.train_every == 0 {
        return 0;
    }
    c.pretrain + c.train_steps * (env_steps / c.train_every - c.prefill / c.train_every)
}

/// Learn from the broker's episode stream (a new run in `options.run.logdir`, or the run
/// there with `resume`).
pub fn learn(config: &Config, options: &LearnOptions) -> Result<LearnSummary, LearnError> {
    // The task is checked (and a bridged task's workers started) before anything is
    // created on disk; the learner evaluates and verifies its bundles in it.
    let envs = env_loop::make_envs(config, 1, false).map_err(RunError::from)?;
    let dims = env_loop::dims_of(config, envs.spec());
    let record = envs.record(config);
    drop(envs);
    run::in_logdir(&options.run.logdir, || {
        // The broker first: a learner it refuses writes nothing.
        let ingest = Ingest::connect(
            &options.broker,
            &options.consumer,
            &options.run.logdir.join(INBOX_DIR),
            layout_of(dims),
        )?;
        let open = run::open_run(config, &options.run, dims, record).inspect_err(|_| {
            let _ = std::fs::remove_dir(options.run.logdir.join(INBOX_DIR));
        })?;
        Learner::new(config, options, open, ingest).run()
    })
}

/// Work that waits until the learner has done every update its env steps call for: the
/// agent evaluated, saved and published is the one the single-process run would have then.
#[derive(Debug, Default)]
struct Due {
    eval: bool,
    checkpoint: bool,
    publish: bool,
}

struct Learner<'a> {
    config: &'a Config,
    options: &'a LearnOptions,
    agent: Agent,
    state: RunState,
    replay: Replay,
    logger: Logger,
    ingest: Ingest,
    /// Ids in replay this session (and in `state.taken`): not added again while their
    /// inbox files wait for confirmation.
    in_replay: BTreeSet<EpisodeId>,
    /// Read from the inbox, not in replay yet.
    waiting: VecDeque<(EpisodeId, Episode)>,
    /// What waits for the learner to catch up with its updates.
    due: Due,
    /// The broker did not answer the last poll (said once per outage).
    broker_down: bool,
    /// The update count of this session's last published bundle.
    published_at: Option<u64>,
    summary: LearnSummary,
}

impl<'a> Learner<'a> {
    fn new(config: &'a Config, options: &'a LearnOptions, open: OpenRun, ingest: Ingest) -> Self {
        Learner {
            config,
            options,
            agent: open.agent,
            state: open.state,
            replay: open.replay,
            logger: open.logger,
            ingest,
            in_replay: BTreeSet::new(),
            waiting: VecDeque::new(),
            published_at: None,
            broker_down: false,
            due: Due::default(),
            summary: LearnSummary::default(),
        }
    }

    fn checkpoint_dir(&self) -> PathBuf {
        self.options.run.logdir.join(CHECKPOINT_DIR)
    }

    fn run(mut self) -> Result<LearnSummary, LearnError> {
        let (config, options) = (self.config, self.options);
        // A learner killed after its checkpoint but before confirming: those episodes are
        // in the replay the checkpoint counts; confirming them now keeps them out of it twice.
        let taken = self
            .state
            .taken
            .iter()
            .map(|text| {
                text.parse::<EpisodeId>()
                    .map_err(|_| LearnError::BadTakenId(text.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.ingest.confirm(&taken)?;
        self.state.taken.clear();
        self.logger.println(format!(
            "learning {} from {} ({} episodes in replay, {} env steps, {} updates), logs in {}",
            config.run.task,
            options.broker.url,
            self.state.episodes,
            self.state.env_steps,
            self.state.updates,
            options.run.logdir.display()
        ));
        if !options.run.resume {
            if config.eval.every > 0 {
                self.evaluate()?;
            }
            // Devices need a policy to start from: the untrained one.
            self.save_checkpoint()?;
            self.publish()?;
        }
        let mut session_updates = 0u64;
        let mut last_arrival = Instant::now();
        // Updates owed but impossible: no episode is long enough for a training window.
        let mut stalled = false;
        loop {
            let owed = updates_due(config, self.state.env_steps).saturating_sub(self.state.updates);
            let idle = options
                .idle_stop
                .is_some_and(|idle| (owed == 0 || stalled) && last_arrival.elapsed() >= idle);
            let done = (self.state.env_steps >= config.run.steps && (owed == 0 || stalled))
                || options
                    .run
                    .max_updates
                    .is_some_and(|m| session_updates >= m);
            if done || idle {
                break;
            }
            if self.wants_episodes() {
                let wait = if owed > 0 {
                    Duration::from_millis(1)
                } else {
                    Duration::from_millis(200)
                };
                if self.take(wait)? > 0 {
                    last_arrival = Instant::now();
                }
            }
            let owed = updates_due(config, self.state.env_steps).saturating_sub(self.state.updates);
            let round = owed.min(UPDATES_PER_ROUND);
            let round = match options.run.max_updates {
                Some(m) => round.min(m - session_updates),
                None => round,
            };
            stalled = false;
            if round > 0 {
                let before = self.state.updates;
                let metrics = run_updates(&mut self.agent, &self.replay, &mut self.state, round)?;
                session_updates += self.state.updates - before;
                if self.state.updates == before {
                    stalled = true;
                    std::thread::sleep(Duration::from_millis(50));
                } else {
                    self.logger.record(
                        "train",
                        self.state.env_steps,
                        self.state.updates,
                        &metrics,
                    )?;
                    self.due.publish |= crossed(before, self.state.updates, options.publish_every);
                }
            }
            // Evaluations and bundles are of the agent that has done the updates its env
            // steps call for, as the single-process run's are.
            let caught_up =
                updates_due(config, self.state.env_steps) <= self.state.updates || stalled;
            if caught_up && self.due.eval {
                self.due.eval = false;
                self.evaluate()?;
            }
            if caught_up && (self.due.checkpoint || self.due.publish) {
                self.due.checkpoint = false;
                self.save_checkpoint()?;
            }
            if caught_up && self.due.publish {
                self.due.publish = false;
                self.publish_or_warn()?;
            }
        }
        self.save_checkpoint()?;
        // The session's last updates reach the devices too.
        if self.published_at != Some(self.state.updates) && session_updates > 0 {
            self.publish_or_warn()?;
        }
        run::finish_run(&self.logger, &options.run.logdir, &self.summary.curve);
        self.summary.env_steps = self.state.env_steps;
        self.summary.updates = self.state.updates;
        self.summary.episodes = self.state.episodes;
        self.summary.eval_return = self.state.eval_return;
        self.summary.wall_s = self.logger.wall_s();
        Ok(self.summary)
    }

    /// Moves episodes into replay while at most one round of updates is owed and the run
    /// wants more env steps, polling the stream when the inbox has none waiting; returns the
    /// episodes added. What is not taken waits in the inbox or in the stream.
    fn take(&mut self, wait: Duration) -> Result<usize, LearnError> {
        if self.waiting.is_empty() {
            // The broker down or restarting: training goes on with what replay holds and the
            // intake retries (the client reconnects; what was not acknowledged comes again).
            let report = match self.ingest.poll(POLL_BATCH, wait) {
                Ok(report) => {
                    if std::mem::take(&mut self.broker_down) {
                        self.logger.println("broker reachable again".to_string());
                    }
                    report
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.broker_down, true) {
                        self.logger
                            .println(format!("warning: taking episodes failed: {e}; retrying"));
                    }
                    std::thread::sleep(BROKER_RETRY);
                    return Ok(0);
                }
            };
            self.summary.duplicates += report.duplicates.len() as u64;
            self.summary.rejected += report.rejected.len() as u64;
            for (id, why) in &report.rejected {
                self.logger
                    .println(format!("rejected episode message `{id}`: {why}"));
            }
            if !report.rejected.is_empty() || !report.duplicates.is_empty() {
                self.logger.record(
                    "ingest",
                    self.state.env_steps,
                    self.state.updates,
                    &[
                        ("duplicates", self.summary.duplicates as f64),
                        ("rejected", self.summary.rejected as f64),
                    ],
                )?;
            }
            // Also what an earlier session stored and did not take.
            self.waiting = self.ingest.pending(&self.in_replay)?.into();
        }
        let repeat = self.config.run.action_repeat as u64;
        let mut added = 0;
        while self.wants_episodes() {
            let Some((id, episode)) = self.waiting.pop_front() else {
                break;
            };
            let total = episode.total_reward();
            let before = self.state.env_steps;
            self.state.env_steps += (episode.len().saturating_sub(1)) as u64 * repeat;
            let after = self.state.env_steps;
            let log = &self.config.log;
            self.due.eval |= crossed(before, after, self.config.eval.every);
            self.due.checkpoint |= crossed(before, after, log.checkpoint_every);
            self.replay.add(episode)?;
            self.state.episodes += 1;
            self.state.taken.push(id.to_string());
            self.in_replay.insert(id);
            added += 1;
            self.logger.record(
                "episode",
                self.state.env_steps,
                self.state.updates,
                &[("return", total)],
            )?;
        }
        self.logger.set_position(self.state.env_steps);
        Ok(added)
    }

    /// Backpressure: more experience only while at most one round of updates is owed, and
    /// none while an evaluation, checkpoint or bundle waits for the updates owed to be done.
    fn wants_episodes(&self) -> bool {
        let c = &self.config.collect;
        let owed =
            updates_due(self.config, self.state.env_steps).saturating_sub(self.state.updates);
        let due = self.due.eval || self.due.checkpoint || self.due.publish;
        owed <= c.train_steps.max(1) && !due && self.state.env_steps < self.config.run.steps
    }

    fn evaluate(&mut self) -> Result<(), LearnError> {
        // The evaluation envs are made each time: a learner evaluates rarely, and a bridged
        // task's workers would otherwise sit idle between evaluations.
        let mut envs = None;
        evaluate_and_log(
            &self.agent,
            &mut envs,
            &mut self.state,
            &mut self.summary.curve,
            &mut self.logger,
        )?;
        save_if_best(&self.agent, &mut self.state, &self.options.run.logdir)?;
        Ok(())
    }

    /// Saves the checkpoint, then confirms the episodes it counts (see the module's notes).
    fn save_checkpoint(&mut self) -> Result<(), LearnError> {
        self.logger.sync()?;
        checkpoint::save(&self.checkpoint_dir(), &self.agent, &self.state)?;
        let taken = std::mem::take(&mut self.state.taken);
        let ids: Vec<EpisodeId> = taken.iter().filter_map(|t| t.parse().ok()).collect();
        self.ingest.confirm(&ids)?;
        for id in &ids {
            self.in_replay.remove(id);
        }
        Ok(())
    }

    /// [`Learner::publish`], where a broker that cannot take the bundle now is reported and
    /// the next bundle tried after `--publish-every` more updates (the exported bundle stays
    /// in `bundles/`); an export that fails is an error.
    fn publish_or_warn(&mut self) -> Result<(), LearnError> {
        match self.publish() {
            Err(LearnError::Online(e)) => {
                self.logger.println(format!(
                    "warning: publishing failed: {e}; the next bundle follows after {} more updates",
                    self.options.publish_every
                ));
                Ok(())
            }
            other => other,
        }
    }

    /// Exports the saved checkpoint, verified and signed, into `bundles/v<version>` and
    /// publishes it as the next version.
    fn publish(&mut self) -> Result<(), LearnError> {
        let started = Instant::now();
        let checkpoint_dir = self.checkpoint_dir();
        let version = policy::current_policy(&self.options.broker)?.map_or(1, |r| r.version + 1);
        reference::write_reference(&checkpoint_dir, REFERENCE_STEPS, REFERENCE_CASES)?;
        let out = bundle_dir(&self.options.run.logdir, version);
        let mut export = self.options.export.clone();
        export.eval_return = self.state.eval_return;
        dreamer_export::export_signed(
            &checkpoint_dir,
            &out,
            &export,
            Some(&self.options.signing_key),
        )?;
        policy::publish_bundle(&self.options.broker, &out, version)?;
        self.summary.published.push(version);
        self.published_at = Some(self.state.updates);
        self.logger.record(
            "publish",
            self.state.env_steps,
            self.state.updates,
            &[
                ("version", version as f64),
                ("seconds", started.elapsed().as_secs_f64()),
            ],
        )?;
        self.logger.println(format!(
            "published policy v{version} after {} updates ({} env steps) in {:.1} s",
            self.state.updates,
            self.state.env_steps,
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The folder of published bundle `version` in a learner's run folder.
pub fn bundle_dir(logdir: &Path, version: u64) -> PathBuf {
    logdir.join(BUNDLES_DIR).join(format!("v{version}"))
}
