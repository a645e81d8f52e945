//! One hardware-in-the-loop run: the firmware-host process and the runtime's `serve`
//! process on two ptys, the relay between them, an optional runtime stall, and the report.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dreamer_wire::report::{
    FirmwareSummary, LatencySummary, RunSummary, ServeSummary, read_report,
};
use dreamer_wire::{LatencyStats, LinkCounters, Mode};
use serde::Serialize;

use crate::proxy::{Direction, FaultRates, LinkStats, Proxy, Reconciliation, reconcile};
use crate::pty::Pty;

/// The link between the firmware and `serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A pseudo-terminal pair (a serial line), COBS frames.
    #[default]
    Pty,
    /// UDP on loopback, one frame per datagram.
    Udp,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct HilOptions {
    pub bundle: PathBuf,
    pub link: LinkKind,
    /// Control ticks per second (default: the task's own decision rate).
    pub rate_hz: Option<f64>,
    /// Seconds of control after the session opened.
    pub duration_s: f64,
    pub seed: u64,
    pub faults: FaultRates,
    /// Stop the runtime (SIGSTOP) this many seconds after the session opened...
    pub stall_at_s: Option<f64>,
    /// ...for this long, then resume it (SIGCONT).
    pub stall_for_s: f64,
    /// Missed deadlines in a row before the firmware's safe state.
    pub max_missed: u16,
    /// Firmware serial polling interval.
    pub poll_us: u32,
    /// Spin instead of sleeping while waiting for input: `serve --busy-poll`, the firmware
    /// polling every microsecond (`--poll-us 1`), and the echo floor measured the same way.
    pub busy_poll: bool,
    /// SCHED_FIFO priority for the firmware, the relay and `serve` (where permitted).
    pub rt_priority: Option<i32>,
    /// Two CPUs: the first for the firmware, the relay and the harness (and the echo
    /// floor's pinging end), the second for `serve` (and the echoing end). [`run`] pins the
    /// calling thread to the first.
    pub cpus: Option<[usize; 2]>,
    /// Lock the memory of the firmware, `serve` and the harness (mlockall), where permitted.
    pub lock_memory: bool,
    /// Relay through the proxy even without faults or a stall (they always use it). Without
    /// it the two processes share one pty pair: the firmware on the master, `serve` on the
    /// slave, one kernel hop per direction.
    pub relay: bool,
    pub firmware_bin: PathBuf,
    pub runtime_bin: PathBuf,
    /// Extra arguments for `dreamer-rt serve` (e.g. `--pin-cpu 1`).
    pub serve_args: Vec<String>,
    /// Also run the policy in pure simulation (`dreamer-rt run`) for the return comparison.
    pub compare_simulation: bool,
    /// Longest wait for the runtime to load and open the session.
    pub connect_timeout: Duration,
    /// Seconds of bare echo over the run's kind of link at the control rate before the run
    /// ([`crate::baseline`]); 0: none.
    pub baseline_s: f64,
}

impl HilOptions {
    pub fn new(bundle: PathBuf, firmware_bin: PathBuf, runtime_bin: PathBuf) -> Self {
        Self {
            bundle,
            link: LinkKind::Pty,
            rate_hz: None,
            duration_s: 10.0,
            seed: 0,
            faults: FaultRates::default(),
            stall_at_s: None,
            stall_for_s: 0.5,
            max_missed: dreamer_wire::DEFAULT_MAX_MISSED,
            poll_us: 50,
            busy_poll: false,
            rt_priority: None,
            cpus: None,
            lock_memory: false,
            relay: false,
            firmware_bin,
            runtime_bin,
            serve_args: Vec::new(),
            compare_simulation: true,
            connect_timeout: Duration::from_secs(120),
            baseline_s: 0.0,
        }
    }
}

