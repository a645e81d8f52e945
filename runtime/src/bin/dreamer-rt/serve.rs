//! `serve`: answers a microcontroller's observations over a serial port or pty until SIGINT
//! or SIGTERM, then prints the typed summary as JSON (and writes it with `--summary FILE`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use dreamer_runtime::serve::ServeOptions;
use dreamer_wire::report::write_report;

use crate::agent_args::{AgentArgs, load_agent};
use crate::realtime_args::RealtimeArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
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
    #[command(flatten)]
    realtime: RealtimeArgs,
    #[command(flatten)]
    agent: AgentArgs,
}

/// Set by SIGINT and SIGTERM: serving drains the port and returns its summary.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn serve(args: ServeArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let mut agent = load_agent(&args.bundle, args.agent.options(ort_lib))?;
    for note in &args.realtime.apply().notes {
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
    let text = write_report(&summary, args.summary.as_deref())?;
    println!("{text}");
    Ok(())
}
