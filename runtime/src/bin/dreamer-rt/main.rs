//! `dreamer-rt`: run, benchmark, serve, describe and diagnose a Dreamer policy bundle on the
//! device. A thin layer over the `dreamer_runtime` library: one module per subcommand, the
//! options several of them share in their own modules.

mod agent_args;
mod bench;
mod broker_args;
mod doctor;
mod follow;
mod info;
mod output;
mod realtime_args;
mod recording;
#[cfg_attr(not(feature = "sim"), path = "run_without_sim.rs")]
mod run;
mod serve;
mod stop;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    #[cfg_attr(
        feature = "sim",
        doc = "Closed loop against a built-in task at a fixed rate; prints returns and latency."
    )]
    #[cfg_attr(
        not(feature = "sim"),
        doc = "Absent from this build: the closed loop against a built-in task needs the `sim` feature."
    )]
    Run(Box<run::RunArgs>),
    /// Latency percentiles per graph, for the agent's step, and for a bare session.run.
    Bench(bench::BenchArgs),
    /// The bundle's manifest in human terms (checks file hashes too).
    Info(info::InfoArgs),
    /// Serves a microcontroller over a serial port, a pty or UDP: handshake, then one action
    /// per observation until SIGINT/SIGTERM; prints a JSON summary however it ends. Records
    /// and uploads the episodes a firmware that measures rewards reports (--record, --upload).
    Serve(Box<serve::ServeArgs>),
    /// Checks the ONNX Runtime library, providers, CPUs and optionally a bundle.
    Doctor(doctor::DoctorArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `info`, `doctor` and `bench` only print: they exit quietly when the output pipe
    // closes (`dreamer-rt info b | head`), like other Unix tools. `run` and `serve` keep
    // Rust's default (SIGPIPE ignored): they must finish their work and write their
    // `--summary` file, so a closed stdout only ends their printing (dreamer_cli::outln!).
    if matches!(
        cli.command,
        Command::Info(_) | Command::Doctor(_) | Command::Bench(_)
    ) {
        // SAFETY: sets a signal disposition to its default before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let outcome = match cli.command {
        Command::Run(args) => run::run(*args, cli.ort_lib),
        Command::Bench(args) => bench::bench(args, cli.ort_lib),
        Command::Info(args) => info::info(&args.bundle),
        Command::Serve(args) => serve::serve(*args, cli.ort_lib),
        Command::Doctor(args) => doctor::doctor(args.bundle.as_deref(), cli.ort_lib),
    };
    // The command's own error first; a lost output is reported when nothing else failed.
    outcome?;
    Ok(dreamer_cli::stdout::finish(None)?)
}