/// What happened around the runtime stall.
#[derive(Debug, Clone, Serialize)]
pub struct StallReport {
    pub at_s: f64,
    pub for_s: f64,
    /// Last observation the runtime could have seen before it stopped.
    pub last_seq_before: Option<u32>,
    /// The deadline fault raised during the stall.
    pub fault_seq: Option<u32>,
    /// Observations between the stall and the safe state (`fault_seq - last_seq_before`;
    /// 0 when the firmware was already in the safe state when the runtime stopped).
    pub periods_to_safe: Option<u32>,
    /// The firmware was already in the safe state (a fault raised and not cleared).
    pub already_safe: bool,
    pub max_missed: u16,
    /// The safe state was reached within `max_missed` periods.
    pub safe_within_k: bool,
    /// The fault was cleared after the runtime resumed.
    pub recovered: bool,
    /// Seconds from SIGCONT to the cleared fault.
    pub recovery_s: Option<f64>,
}

/// The loop's episode return against the same policy in pure simulation.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnComparison {
    /// First episode completed through the loop (it starts when the session opens).
    pub loop_return: Option<f64>,
    /// Every episode completed through the loop.
    pub loop_completed: Vec<f64>,
    /// Reward of the unfinished episode at the end.
    pub loop_partial: f64,
    /// `dreamer-rt run --seed S --episodes 1` on the same bundle.
    pub simulation_return: Option<f64>,
    /// |loop - simulation| / |simulation|.
    pub relative_difference: Option<f64>,
}

/// A free loopback UDP address (bound, read, released: the process given it binds it next).
fn free_udp_address() -> Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free UDP port")?;
    Ok(socket.local_addr()?)
}

/// Where the two processes talk over UDP, and the relay between them if there is one.
struct UdpAddresses {
    firmware: SocketAddr,
    runtime: SocketAddr,
    /// The firmware's peer: the runtime, or the relay's socket facing the firmware.
    firmware_peer: SocketAddr,
    runtime_peer: SocketAddr,
    /// Taken by the run once the processes are up.
    proxy: Option<Proxy>,
}

impl UdpAddresses {
    fn new(options: &HilOptions, use_relay: bool, epoch: Instant) -> Result<Self> {
        let (firmware, runtime) = (free_udp_address()?, free_udp_address()?);
        if !use_relay {
            return Ok(Self {
                firmware,
                runtime,
                firmware_peer: runtime,
                runtime_peer: firmware,
                proxy: None,
            });
        }
        let (proxy, ends) = Proxy::start_udp(
            firmware,
            runtime,
            options.faults,
            options.seed,
            epoch,
            options.rt_priority,
        )
        .context("cannot start the UDP relay")?;
        Ok(Self {
            firmware,
            runtime,
            firmware_peer: ends.for_firmware,
            runtime_peer: ends.for_runtime,
            proxy: Some(proxy),
        })
    }
}

/// The receive-queue drops of the socket at `addr`; 0 when it is gone already.
fn drops(addr: SocketAddr) -> Result<u64> {
    Ok(crate::proxy::receive_drops(addr)
        .context("cannot read the UDP receive-queue drops")?
        .unwrap_or(0))
}

/// Applied commands per session tick (each applied on time or missed); 0 without one.
pub fn command_success_rate(applied: u64, missed: u64) -> f64 {
    applied as f64 / (applied + missed).max(1) as f64
}

/// Load averages (1, 5, 15 min) from /proc/loadavg.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    [
        values.next().unwrap_or(f64::NAN),
        values.next().unwrap_or(f64::NAN),
        values.next().unwrap_or(f64::NAN),
    ]
}

