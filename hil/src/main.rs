//! `dreamer-hil`: runs a policy bundle through the firmware loop over a pty or UDP, with
//! optional fault injection and a runtime stall, and prints a JSON report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use dreamer_cli::outln;
use dreamer_hil::{FaultRates, HilOptions, LinkKind};
use dreamer_wire::report::write_report;

#[derive(Debug, Parser)]
#[command(
    name = "dreamer-hil",
    version,
    about = "Hardware-in-the-loop run: firmware-host and dreamer-rt serve over a pty or UDP",
    // A later option replaces an earlier one (scripts pass defaults, users override them).
    args_override_self = true
)]
struct Args {
    /// Policy bundle folder (holds manifest.json).
    #[arg(long)]
    bundle: PathBuf,
    /// Control ticks per second [default: the task's decision rate].
    #[arg(long, allow_negative_numbers = true)]
    rate_hz: Option<f64>,
    /// Seconds of control after the session opened.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0)]
    duration_s: f64,
    /// Seed of the plant's first episode and of the fault injection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probability that a byte (pty) or datagram (udp) is dropped.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    drop: f64,
    /// Probability that a byte or datagram gets one bit flipped (corrupted).
    #[arg(
        long,
        alias = "corrupt",
        allow_negative_numbers = true,
        default_value_t = 0.0
    )]
    flip: f64,
    /// Probability that a byte or datagram is sent twice.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    dup: f64,
    /// How long a delay holds back, in microseconds (needs --delay-p).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    delay_us: u64,
    /// Probability that a byte or datagram (and everything behind it) is delayed (needs
    /// --delay-us).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    delay_p: f64,
    /// Probability that a datagram is overtaken by the next one (udp only).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    reorder: f64,
    /// Stop the runtime process this many seconds after the session opened...
    #[arg(long, allow_negative_numbers = true)]
    stall_at: Option<f64>,
    /// ...for this many seconds [default: 0.5].
    #[arg(long, allow_negative_numbers = true)]
    stall_for: Option<f64>,
    /// Missed deadlines in a row before the firmware's safe state (default as Franka's FCI).
    #[arg(long, default_value_t = dreamer_wire::DEFAULT_MAX_MISSED)]
    max_missed: u16,
    /// Firmware serial polling interval in microseconds.
    #[arg(long, default_value_t = 50)]
    poll_us: u32,
    /// Two CPUs, `F,R`: the firmware, the relay and the harness on F, serve on R (and the
    /// echo floor's two ends likewise).
    #[arg(long, value_delimiter = ',', value_name = "F,R")]
    cpus: Option<Vec<usize>>,
    /// Spin instead of sleeping while waiting for input: serve --busy-poll, the firmware
    /// polling without pause, the echo floor likewise (each needs a core of its own).
    #[arg(long)]
    busy_poll: bool,
    /// Relay through the fault-injection proxy even without faults or a stall.
    #[arg(long)]
    relay: bool,
    /// SCHED_FIFO priority (1-99) for the firmware, the relay and serve, where permitted.
    #[arg(long)]
    rt_priority: Option<i32>,
    /// Lock the memory of the firmware, serve and the harness (mlockall), where permitted.
    #[arg(long)]
    lock_memory: bool,
    /// Skip the pure-simulation run of the same policy.
    #[arg(long)]
    no_simulation: bool,
    /// firmware-host executable [default: next to this one].
    #[arg(long)]
    firmware_bin: Option<PathBuf>,
    /// dreamer-rt executable [default: next to this one].
    #[arg(long)]
    runtime_bin: Option<PathBuf>,
    /// Extra argument for `dreamer-rt serve` (repeatable), e.g. --serve-arg=--pin-cpu=1.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Seconds of bare echo over the run's kind of link (pty or UDP) at the control rate
    /// before the run: the platform's own latency floor, reported next to the loop's.
    #[arg(
        long,
        alias = "pty-baseline-s",
        allow_negative_numbers = true,
        default_value_t = 0.0
    )]
    baseline_s: f64,
    /// The link between firmware and runtime: a pty pair (a serial line) or UDP on loopback.
    #[arg(long, value_enum, default_value = "pty")]
    link: LinkKind,
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    Ok(me.with_file_name(name))
}

fn main() -> Result<()> {
    let args = Args::parse();
    // A stall length alone would silently stall nothing.
    if let (Some(stall_for), None) = (args.stall_for, args.stall_at) {
        bail!("--stall-for {stall_for} stalls nothing without --stall-at (when the stall starts)");
    }
    let cpus = match args.cpus.as_deref() {
        None => None,
        Some(&[firmware, runtime]) => Some([firmware, runtime]),
        Some(other) => bail!("--cpus takes two CPUs, F,R (firmware side, serve), got {other:?}"),
    };
    let options = HilOptions {
        rate_hz: args.rate_hz,
        duration_s: args.duration_s,
        seed: args.seed,
        faults: FaultRates {
            drop: args.drop,
            flip: args.flip,
            dup: args.dup,
            delay_p: args.delay_p,
            delay_us: args.delay_us,
            reorder: args.reorder,
        },
        stall_at_s: args.stall_at,
        stall_for_s: args.stall_for.unwrap_or(0.5),
        max_missed: args.max_missed,
        poll_us: args.poll_us,
        busy_poll: args.busy_poll,
        cpus,
        rt_priority: args.rt_priority,
        relay: args.relay,
        lock_memory: args.lock_memory,
        serve_args: args.serve_args,
        compare_simulation: !args.no_simulation,
        connect_timeout: Duration::from_secs(120),
        baseline_s: args.baseline_s,
        link: args.link,
        ..HilOptions::new(
            args.bundle,
            args.firmware_bin
                .map_or_else(|| sibling("firmware-host"), Ok)?,
            args.runtime_bin.map_or_else(|| sibling("dreamer-rt"), Ok)?,
        )
    };
    let report = dreamer_hil::run(&options)?;
    let text = write_report(&report, args.json.as_deref())?;
    // Best-effort, never a panic: the report file is already written. A closed pipe is
    // the reader's choice (`dreamer-hil ... | head`); any other failure lost the output.
    outln!("{text}");
    Ok(dreamer_cli::stdout::finish(Some("the report"))?)
}
