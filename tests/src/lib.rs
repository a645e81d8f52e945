//! Integration tests across the workspace live in `tests/`; this library holds what they share.

use std::path::{Path, PathBuf};

/// The repository root (this crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

/// The ONNX Runtime library the build was configured with (`.cargo/config.toml`), or
/// `ORT_DYLIB_PATH` when set.
pub fn onnxruntime_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| option_env!("DREAMER_ORT_DYLIB").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join(".deps/onnxruntime/lib/libonnxruntime.so"))
}
