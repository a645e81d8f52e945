//! Where the ONNX Runtime shared library is looked for (the order is in the crate docs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::OrtLibError;

/// Environment variable naming the library file.
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";
/// File name looked for next to the executable.
pub const LIB_FILE: &str = "libonnxruntime.so";
/// Library path baked in at build time, if any.
pub const BUILD_DEFAULT: Option<&str> = option_env!("DREAMER_ORT_DYLIB");

/// One place the library was looked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Where this path came from (`--ort-lib`, `ORT_DYLIB_PATH`, ...).
    pub source: &'static str,
    pub path: PathBuf,
}

/// The places to look, in order.
pub fn candidates(explicit: Option<&Path>) -> Vec<Candidate> {
    if let Some(path) = explicit {
        return vec![Candidate {
            source: "--ort-lib",
            path: path.to_path_buf(),
        }];
    }
    if let Some(path) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        return vec![Candidate {
            source: ENV_VAR,
            path: PathBuf::from(path),
        }];
    }
    let mut list = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        list.push(Candidate {
            source: "next to the executable",
            path: dir.join(LIB_FILE),
        });
    }
    if let Some(path) = BUILD_DEFAULT {
        list.push(Candidate {
            source: "build-time DREAMER_ORT_DYLIB",
            path: PathBuf::from(path),
        });
    }
    list
}

/// The first candidate that is a file, or the error listing everything tried.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, OrtLibError> {
    let tried = candidates(explicit);
    match tried.iter().find(|c| c.path.is_file()) {
        Some(found) => Ok(std::path::absolute(&found.path).unwrap_or_else(|_| found.path.clone())),
        None => Err(OrtLibError::NotFound { tried }),
    }
}

pub(crate) fn not_found_message(tried: &[Candidate]) -> String {
    let mut text = String::from("ONNX Runtime library not found; tried:");
    for candidate in tried {
        let _ = write!(
            text,
            "\n  {} ({}): {}",
            candidate.path.display(),
            candidate.source,
            if candidate.path.exists() {
                "not a file"
            } else {
                "missing"
            }
        );
    }
    text.push_str(
        "\nfix: run scripts/fetch-deps (downloads ONNX Runtime into .deps/), or point --ort-lib / \
         ORT_DYLIB_PATH at a libonnxruntime.so (on Jetson, the one built for JetPack, see docs/jetson.md)",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_authoritative_and_reported() {
        let missing = Path::new("/nonexistent/dir/libonnxruntime.so");
        let err = resolve(Some(missing)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/dir/libonnxruntime.so"),
            "{text}"
        );
        assert!(text.contains("--ort-lib"), "{text}");
        assert!(text.contains("scripts/fetch-deps"), "{text}");
    }

    #[test]
    fn build_default_is_the_last_candidate() {
        // An explicit path or ORT_DYLIB_PATH would cut the list short; neither is given here
        // unless the caller's environment sets the variable.
        if std::env::var_os(ENV_VAR).is_some_and(|v| !v.is_empty()) {
            return;
        }
        let list = candidates(None);
        assert_eq!(list[0].source, "next to the executable");
        if let Some(path) = BUILD_DEFAULT {
            assert_eq!(list.last().unwrap().path, PathBuf::from(path));
        }
    }
}
