//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! Search order: an explicit path (the `--ort-lib` flag or [`crate::AgentOptions::ort_lib`]),
//! the `ORT_DYLIB_PATH` environment variable, a `libonnxruntime.so` next to the executable,
//! then the path baked in at build time from `DREAMER_ORT_DYLIB` (set by the workspace's
//! `.cargo/config.toml` to the library `scripts/fetch-deps` downloads).

use std::ffi::CStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

/// Environment variable naming the library file.
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";
/// File name looked for next to the executable.
pub const LIB_FILE: &str = "libonnxruntime.so";
/// Library path baked in at build time, if any.
pub const BUILD_DEFAULT: Option<&str> = option_env!("DREAMER_ORT_DYLIB");

#[derive(Debug, thiserror::Error)]
pub enum OrtLibError {
    #[error("{}", not_found_message(.tried))]
    NotFound { tried: Vec<Candidate> },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
}

fn not_found_message(tried: &[Candidate]) -> String {
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

/// One place the library was looked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Where this path came from (`--ort-lib`, `ORT_DYLIB_PATH`, ...).
    pub source: &'static str,
    pub path: PathBuf,
}

/// The places to look, in order. An explicit path or a set environment variable is
/// authoritative: when given, later places are not consulted.
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

/// The loaded library and the process-wide ONNX Runtime environment.
#[derive(Debug)]
pub struct OrtRuntime {
    pub path: PathBuf,
    /// ONNX Runtime's version string, e.g. `1.31.1`.
    pub version: String,
    /// ONNX Runtime's build description (branch, commit, flags).
    pub build_info: String,
    pub(crate) env: Environment,
}

impl OrtRuntime {
    /// The process-wide environment, for other ONNX Runtime users in the same process (the
    /// exporter's verification, for one).
    pub fn environment(&self) -> &Environment {
        &self.env
    }
}

static LOADED: Mutex<Option<&'static OrtRuntime>> = Mutex::new(None);

/// Loads the library and creates the environment on first use; later calls return the same
/// runtime (ONNX Runtime allows one environment per process), whatever path they ask for.
pub fn load(explicit: Option<&Path>) -> Result<&'static OrtRuntime, OrtLibError> {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(runtime) = *loaded {
        return Ok(runtime);
    }
    let path = resolve(explicit)?;
    let builder = ort::init_from(&path).map_err(|e| OrtLibError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("dreamer-runtime")
        .with_telemetry(false)
        .build()
        .map_err(|e| OrtLibError::Environment(e.to_string()))?;
    let build_info = ort::info().to_string();
    let runtime: &'static OrtRuntime = Box::leak(Box::new(OrtRuntime {
        version: library_version(&path)
            .or_else(|| version_from_build_info(&build_info))
            .unwrap_or_else(|| "unknown".to_string()),
        build_info,
        path,
        env,
    }));
    *loaded = Some(runtime);
    Ok(runtime)
}

/// The library's own version string (`OrtGetApiBase()->GetVersionString()`), read from the
/// already loaded library.
fn library_version(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to a library already loaded (by ort, above);
    // the symbol is ONNX Runtime's C entry point with the declared signature, and the version
    // string is static inside the library, which stays loaded for the process's lifetime.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if symbol.is_null() {
            None
        } else {
            let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase =
                std::mem::transmute(symbol);
            let base = get_base();
            (!base.is_null()).then(|| {
                CStr::from_ptr(((*base).GetVersionString)())
                    .to_string_lossy()
                    .into_owned()
            })
        };
        libc::dlclose(handle);
        version
    }
}

/// Adopts an environment created elsewhere in this process from the library at `path`
/// (ONNX Runtime allows one environment per process). Returns false, changing nothing, when
/// this crate already holds one.
pub fn use_environment(env: Environment, path: &Path) -> bool {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if loaded.is_some() {
        return false;
    }
    let build_info = ort::info().to_string();
    *loaded = Some(Box::leak(Box::new(OrtRuntime {
        version: library_version(path)
            .or_else(|| version_from_build_info(&build_info))
            .unwrap_or_else(|| "unknown".to_string()),
        build_info,
        path: path.to_path_buf(),
        env,
    })));
    true
}

/// `git-branch=rel-1.31.1` in the build string carries the release, when built from a branch.
fn version_from_build_info(info: &str) -> Option<String> {
    let start = info.find("rel-")? + 4;
    let rest = &info[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

/// Names of the execution providers the loaded library was built with.
pub fn available_providers() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the out-pointers are valid; the list is released below with its own length.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut count) };
    crate::graph::status_to_result(status)?;
    let names = (0..count.max(0) as usize)
        .map(|i| {
            // SAFETY: ONNX Runtime returned `count` valid NUL-terminated strings.
            unsafe { CStr::from_ptr(*list.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releasing exactly what GetAvailableProviders returned.
    let status = unsafe { (api.ReleaseAvailableProviders)(list, count) };
    crate::graph::status_to_result(status)?;
    Ok(names)
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
    fn version_is_parsed_from_build_info() {
        assert_eq!(
            version_from_build_info("ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc"),
            Some("1.31.1".to_string())
        );
        assert_eq!(version_from_build_info("no branch here"), None);
    }
}
