//! `firmware-host`: the firmware core on a PC, driving a simulated plant in real time and
//! talking the wire protocol over a serial port or pseudo-terminal (COBS frames) or UDP (one
//! message per datagram). Prints a JSON summary on stdout at exit (after `--duration-s`, or
//! on SIGINT/SIGTERM).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use dreamer_cli::{errln, outln};
use dreamer_firmware::{DatagramLink, Link, StreamLink};
use dreamer_wire::report::write_report;
use firmware_host::{HostFirmware, HostUdp, PtySerial, SimOptions};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Firmware core against a simulated plant, over a serial port, a pty or UDP"
)]
struct Args {
    /// Task whose plant to simulate (e.g. cartpole-swingup, pendulum).
    #[arg(long)]
    plant: String,
    /// Serial device or pty path (e.g. /dev/pts/5).
    #[arg(
        long,
        required_unless_present_any = ["port_fd", "udp_bind"],
        conflicts_with_all = ["port_fd", "udp_bind"]
    )]
    port: Option<String>,
    /// An inherited open terminal descriptor to use as the port (e.g. the master of a pty
    /// pair whose slave the runtime opens: one kernel hop per direction).
    #[arg(long, value_name = "FD", conflicts_with = "udp_bind")]
    port_fd: Option<i32>,
    /// Talk UDP instead: the firmware's socket binds this address (port 0: any free one,
    /// printed at start) and takes datagrams from `--udp-peer` only.
    #[arg(long, value_name = "ADDR", requires = "udp_peer")]
    udp_bind: Option<SocketAddr>,
    /// The runtime's UDP address (`dreamer-rt serve --udp-bind`).
    #[arg(long, value_name = "ADDR", requires = "udp_bind")]
    udp_peer: Option<SocketAddr>,
    /// Control ticks per second.
    #[arg(long, default_value_t = 50.0)]
    rate_hz: f64,
    /// Action deadline after the tick start, in milliseconds [default: half the period].
    #[arg(long)]
    deadline_ms: Option<f64>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Seed of the first episode's initial state.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Missed deadlines in a row before the safe state (motor off, fault reported).
    #[arg(long, default_value_t = dreamer_wire::DEFAULT_MAX_MISSED)]
    max_missed: u16,
    /// Heartbeat frames per second (0: none).
    #[arg(long, default_value_t = 1.0)]
    heartbeat_hz: f64,
    /// Baud rate set on the port (ignored by ptys).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Longest wait between link polls, in microseconds (a wait ends early when bytes
    /// arrive, as with a receive interrupt).
    #[arg(long, default_value_t = 100)]
    poll_us: u32,
    /// Start the first episode when the runtime's session opens instead of at start-up.
    #[arg(long)]
    episode_at_handshake: bool,
    /// Publish the plant's physical state to this file after every physics step (read by a
    /// simulated camera, e.g. `dreamer-rt serve --camera-state FILE`).
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// After the run, keep receiving for this many milliseconds (answers in flight are
    /// then counted) before the summary.
    #[arg(long, default_value_t = 0)]
    drain_ms: u64,
    /// Run the control loop with this SCHED_FIFO priority (1-99), where permitted, as the
    /// firmware would own its microcontroller.
    #[arg(long)]
    rt_priority: Option<i32>,
    /// Lock the process's memory (mlockall), where permitted, so no page fault stalls a tick.
    #[arg(long)]
    lock_memory: bool,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let duration = match args.duration_s {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration-s must be a positive number of seconds, got {s}"),
        None => None,
    };
    let options = SimOptions {
        rate_hz: args.rate_hz,
        deadline_s: args.deadline_ms.map(|ms| ms / 1000.0),
        max_missed: args.max_missed,
        heartbeat_hz: args.heartbeat_hz,
        seed: args.seed,
        poll_interval_us: args.poll_us,
        episode_at_handshake: args.episode_at_handshake,
        state_file: args.state_file.clone(),
        ..SimOptions::new(&args.plant)
    };
    if let (Some(bind), Some(peer)) = (args.udp_bind, args.udp_peer) {
        let link = DatagramLink::bind(HostUdp::new(bind.ip()), bind.port(), peer)
            .with_context(|| format!("cannot bind UDP {bind}"))?;
        let (fd, local) = link
            .stack()
            .bound()
            .context("the UDP socket reports no address")?;
        return run(
            &args,
            options,
            duration,
            link,
            fd,
            format!("UDP {local} (peer {peer})"),
        );
    }
    let period = Duration::from_secs_f64(1.0 / args.rate_hz.max(1e-3));
    let (serial, port_name) = match (&args.port, args.port_fd) {
        (Some(path), _) => (
            PtySerial::open(path, args.baud, period)
                .with_context(|| format!("cannot open serial port {path}"))?,
            path.clone(),
        ),
        (None, Some(fd)) => (inherited_port(fd, period)?, format!("descriptor {fd}")),
        (None, None) => anyhow::bail!("give --port, --port-fd or --udp-bind"),
    };
    let serial_fd = std::os::fd::AsRawFd::as_raw_fd(&serial);
    run(
        &args,
        options,
        duration,
        StreamLink::new(serial),
        serial_fd,
        port_name,
    )
}

/// Runs the simulated robot on `link` (whose input arrives on `fd`) and prints its summary.
fn run<L: Link>(
    args: &Args,
    options: SimOptions,
    duration: Option<Duration>,
    link: L,
    fd: RawFd,
    link_name: String,
) -> Result<()> {
    let mut robot = HostFirmware::new(options, link).context("cannot start the simulated robot")?;
    robot.wake_on_input(fd);
    install_signal_handlers();
    if let Some(priority) = args.rt_priority
        && let Err(e) = set_fifo_priority(priority)
    {
        errln!("firmware-host: note: SCHED_FIFO priority {priority} not set: {e}");
    }
    // SAFETY: plain syscall; locking current and future pages has no memory-safety effect.
    if args.lock_memory && unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        errln!(
            "firmware-host: note: memory not locked: {}",
            std::io::Error::last_os_error()
        );
    }
    errln!(
        "firmware-host: {} on {} at {} Hz, safe state after {} missed deadlines",
        args.plant,
        link_name,
        args.rate_hz,
        args.max_missed
    );
    robot.run(duration, &STOP);
    robot.drain(Duration::from_millis(args.drain_ms));
    let summary = write_report(&robot.finish(), args.summary.as_deref())?;
    // Best-effort, never a panic: the `--summary` file is already written. A closed pipe
    // is the reader's choice (`firmware-host ... | head`); any other failure lost the output.
    outln!("{summary}");
    Ok(dreamer_cli::stdout::finish(Some("the summary"))?)
}

/// The terminal descriptor `fd` handed over by the parent process, as the serial port.
fn inherited_port(fd: i32, write_timeout: Duration) -> Result<PtySerial> {
    use serialport::SerialPort;
    use std::os::fd::FromRawFd;
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(fd) } != 1 {
        anyhow::bail!("--port-fd {fd} is not an open terminal descriptor");
    }
    // SAFETY: the parent handed this descriptor to this process for its exclusive use; it
    // is a terminal (checked above) and nothing else here owns it.
    let mut port = unsafe { serialport::TTYPort::from_raw_fd(fd) };
    port.set_timeout(write_timeout)
        .with_context(|| format!("--port-fd {fd}"))?;
    Ok(PtySerial::new(port))
}

/// Puts the calling thread under SCHED_FIFO at `priority`.
fn set_fifo_priority(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain syscall on the calling thread with a valid parameter struct.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
