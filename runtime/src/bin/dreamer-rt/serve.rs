//! `serve`: answers a microcontroller's observations over a serial port, a pty or UDP until SIGINT
//! or SIGTERM, then prints the typed summary as JSON (and writes it with `--summary FILE`).
//! The summary is written however serving ends (stop request, the firmware hung up or
//! refused the handshake, handshake timeout, an I/O error, a bundle that did not load); its
//! `end` and `error` fields say how, and the exit status is non-zero for all but a stop.
//! With a firmware that measures rewards, `--record` keeps the episodes it reports (and
//! `--upload` sends them to a learner; `--follow-policies` switches between them); what
//! recording and upload did goes to stderr, after the summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use dreamer_online::upload::{UploadOptions, Uploader};
use dreamer_runtime::explore::Exploration;
use dreamer_runtime::serve::{
    Experience, LinkSpec, NextPolicy, ServeEnd, ServeOptions, ServeSummary,
};
use dreamer_wire::report::write_report;

use crate::agent_args::{AgentArgs, load_agent};
use crate::broker_args::BrokerArgs;
use crate::follow::PolicyFollower;
use crate::realtime_args::RealtimeArgs;
use crate::recording::{RecordArgs, finish_recording, finish_upload, policy_id};
use dreamer_cli::{errln, outln};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Bundle folder.
    bundle: PathBuf,
    /// Serial device or pty path the firmware is on (e.g. /dev/ttyACM0, /dev/pts/7).
    #[arg(
        long,
        required_unless_present = "udp_bind",
        conflicts_with = "udp_bind"
    )]
    port: Option<PathBuf>,
    /// Talk UDP instead: bind this address (one message per datagram) ...
    #[arg(long, value_name = "ADDR", requires = "udp_peer")]
    udp_bind: Option<SocketAddr>,
    /// ... and exchange datagrams with the firmware at this address only.
    #[arg(long, value_name = "ADDR", requires = "udp_bind")]
    udp_peer: Option<SocketAddr>,
    /// Baud rate set on a real serial port (ignored by ptys).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Plant state file published by `firmware-host --state-file` (pixel policies: the
    /// simulated camera renders it).
    #[arg(long, value_name = "FILE")]
    camera_state: Option<PathBuf>,
    /// Give up when the firmware has not accepted the handshake within this many seconds
    /// (default: keep trying).
    #[arg(long, allow_negative_numbers = true)]
    handshake_timeout_s: Option<f64>,
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Spin on the link instead of sleeping until input arrives (for a core of its own, with
    /// --pin-cpu: no wake-up latency, warm caches; the core stays 100 % busy).
    #[arg(long)]
    busy_poll: bool,
    /// Explore as the trainer collects experience: add Gaussian noise of this standard
    /// deviation to each action sent (clipped to [-1, 1]; the model and the recorded episodes
    /// see the noisy action), drawn from a generator seeded with --explore-seed.
    #[arg(long, value_name = "STD", allow_negative_numbers = true)]
    explore: Option<f64>,
    /// Seed of the exploration noise (--explore).
    #[arg(long, default_value_t = 0, value_name = "SEED", requires = "explore")]
    explore_seed: u64,
    #[command(flatten)]
    record: RecordArgs,
    /// With --record: the longest episode kept as one, in decisions; a longer one goes on as
    /// a new recorded episode.
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "N",
        requires = "record",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    record_max_decisions: u32,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    realtime: RealtimeArgs,
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn serve(args: ServeArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    // SIGINT and SIGTERM: serving drains the port and returns its summary.
    crate::stop::on_signals();
    // Every way serving ends leaves a summary (`end` says which); a failure is reported
    // after it.
    let (summary, failure) = match session(&args, ort_lib) {
        Ok(summary) => (summary, None),
        Err(Failed { summary, error }) => (*summary, Some(error)),
    };
    let written = write_report(&summary, args.summary.as_deref());
    match (written, failure) {
        (Ok(text), failure) => {
            outln!("{text}");
            failure.map_or(Ok(()), Err)
        }
        (Err(e), None) => Err(e.into()),
        (Err(e), Some(failure)) => {
            errln!("serve: {e}");
            Err(failure)
        }
    }
}

impl ServeArgs {
    /// The link the options name (clap requires `--port` or both UDP addresses).
    fn link(&self) -> LinkSpec {
        match (self.udp_bind, self.udp_peer, &self.port) {
            (Some(bind), Some(peer), _) => LinkSpec::Udp { bind, peer },
            (_, _, port) => LinkSpec::Serial {
                path: port.clone().unwrap_or_default(),
                baud: self.baud,
            },
        }
    }
}

/// A failed session: the error and the summary up to it.
struct Failed {
    summary: Box<ServeSummary>,
    error: anyhow::Error,
}

impl Failed {
    /// A failure before serving started (bad option, bundle not loaded).
    fn early(args: &ServeArgs, error: anyhow::Error) -> Self {
        Failed {
            summary: Box::new(ServeSummary {
                task: String::new(),
                port: PathBuf::from(args.link().to_string()),
                end: ServeEnd::Error,
                error: Some(format!("{error:#}")),
                ..ServeSummary::default()
            }),
            error,
        }
    }
}

fn session(args: &ServeArgs, ort_lib: Option<PathBuf>) -> Result<ServeSummary, Failed> {
    let handshake_timeout = match args.handshake_timeout_s {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            let error =
                anyhow!("--handshake-timeout-s must be a positive number of seconds, got {s}");
            return Err(Failed::early(args, error));
        }
        None => None,
    };
    let agent_options = args
        .agent
        .options(ort_lib)
        .map_err(|e| Failed::early(args, e))?;
    let mut agent =
        load_agent(&args.bundle, agent_options.clone()).map_err(|e| Failed::early(args, e))?;
    let broker = args.broker.broker().map_err(|e| Failed::early(args, e))?;
    if args.broker.follow_policies.is_some() && agent_options.trusted_keys.is_empty() {
        let error = anyhow!(
            "--follow-policies needs --trusted-key: policies from the network must be signed"
        );
        return Err(Failed::early(args, error));
    }
    let mut exploration = args
        .explore
        .map(|std| {
            Exploration::new(
                std,
                args.explore_seed,
                agent.manifest().action.size as usize,
            )
        })
        .transpose()
        .context("--explore")
        .map_err(|e| Failed::early(args, e))?;
    // The first observation, then one per decision.
    let max_steps = args.record_max_decisions as usize + 1;
    let mut recorder = args
        .record
        .start(&args.bundle, agent.manifest(), max_steps)
        .map_err(|e| Failed::early(args, e))?;
    // Uploads what the spool holds (from earlier sessions too) while serving.
    let uploader = match (&broker, &args.record.record) {
        (Some(broker), Some(spool)) => Some(
            Uploader::start(UploadOptions::new(spool.clone(), broker.clone()))
                .context("--upload")
                .map_err(|e| Failed::early(args, e))?,
        ),
        _ => None,
    };
    let follower = match (&args.broker.follow_policies, broker) {
        (Some(root), Some(broker)) => Some(PolicyFollower::start(
            broker,
            root.clone(),
            agent_options.clone(),
            Duration::from_millis(200),
        )),
        _ => None,
    };
    let realtime = args.realtime.apply();
    for note_text in &realtime.notes {
        errln!("serve: note: {note_text}");
    }
    if args.busy_poll
        && realtime.fifo_priority.is_some()
        && let Some((runtime, period)) = dreamer_runtime::control::rt_throttling()
    {
        errln!(
            "serve: note: --busy-poll under SCHED_FIFO with the kernel's real-time throttling \
             on (sched_rt_runtime_us {runtime} of {period}): the spinning thread loses its CPU \
             for {} ms of every {} ms. On a host with isolated cores set \
             kernel.sched_rt_runtime_us to -1, or serve without --rt-priority",
            (period - runtime) / 1000,
            period / 1000
        );
    }
    let link = args.link();
    let options = ServeOptions {
        camera_state: args.camera_state.clone(),
        handshake_timeout,
        busy_poll: args.busy_poll,
        ..ServeOptions::on(link.clone())
    };
    errln!(
        "serve: {} (task {}) on {link}",
        args.bundle.display(),
        agent.manifest().task.name,
    );
    let mut next_policy = follower.as_ref().map(|follower| {
        move || {
            let followed = follower.try_next()?;
            match policy_id(&followed.bundle) {
                Ok(policy_id) => Some(NextPolicy {
                    agent: followed.agent,
                    policy_id,
                    label: format!("v{} ({})", followed.version, followed.bundle.display()),
                }),
                Err(e) => {
                    errln!("serve: policy v{}: refused: {e:#}", followed.version);
                    None
                }
            }
        }
    });
    let experience = Experience {
        recorder: recorder.as_mut(),
        next_policy: next_policy
            .as_mut()
            .map(|f| f as &mut dyn FnMut() -> Option<NextPolicy>),
        exploration: exploration.as_mut(),
    };
    let outcome =
        dreamer_runtime::serve::serve(&mut agent, &options, &crate::stop::STOP, experience);
    // Whatever the end, what was recorded is written and uploaded as far as it goes.
    if let Some(recorder) = recorder
        && let Err(e) = finish_recording(recorder, |line| errln!("serve: {line}"))
    {
        errln!("serve: recording: {e:#}");
    }
    if let (Some(uploader), Some(spool)) = (uploader, &args.record.record) {
        let drain = Duration::from_secs_f64(args.broker.upload_drain_s);
        finish_upload(uploader, spool, drain, |line| errln!("serve: {line}"));
    }
    outcome.map_err(|failure| Failed {
        summary: failure.summary,
        error: anyhow::Error::new(failure.error).context(format!("serving {link} failed")),
    })
}
