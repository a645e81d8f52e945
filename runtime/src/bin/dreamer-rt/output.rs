//! Lines several subcommands print alike, and stdout itself: every line goes through
//! [`outln!`], which never panics (as `println!` does on a closed pipe or a full device).
//! The first failure is kept and the rest of the output skipped, so a subcommand that must
//! finish its work (`serve`, `run`: the plant, the summary file) keeps going; `main` then
//! reports the failure ([`finish`]).

use std::io::{self, Write};
use std::sync::OnceLock;

use dreamer_runtime::{Agent, LatencySummary};

/// `println!` that records a failure instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// The first error writing stdout.
static FAILED: OnceLock<io::Error> = OnceLock::new();

/// Writes one line to stdout, best-effort.
pub fn line(args: std::fmt::Arguments<'_>) {
    if FAILED.get().is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        let _ = FAILED.set(e);
    }
}

/// Flushes stdout; an error when any output was lost. A closed pipe is not one: the reader
/// took what it wanted (`dreamer-rt serve ... | head`), as for other Unix tools.
pub fn finish() -> anyhow::Result<()> {
    if FAILED.get().is_none()
        && let Err(e) = io::stdout().lock().flush()
    {
        let _ = FAILED.set(e);
    }
    match FAILED.get() {
        None => Ok(()),
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => anyhow::bail!("cannot write to stdout: {e}"),
    }
}

/// One line per graph: the execution providers registered for it.
pub fn print_placements(agent: &Agent) {
    for placement in agent.placements() {
        outln!("  provider  {placement}");
    }
}

/// One latency line under a label, the labels aligned.
pub fn print_latency(label: &str, summary: &LatencySummary) {
    outln!("  {label:<28} {summary}");
}
