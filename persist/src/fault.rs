//! Test-only fault points: abort the process at a chosen step of a write sequence, as a kill
//! would, so that tests can check what every intermediate state recovers to.
//!
//! `DREAMER_FAULT_POINT=<name>:<n>` aborts (`std::process::abort`, no destructors, nothing
//! cleaned up) when the `n`-th step (from 1) whose final path is called `<name>` has been
//! done, counted over the whole process. `<name>` is the last component of the final path,
//! e.g. `checkpoint:12` or `metrics.jsonl:1`. The steps:
//!
//! - a file ([`crate::AtomicFile`]): 1 after `.<name>.tmp` is written and synced, 2 after
//!   the rename into place and the sync of the folder;
//! - a folder ([`crate::StagedDir`]): one step after each staged file is synced (in path
//!   order), one after the staged folders are synced, one after `.tmp` -> `.new`, one after
//!   `<name>` -> `.old` (only when there was a `<name>`), one after `.new` -> `<name>`, one
//!   after `.old` is removed (only when there was one).
//!
//! The variable is read once per process; unset (always outside tests), every call is a
//! load of a cached `None`. A value that does not parse is reported once on stderr and
//! ignored.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the fault point.
pub const FAULT_ENV: &str = "DREAMER_FAULT_POINT";

/// (final name, step) from [`FAULT_ENV`].
fn armed() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let value = std::env::var(FAULT_ENV).ok()?;
        let parsed = parse(&value);
        if parsed.is_none() {
            let _ = writeln!(
                std::io::stderr(),
                "warning: {FAULT_ENV}={value:?} is not <name>:<step> (step from 1); ignored"
            );
        }
        parsed
    })
    .as_ref()
}

/// `<name>:<n>` with n >= 1.
pub fn parse(value: &str) -> Option<(String, u64)> {
    let (name, step) = value.rsplit_once(':')?;
    let step: u64 = step.parse().ok()?;
    (!name.is_empty() && step >= 1).then(|| (name.to_string(), step))
}

/// One step of a write sequence to `target` is done: abort if it is the armed one.
pub(crate) fn step(target: &Path) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some((name, at)) = armed() else {
        return;
    };
    if target.file_name().is_none_or(|n| n != name.as_str()) {
        return;
    }
    if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *at {
        let _ = writeln!(
            std::io::stderr(),
            "{FAULT_ENV}: aborting at step {at} of {}",
            target.display()
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn the_variable_names_a_final_path_and_a_step() {
        assert_eq!(parse("checkpoint:3"), Some(("checkpoint".into(), 3)));
        // The name may itself hold colons; the step is after the last one.
        assert_eq!(parse("a:b:12"), Some(("a:b".into(), 12)));
        for bad in [
            "checkpoint",
            "checkpoint:0",
            ":3",
            "checkpoint:-1",
            "checkpoint:x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
