//! Writing files and folders so that a kill at any instant leaves either the old version or
//! the new one, never half of one, and so that the next process can tell which is which.
//!
//! # Names
//!
//! One scheme, fixed names (no process id, no random part), so that the process that comes
//! after a killed one finds what it left without globbing. For the final path `<dir>/<name>`:
//!
//! | name | what it is |
//! |---|---|
//! | `<dir>/.<name>.tmp` | being written; never promoted, removed by the next writer or [`recover`] |
//! | `<dir>/.<name>.new` | (folders) a complete, synced staged copy waiting to be swapped in |
//! | `<dir>/.<name>.old` | (folders) the previous copy, moved aside during the swap |
//!
//! A folder becomes `.<name>.new` only after every file in it and the folder itself are
//! synced, so the rename is what marks a staged copy complete: an incomplete one can only
//! ever be called `.tmp`. Fixed names assume one writer per final path at a time (as a run
//! folder, a bundle folder or an output file has).
//!
//! # File sequence ([`AtomicFile`], [`write_file`])
//!
//! write `.<name>.tmp`, fsync it, rename it to `<name>`, fsync `<dir>`.
//!
//! # Folder sequence ([`StagedDir`])
//!
//! 1. [`recover`] the final path, create `.<name>.tmp`, let the caller fill it;
//! 2. fsync every file in it, then every folder in it (itself last);
//! 3. rename `.<name>.tmp` -> `.<name>.new`, fsync `<dir>`;
//! 4. if `<name>` exists: rename `<name>` -> `.<name>.old`, fsync `<dir>`;
//! 5. rename `.<name>.new` -> `<name>`, fsync `<dir>`;
//! 6. remove `.<name>.old`, fsync `<dir>`.
//!
//! [`recover`] turns any state a kill can leave in that sequence into a single complete
//! `<name>` (rolling a complete `.new` forward), and [`complete_copy`] finds the complete
//! copy without changing anything, for readers.
//!
//! # Fault points (test-only)
//!
//! [`FAULT_ENV`] makes a process abort at a chosen step of these sequences, so that tests can
//! kill a writer at every step; see [`fault`]. Inert unless the variable is set.

mod dir;
pub mod fault;
mod file;
mod sync;

pub use dir::{Repair, StagedDir, complete_copy, recover};
pub use fault::FAULT_ENV;
pub use file::{AtomicFile, write_file};

use std::path::{Path, PathBuf};

/// An I/O step that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct PersistError {
    /// What was being done: "create", "write", "sync", "rename into place", "remove", ...
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PersistError {
    pub(crate) fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| PersistError {
            action,
            path,
            source,
        }
    }
}

/// The three fixed sibling names of `path`: (`.<name>.tmp`, `.<name>.new`, `.<name>.old`).
pub fn sibling_names(path: &Path) -> Result<(PathBuf, PathBuf, PathBuf), PersistError> {
    let name = path.file_name().ok_or_else(|| PersistError {
        action: "name a temporary file for",
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ),
    })?;
    let sibling = |suffix: &str| {
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(suffix);
        path.with_file_name(n)
    };
    Ok((sibling(".tmp"), sibling(".new"), sibling(".old")))
}

/// The folder `path` is in (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
