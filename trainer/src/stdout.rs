//! Printing to stdout when stdout may be gone: `dreamer train | head` closes the pipe after
//! ten lines and `>/dev/full` refuses every write. `println!` panics on either; a training
//! run must instead keep training (its logs and checkpoints are files), and the short
//! commands must end without a panic message.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout has failed: nothing more is tried.
static GONE: AtomicBool = AtomicBool::new(false);

/// A failed write to stdout, kept apart from other I/O errors so that `main` can end
/// quietly on a closed pipe instead of reporting it as a failure of the command.
#[derive(Debug, thiserror::Error)]
#[error("writing to stdout: {0}")]
pub struct StdoutError(#[source] pub io::Error);

impl StdoutError {
    /// The reader went away (`| head`, `| true`): not the command's failure.
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Write one line to stdout and flush it (so that a failure shows here, not at exit).
pub fn print_line(line: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(line)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .map_err(StdoutError)
}

/// Write one line to stdout for as long as stdout takes it. The first failure is reported
/// once on stderr and every later line is dropped: the caller (a training run) carries on.
pub fn print_or_drop(line: fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = print_line(line) {
        GONE.store(true, Ordering::Relaxed);
        // stderr may be gone as well; then there is nobody left to tell.
        let _ = writeln!(
            io::stderr(),
            "warning: {e}; carrying on without printing to stdout (metrics.jsonl has every record)"
        );
    }
}
