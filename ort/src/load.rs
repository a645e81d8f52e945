//! Loading the library and creating the process-wide environment, once.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::{OrtLibError, locate};

/// The loaded library and the process-wide ONNX Runtime environment.
#[derive(Debug)]
pub struct OrtRuntime {
    pub path: PathBuf,
    /// ONNX Runtime's version string, e.g. `1.31.1`.
    pub version: String,
    /// ONNX Runtime's build description (branch, commit, flags).
    pub build_info: String,
    env: Environment,
}

impl OrtRuntime {
    /// The process-wide environment (ONNX Runtime allows one per process).
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The version with the commit it was built from, e.g. `1.31.1 (commit 1a2b3c)`, as
    /// recorded in a bundle's verification report.
    pub fn version_and_commit(&self) -> String {
        let commit = self
            .build_info
            .split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|part| part.strip_prefix("git-commit-id="));
        match commit {
            Some(commit) => format!("{} (commit {commit})", self.version),
            None => self.version.clone(),
        }
    }
}

static LOADED: Mutex<Option<&'static OrtRuntime>> = Mutex::new(None);

/// Loads the library and creates the environment on first use; later calls return the same
/// runtime, whatever path they ask for.
pub fn load(explicit: Option<&Path>) -> Result<&'static OrtRuntime, OrtLibError> {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(runtime) = *loaded {
        return Ok(runtime);
    }
    let path = locate::resolve(explicit)?;
    let builder = ort::init_from(&path).map_err(|e| OrtLibError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("dreamer")
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

/// `git-branch=rel-1.31.1` in the build string carries the release, when built from a branch.
fn version_from_build_info(info: &str) -> Option<String> {
    let start = info.find("rel-")? + 4;
    let rest = &info[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_parsed_from_build_info() {
        assert_eq!(
            version_from_build_info("ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc"),
            Some("1.31.1".to_string())
        );
        assert_eq!(version_from_build_info("no branch here"), None);
    }
}
