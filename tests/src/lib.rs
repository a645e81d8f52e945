//! Integration tests across the workspace live in `tests/`; this library holds what they share.

use std::path::{Path, PathBuf};

/// The repository root (this crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}