/// The report of one run (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct HilReport {
    pub bundle: PathBuf,
    pub rt_priority: Option<i32>,
    /// CPUs of the firmware side and of `serve`, when placed.
    pub cpus: Option<[usize; 2]>,
    pub lock_memory: bool,
    /// Both processes (and the echo floor) spun on their links instead of sleeping.
    pub busy_poll: bool,
    pub link: LinkKind,
    /// Bytes went through the relay (faults, stall or `--relay`); otherwise one pty pair, or
    /// two UDP sockets.
    pub relay: bool,
    pub task: String,
    pub pixels: bool,
    pub rate_hz: f64,
    pub duration_s: f64,
    pub seed: u64,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Observation sampled -> action applied, on the firmware clock (µs), per applied action.
    pub round_trip: LatencyStats,
    /// The same over every session tick, each missed deadline counted as one period late.
    pub round_trip_every_tick: LatencyStats,
    /// The runtime's policy step (µs).
    pub inference: LatencySummary,
    /// |sample interval - period| on the firmware (µs).
    pub period_jitter: LatencyStats,
    pub ticks: u64,
    pub observations_sent: u64,
    pub actions_applied: u64,
    pub deadline_misses: u64,
    /// Deadline misses per observation sent.
    pub deadline_miss_ratio: f64,
    /// Session ticks whose command was applied on time, per session tick (applied or
    /// missed), as Franka's FCI reports its command success rate.
    pub command_success_rate: f64,
    pub faults: u64,
    pub recoveries: u64,
    pub final_mode: Mode,
    /// Frames the firmware received, per outcome.
    pub firmware_link: LinkCounters,
    /// Frames the runtime received, per outcome.
    pub runtime_link: LinkCounters,
    pub injected_firmware_to_runtime: crate::proxy::Injected,
    pub injected_runtime_to_firmware: crate::proxy::Injected,
    /// With the relay: the receivers' counts against its ledger.
    pub reconcile_firmware_to_runtime: Option<Reconciliation>,
    pub reconcile_runtime_to_firmware: Option<Reconciliation>,
    pub stall: Option<StallReport>,
    pub returns: ReturnComparison,
    pub proxy_firmware_to_runtime: Option<LinkStats>,
    pub proxy_runtime_to_firmware: Option<LinkStats>,
    /// The firmware-host summary as printed.
    pub firmware: FirmwareSummary,
    /// The `dreamer-rt serve` summary as printed.
    pub runtime: ServeSummary,
    /// The bare echo over the run's kind of link measured before the run, against the
    /// firmware's deadline (half the period): the platform's share of misses.
    pub echo_floor: Option<crate::baseline::EchoFloor>,
}

/// A child process that is killed if the harness fails before stopping it.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            bail!(
                "cannot signal {} (pid {}): {}",
                self.name,
                self.child.id(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    fn terminate(&mut self, timeout: Duration) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.signal(libc::SIGTERM)?;
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM (killed)",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal(libc::SIGCONT);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Passes a child's stderr through, prefixed; returns once `ready` matched a line (or the
/// stream ended). Later lines containing `session open` set `session`.
fn relay_stderr(
    child: &mut Child,
    name: &'static str,
    ready: &str,
    session: Arc<AtomicBool>,
) -> Result<()> {
    let stderr = child.stderr.take().context("stderr not captured")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        dreamer_cli::errln!("[{name}] {line}");
        if line.contains(ready) {
            break;
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("session open") {
                session.store(true, Ordering::Relaxed);
            }
            dreamer_cli::errln!("[{name}] {line}");
        }
    });
    Ok(())
}

