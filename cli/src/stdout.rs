//! Printing when stdout may be gone: `dreamer train | head` closes the pipe after ten lines
//! and `>/dev/full` refuses every write. `println!` panics on either (and `eprintln!` on a
//! gone stderr), so the binaries print through here instead:
//!
//! - commands that only print use [`say!`] ([`print_line`]): the failure is returned, and
//!   `main` ends quietly on a closed pipe ([`closed_pipe_is_success`]) or reports the rest;
//! - processes that must finish their work (a training run, `serve`, a report file) print
//!   best-effort ([`outln!`] / [`print_or_drop`], or [`print_or_warn`] to say so at once on
//!   stderr): the first failure is remembered, later lines are dropped, and [`finish`]
//!   reports it after the work is done;
//! - log lines on stderr go through [`errln!`] ([`eprint_line`]), which never panics.

use std::error::Error;
use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

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

/// Writes one line to stdout and flushes it, so that a failure shows here, not at exit.
pub fn print_line(line: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// `println!` that returns a [`StdoutError`] from the enclosing function (through `?`)
/// instead of panicking when stdout is closed or full.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout::print_line(::std::format_args!($($arg)*))?
    };
}

/// For `main`: a command that failed only because its reader went away (`| head`)
/// succeeded, as other Unix tools do; what it did not read it did not want. Any other
/// error, a full stdout included, is kept.
pub fn closed_pipe_is_success<E: AsRef<dyn Error>>(result: Result<(), E>) -> Result<(), E> {
    match result {
        Err(e) if is_closed_pipe(e.as_ref()) => Ok(()),
        other => other,
    }
}

/// Whether `error` (or one of its causes) is a [`StdoutError`] of a closed pipe.
fn is_closed_pipe(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<StdoutError>()
            .is_some_and(StdoutError::is_closed_pipe)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The first failed write of the best-effort printing: nothing more is tried after it.
static LOST: OnceLock<io::Error> = OnceLock::new();

/// Prints one line if stdout still takes it. The first failure is kept (and returned, to
/// this call only) and every later line dropped.
fn print_unless_lost(line: fmt::Arguments<'_>) -> Option<&'static io::Error> {
    if LOST.get().is_some() {
        return None;
    }
    let StdoutError(e) = print_line(line).err()?;
    LOST.set(e).ok()?;
    LOST.get()
}

/// Best-effort `println!` for a process that must finish its work whatever happens to
/// stdout (`serve`, `run`, a report already written to a file): a failure is remembered
/// quietly for [`finish`] to report once the work is done.
pub fn print_or_drop(line: fmt::Arguments<'_>) {
    print_unless_lost(line);
}

/// Best-effort `println!` for a long process that carries on without stdout and has no
/// end-of-run report of it (a training run): the first failure is said at once on stderr,
/// with `elsewhere` (where the output can still be found), and later lines are dropped.
pub fn print_or_warn(line: fmt::Arguments<'_>, elsewhere: &str) {
    if let Some(e) = print_unless_lost(line) {
        eprint_line(format_args!(
            "warning: writing to stdout: {e}; carrying on without printing to stdout ({elsewhere})"
        ));
    }
}

/// [`print_or_drop`] with `println!`'s syntax.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::print_or_drop(::std::format_args!($($arg)*))
    };
}

/// Output of the best-effort printing was lost on a full device or another failure.
#[derive(Debug)]
pub struct OutputLost {
    /// What was not written ("the report"), if the caller names it.
    pub what: Option<&'static str>,
    pub error: &'static io::Error,
}

impl fmt::Display for OutputLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.what {
            Some(what) => write!(f, "cannot write {what} to stdout: {}", self.error),
            None => write!(f, "cannot write to stdout: {}", self.error),
        }
    }
}

impl Error for OutputLost {}

/// The end of a run that printed best-effort: flushes stdout, then reports the first
/// failure as an error (the command's exit is non-zero: its output is lost) after the
/// work is done. A closed pipe is no failure: the reader took what it wanted
/// (`dreamer-rt serve ... | head`), as for other Unix tools.
pub fn finish(what: Option<&'static str>) -> Result<(), OutputLost> {
    if LOST.get().is_none()
        && let Err(e) = io::stdout().lock().flush()
    {
        let _ = LOST.set(e);
    }
    match LOST.get() {
        Some(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(OutputLost { what, error }),
        _ => Ok(()),
    }
}

/// Writes one line to stderr, best-effort: a closed or full stderr must neither panic (as
/// `eprintln!` does) nor stop the work, such as a control loop or the relay of a child's
/// stderr (which would then block the child). There is nobody left to tell of a failure.
pub fn eprint_line(line: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// `eprintln!` that never panics ([`eprint_line`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::stdout::eprint_line(::std::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: io::ErrorKind) -> Result<(), Box<dyn Error>> {
        Err(Box::new(StdoutError(io::Error::from(kind))))
    }

    #[test]
    fn only_a_closed_pipe_is_success() {
        assert!(closed_pipe_is_success(failed(io::ErrorKind::BrokenPipe)).is_ok());
        assert!(closed_pipe_is_success(failed(io::ErrorKind::StorageFull)).is_err());
        // A broken pipe elsewhere (a child's pipe) is the command's failure.
        let other: Result<(), Box<dyn Error>> =
            Err(Box::new(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(closed_pipe_is_success(other).is_err());
    }

    #[test]
    fn lost_output_names_what_was_lost() {
        static ERROR: OnceLock<io::Error> = OnceLock::new();
        let error = ERROR.get_or_init(|| io::Error::other("No space left"));
        let named = OutputLost {
            what: Some("the report"),
            error,
        };
        assert_eq!(
            named.to_string(),
            "cannot write the report to stdout: No space left"
        );
        let unnamed = OutputLost { what: None, error };
        assert_eq!(unnamed.to_string(), "cannot write to stdout: No space left");
    }
}