/// Sleeps until `epoch + at_s`, checking that both processes live.
fn sleep_until(epoch: Instant, at_s: f64, processes: &mut [&mut Process]) -> Result<()> {
    let until = epoch + Duration::from_secs_f64(at_s.max(0.0));
    while Instant::now() < until {
        for p in processes.iter_mut() {
            p.alive()?;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    Ok(())
}

/// The return of one episode of `dreamer-rt run` in pure simulation, from its typed summary.
fn simulation_return(options: &HilOptions) -> Result<f64> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let summary_path = dir.path().join("run-summary.json");
    let output = Command::new(&options.runtime_bin)
        .arg("run")
        .arg(&options.bundle)
        .args(["--episodes", "1", "--rate-hz", "0", "--seed"])
        .arg(options.seed.to_string())
        .arg("--summary")
        .arg(&summary_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot start {}", options.runtime_bin.display()))?;
    if !output.success() {
        bail!("dreamer-rt run failed with {output}");
    }
    let summary: RunSummary = read_report(&summary_path, "dreamer-rt run summary")?;
    summary
        .episodes
        .first()
        .map(|episode| episode.episode_return)
        .context("dreamer-rt run reported no episode")
}

/// The public keys named by `--trusted-key FILE` (or `--trusted-key=FILE`) among the
/// arguments for `dreamer-rt serve`.
fn trusted_keys(serve_args: &[String]) -> Result<Vec<dreamer_bundle::PublicKey>> {
    let mut files = Vec::new();
    let mut args = serve_args.iter();
    while let Some(arg) = args.next() {
        if arg == "--trusted-key" {
            files.extend(args.next().map(String::as_str));
        } else if let Some(file) = arg.strip_prefix("--trusted-key=") {
            files.push(file);
        }
    }
    files
        .into_iter()
        .map(|file| {
            dreamer_bundle::PublicKey::read(Path::new(file))
                .context("cannot use the trusted key given to serve")
        })
        .collect()
}

/// Runs the loop and reports.
pub fn run(options: &HilOptions) -> Result<HilReport> {
    options.faults.validate().map_err(anyhow::Error::msg)?;
    if let Some(cpus) = options.cpus {
        let online = crate::sched::online_cpus();
        if let Some(cpu) = cpus.iter().find(|&&cpu| cpu >= online) {
            bail!(
                "--cpus names CPU {cpu}, but this machine has CPUs 0 to {}",
                online - 1
            );
        }
        // The harness, its relay threads and the firmware it starts inherit the first.
        crate::sched::pin_to_cpu(cpus[0]).context("--cpus: cannot pin the harness")?;
    }
    if !(options.duration_s.is_finite() && options.duration_s > 0.0) {
        bail!("--duration-s must be positive, got {}", options.duration_s);
    }
    if let Some(rate) = options.rate_hz
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate-hz must be a positive number of ticks per second, got {rate}");
    }
    if let Some(at) = options.stall_at_s
        && !(at.is_finite() && at >= 0.0)
    {
        bail!("--stall-at must be 0 or more seconds after the session opened, got {at}");
    }
    if options.stall_at_s.is_some()
        && !(options.stall_for_s.is_finite() && options.stall_for_s > 0.0)
    {
        bail!(
            "--stall-for must be a positive number of seconds, got {}",
            options.stall_for_s
        );
    }
    // The runtime's own loader, with the keys `serve` is given: values and origin are
    // checked here, before any of them becomes a child's argument.
    let trusted = trusted_keys(&options.serve_args)?;
    let manifest = dreamer_bundle::Bundle::open(&options.bundle, &trusted)
        .with_context(|| format!("cannot open the bundle {}", options.bundle.display()))?
        .manifest;
    let task = manifest.task.name.clone();
    if let Some(env) = &manifest.environment {
        bail!(
            "task `{task}` is a Python environment ({} `{}`): the firmware simulates the \
             built-in tasks only; drive this bundle in its env with bridge/python/drive_env.py",
            env.package,
            env.id
        );
    }
    let pixels = manifest.observation.pixels.is_some();
    let rate_hz = options
        .rate_hz
        .unwrap_or(1.0 / manifest.task.control_period_s);
    if let Some(at) = options.stall_at_s
        && at + options.stall_for_s + 0.5 > options.duration_s
    {
        bail!(
            "the stall ({at} s + {} s) must end at least 0.5 s before the run ({} s)",
            options.stall_for_s,
            options.duration_s
        );
    }
    for bin in [&options.firmware_bin, &options.runtime_bin] {
        if !bin.is_file() {
            bail!("{} not found (build it, or give its path)", bin.display());
        }
    }
    if !(options.baseline_s.is_finite() && options.baseline_s >= 0.0) {
        bail!(
            "--baseline-s must be 0 or more seconds, got {}",
            options.baseline_s
        );
    }
    let use_relay = options.relay || options.faults.any() || options.stall_at_s.is_some();
    if options.link == LinkKind::Pty && options.faults.reorder > 0.0 {
        bail!(
            "--reorder {} needs --link udp: a byte stream delivers in order (its faults are \
             --drop, --flip, --dup and --delay-*)",
            options.faults.reorder
        );
    }
    let echo_floor = if options.baseline_s > 0.0 {
        let echo = match options.link {
            LinkKind::Pty => crate::baseline::pty_echo,
            LinkKind::Udp => crate::baseline::udp_echo,
        };
        let waiting = if options.busy_poll {
            crate::baseline::Waiting::Spin
        } else {
            crate::baseline::Waiting::Sleep
        };
        let report = echo(crate::baseline::EchoTiming {
            rate_hz,
            duration: Duration::from_secs_f64(options.baseline_s),
            deadline: Duration::from_secs_f64(0.5 / rate_hz),
            rt_priority: options.rt_priority,
            waiting,
            echo_cpu: options.cpus.map(|[_, runtime]| runtime),
        })
        .context("echo baseline")?;
        Some(report)
    } else {
        None
    };
    let work = tempfile::tempdir().context("cannot create a working folder")?;
    let firmware_summary = work.path().join("firmware.json");
    let runtime_summary = work.path().join("runtime.json");
    let state_file = work.path().join("plant.state");
    let firmware_pty = Pty::open().context("cannot open a pty for the firmware")?;
    let runtime_pty = if use_relay && options.link == LinkKind::Pty {
        Some(Pty::open().context("cannot open a pty for the runtime")?)
    } else {
        None
    };
    let load_before = load_average();
    let epoch = Instant::now();

    let mut firmware_cmd = Command::new(&options.firmware_bin);
    firmware_cmd
        .args(["--plant", &task])
        .args(["--rate-hz", &rate_hz.to_string()])
        .args(["--seed", &options.seed.to_string()])
        .args(["--max-missed", &options.max_missed.to_string()])
        .args(["--poll-us", &options.poll_us.to_string()])
        .args(["--heartbeat-hz", "10", "--drain-ms", "300"])
        .arg("--episode-at-handshake")
        .arg("--summary")
        .arg(&firmware_summary)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if pixels {
        firmware_cmd.arg("--state-file").arg(&state_file);
    }
    if let Some(priority) = options.rt_priority {
        firmware_cmd.args(["--rt-priority", &priority.to_string()]);
    }
    if options.lock_memory {
        firmware_cmd.arg("--lock-memory");
        // SAFETY: plain syscall; locking pages has no memory-safety effect.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            dreamer_cli::errln!(
                "dreamer-hil: note: memory not locked: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let master_fd = firmware_pty.master.as_raw_fd();
    // UDP: both processes on loopback, each bound to its own free port and given the other's
    // address as its peer, or the relay's socket that faces it.
    let mut udp = match options.link {
        LinkKind::Udp => Some(UdpAddresses::new(options, use_relay, epoch)?),
        LinkKind::Pty => None,
    };
    if let Some(udp) = &udp {
        firmware_cmd.args(["--udp-bind", &udp.firmware.to_string()]);
        firmware_cmd.args(["--udp-peer", &udp.firmware_peer.to_string()]);
    } else if use_relay {
        firmware_cmd.arg("--port").arg(&firmware_pty.slave_path);
    } else {
        // The firmware inherits the master; `serve` opens the slave.
        firmware_cmd.args(["--port-fd", &master_fd.to_string()]);
        crate::pty::set_cloexec(master_fd, false)?;
    }
    let spawned = firmware_cmd.spawn();
    crate::pty::set_cloexec(master_fd, true)?;
    let mut firmware = Process {
        name: "firmware-host",
        child: spawned
            .with_context(|| format!("cannot start {}", options.firmware_bin.display()))?,
    };
    let session_flag = Arc::new(AtomicBool::new(false));
    // Its start-up line comes after the port is open.
    relay_stderr(
        &mut firmware.child,
        "firmware-host",
        "firmware-host:",
        Arc::new(AtomicBool::new(false)),
    )?;
    firmware.alive()?;

    let mut proxy = match &runtime_pty {
        _ if udp.is_some() => udp.as_mut().and_then(|u| u.proxy.take()),
        Some(runtime_pty) => Some(
            Proxy::start_with_priority(
                &firmware_pty.master,
                &runtime_pty.master,
                options.faults,
                options.seed,
                epoch,
                options.rt_priority,
            )
            .context("cannot start the relay")?,
        ),
        None => None,
    };
    let serve_port = runtime_pty
        .as_ref()
        .map_or(&firmware_pty.slave_path, |p| &p.slave_path);

    let mut serve_cmd = Command::new(&options.runtime_bin);
    serve_cmd.arg("serve").arg(&options.bundle);
    match &udp {
        Some(udp) => serve_cmd
            .args(["--udp-bind", &udp.runtime.to_string()])
            .args(["--udp-peer", &udp.runtime_peer.to_string()]),
        None => serve_cmd.arg("--port").arg(serve_port),
    };
    serve_cmd
        .arg("--summary")
        .arg(&runtime_summary)
        .args(&options.serve_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if pixels {
        serve_cmd.arg("--camera-state").arg(&state_file);
    }
    if let Some(priority) = options.rt_priority {
        serve_cmd.args(["--rt-priority", &priority.to_string()]);
    }
    if options.busy_poll {
        serve_cmd.arg("--busy-poll");
    }
    if let Some([_, runtime_cpu]) = options.cpus {
        // Every thread of `serve` on its CPU, set between fork and exec.
        // SAFETY: the closure only makes the async-signal-safe sched_setaffinity call.
        unsafe {
            serve_cmd.pre_exec(move || crate::sched::pin_to_cpu(runtime_cpu));
        }
    }
    if options.lock_memory {
        serve_cmd.arg("--lock-memory");
    }
    let mut runtime = Process {
        name: "dreamer-rt serve",
        child: serve_cmd
            .spawn()
            .with_context(|| format!("cannot start {}", options.runtime_bin.display()))?,
    };
    relay_stderr(&mut runtime.child, "serve", "serve:", session_flag.clone())?;

    // The session is open once observations flow.
    let connect_end = Instant::now() + options.connect_timeout;
    let session_s = loop {
        firmware.alive()?;
        runtime.alive()?;
        match &proxy {
            Some(proxy) => {
                if let Some(at) = proxy
                    .stats(Direction::FirmwareToRuntime)
                    .first_observation_s
                {
                    break at;
                }
            }
            None => {
                if session_flag.load(Ordering::Relaxed) {
                    break epoch.elapsed().as_secs_f64();
                }
            }
        }
        if Instant::now() > connect_end {
            bail!(
                "no session within {:?}: the runtime never completed the handshake",
                options.connect_timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let mut stall = None;
    if let (Some(at), Some(proxy)) = (options.stall_at_s, &proxy) {
        sleep_until(epoch, session_s + at, &mut [&mut firmware, &mut runtime])?;
        runtime.signal(libc::SIGSTOP)?;
        // Nothing the runtime has not read yet can be answered now: the last observation
        // forwarded is the last one it could have seen.
        let last_seq_before = proxy
            .stats(Direction::FirmwareToRuntime)
            .last_observation_seq;
        let events_before = proxy.stats(Direction::FirmwareToRuntime).fault_events.len();
        sleep_until(
            epoch,
            session_s + at + options.stall_for_s,
            &mut [&mut firmware],
        )?;
        runtime.signal(libc::SIGCONT)?;
        let resumed_s = epoch.elapsed().as_secs_f64();
        stall = Some((at, last_seq_before, events_before, resumed_s));
    }
    sleep_until(
        epoch,
        session_s + options.duration_s,
        &mut [&mut firmware, &mut runtime],
    )?;

    // Firmware first: it stops ticking and drains the answers in flight, then the runtime
    // gets everything the firmware sent and drains it. Each UDP receiver's kernel drops are
    // read while its socket is open and (nearly: the firmware's drain) nothing more comes.
    let firmware_drops = udp.as_ref().map_or(Ok(0), |u| drops(u.firmware))?;
    firmware.terminate(Duration::from_secs(10))?;
    if let Some(proxy) = &mut proxy {
        proxy.flush_and_stop(Direction::FirmwareToRuntime)?;
    }
    let runtime_drops = udp.as_ref().map_or(Ok(0), |u| drops(u.runtime))?;
    runtime.terminate(Duration::from_secs(10))?;
    if let Some(proxy) = &mut proxy {
        proxy.stop()?;
    }
    let load_after = load_average();
    let f2r = proxy
        .as_ref()
        .map(|p| p.stats(Direction::FirmwareToRuntime));
    let r2f = proxy
        .as_ref()
        .map(|p| p.stats(Direction::RuntimeToFirmware));

    let fw: FirmwareSummary = read_report(&firmware_summary, "firmware-host summary")?;
    let rt: ServeSummary = read_report(&runtime_summary, "dreamer-rt serve summary")?;
    let firmware_link = fw.frame_errors;
    let runtime_link = rt.frame_errors;

    let stall = stall.map(|(at, last_seq_before, events_before, resumed_s)| {
        let all = f2r.as_ref().map_or(&[][..], |s| &s.fault_events[..]);
        let (before, events) = all.split_at(events_before.min(all.len()));
        let already_safe = before.last().is_some_and(|e| e.active);
        let raised = events.iter().find(|e| e.active);
        let cleared = events
            .iter()
            .find(|e| !e.active && e.at_s >= resumed_s && (raised.is_some() || already_safe));
        let periods = match (raised, last_seq_before) {
            _ if already_safe => Some(0),
            (Some(f), Some(before)) => Some(f.seq.wrapping_sub(before)),
            _ => None,
        };
        StallReport {
            at_s: at,
            for_s: options.stall_for_s,
            last_seq_before,
            fault_seq: raised.map(|f| f.seq),
            periods_to_safe: periods,
            already_safe,
            max_missed: options.max_missed,
            safe_within_k: periods.is_some_and(|p| p <= u32::from(options.max_missed)),
            recovered: cleared.is_some(),
            recovery_s: cleared.map(|e| e.at_s - resumed_s),
        }
    });

    let loop_completed = fw.completed_episode_returns.clone();
    let loop_return = loop_completed.first().copied();
    let simulation_return = if options.compare_simulation {
        Some(simulation_return(options)?)
    } else {
        None
    };
    let relative_difference = match (loop_return, simulation_return) {
        (Some(l), Some(s)) if s != 0.0 => Some((l - s).abs() / s.abs()),
        _ => None,
    };

    let observations_sent = u64::from(fw.firmware.observations_sent);
    let deadline_misses = u64::from(fw.deadline_misses);
    Ok(HilReport {
        bundle: options.bundle.clone(),
        rt_priority: options.rt_priority,
        cpus: options.cpus,
        lock_memory: options.lock_memory,
        busy_poll: options.busy_poll,
        task,
        pixels,
        rate_hz,
        duration_s: options.duration_s,
        seed: options.seed,
        load_before,
        load_after,
        round_trip: fw.round_trip,
        round_trip_every_tick: fw.round_trip_every_tick,
        inference: rt.inference,
        period_jitter: fw.period_jitter,
        ticks: u64::from(fw.ticks),
        observations_sent,
        actions_applied: u64::from(fw.firmware.actions_applied),
        deadline_misses,
        deadline_miss_ratio: deadline_misses as f64 / observations_sent.max(1) as f64,
        command_success_rate: command_success_rate(
            u64::from(fw.firmware.actions_applied),
            deadline_misses,
        ),
        faults: u64::from(fw.faults),
        recoveries: u64::from(fw.recoveries),
        final_mode: fw.final_mode,
        firmware_link,
        runtime_link,
        relay: use_relay,
        injected_firmware_to_runtime: f2r.as_ref().map(|s| s.injected).unwrap_or_default(),
        injected_runtime_to_firmware: r2f.as_ref().map(|s| s.injected).unwrap_or_default(),
        reconcile_firmware_to_runtime: f2r
            .as_ref()
            .map(|s| reconcile(&s.ledger, &runtime_link, runtime_drops)),
        reconcile_runtime_to_firmware: r2f
            .as_ref()
            .map(|s| reconcile(&s.ledger, &firmware_link, firmware_drops)),
        stall,
        returns: ReturnComparison {
            loop_return,
            loop_completed,
            loop_partial: fw.episode_return,
            simulation_return,
            relative_difference,
        },
        proxy_firmware_to_runtime: f2r,
        proxy_runtime_to_firmware: r2f,
        firmware: fw,
        runtime: rt,
        echo_floor,
        link: options.link,
    })
}

/// The export tests' checkpoint writer, for the tests below.
#[cfg(test)]
#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    /// An exported state bundle in `dir` whose manifest has `from` replaced by `to`.
    fn bundle_with(dir: &Path, from: &str, to: &str) -> PathBuf {
        let spec = export_fixtures::Spec::state();
        let ckpt = export_fixtures::write_checkpoint(&dir.join("ckpt"), &spec, 1);
        let out = dir.join("bundle");
        let options = dreamer_export::ExportOptions {
            verify: false,
            ..Default::default()
        };
        dreamer_export::export(&ckpt, &out, &options).unwrap();
        let path = out.join(dreamer_bundle::MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        out
    }

    #[test]
    fn a_bad_manifest_value_is_named_before_any_child_starts() {
        let tmp = tempfile::tempdir().unwrap();
        // The value that made the firmware child die on `--rate-hz -1`.
        let bundle = bundle_with(
            tmp.path(),
            "\"control_period_s\": ",
            "\"control_period_s\": -1, \"was\": ",
        );
        let missing = tmp.path().join("no-such-binary");
        let options = HilOptions::new(bundle, missing.clone(), missing);
        let e = format!("{:#}", run(&options).unwrap_err());
        // Before, the bundle was read unchecked and the run went on to look for binaries.
        assert!(e.contains("task.control_period_s is -1"), "{e}");
    }

    #[test]
    fn a_python_environment_bundle_is_refused_before_any_child_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = export_fixtures::Spec::state();
        let task = "gym:Pendulum-v1";
        let record = export_fixtures::env_record(&spec, task);
        let ckpt = export_fixtures::write_bridged_checkpoint(
            &tmp.path().join("ckpt"),
            &spec,
            1,
            task,
            Some(record),
        );
        let bundle = tmp.path().join("bundle");
        let options = dreamer_export::ExportOptions {
            verify: false,
            ..Default::default()
        };
        dreamer_export::export(&ckpt, &bundle, &options).unwrap();
        let missing = tmp.path().join("no-such-binary");
        let options = HilOptions::new(bundle, missing.clone(), missing);
        let e = format!("{:#}", run(&options).unwrap_err());
        assert!(
            e.contains("task `gym:Pendulum-v1` is a Python environment (gymnasium `Pendulum-v1`)"),
            "{e}"
        );
    }

    #[test]
    fn the_command_success_rate_counts_every_session_tick() {
        assert_eq!(command_success_rate(0, 0), 0.0);
        assert_eq!(command_success_rate(999, 1), 0.999);
        assert_eq!(command_success_rate(0, 20), 0.0);
    }

    #[test]
    fn trusted_keys_given_to_serve_are_read() {
        assert!(trusted_keys(&["--pin-cpu=1".into()]).unwrap().is_empty());
        let e = format!(
            "{:#}",
            trusted_keys(&["--trusted-key".into(), "/nonexistent.pub".into()]).unwrap_err()
        );
        assert!(e.contains("/nonexistent.pub"), "{e}");
    }
}
