//! Device selection. libtorch's CUDA support lives in `libtorch_cuda.so`, which the linker
//! drops (nothing references it directly); loading it at start-up, before tch is touched,
//! lets one binary run on CPU-only and CUDA machines.

use std::ffi::CString;
use std::path::PathBuf;

use tch::Device;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: use auto, cpu, cuda or cuda:N")]
    Unknown(String),
    #[error("device `{0}` requested but CUDA is not available (no libtorch_cuda.so or no GPU)")]
    NoCuda(String),
    #[error("device `{requested}`: this machine has {count} CUDA device(s)")]
    NoSuchGpu { requested: String, count: usize },
    #[error("--threads must be at least 1")]
    Threads,
}

/// The libtorch folder: `DREAMER_LIBTORCH_DIR` at run time, else the one built against.
pub fn libtorch_dir() -> PathBuf {
    std::env::var_os("DREAMER_LIBTORCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("DREAMER_LIBTORCH_DIR")))
}

/// What became of `<libtorch>/lib/libtorch_cuda.so` at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaLibrary {
    /// A CPU-only libtorch.
    Absent,
    Loaded(PathBuf),
    /// Present but not loadable (e.g. its CUDA libraries are missing); the loader's message.
    Failed(PathBuf, String),
}

/// Load `<libtorch>/lib/libtorch_cuda.so` when it exists.
pub fn load_cuda_library() -> CudaLibrary {
    let path = libtorch_dir().join("lib").join("libtorch_cuda.so");
    if !path.exists() {
        return CudaLibrary::Absent;
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return CudaLibrary::Failed(path, "path contains a NUL byte".into());
    };
    // SAFETY: dlopen with a valid NUL-terminated path; the handle is intentionally kept open
    // for the life of the process.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if !handle.is_null() {
        return CudaLibrary::Loaded(path);
    }
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by the loader.
    let message = unsafe { libc::dlerror() };
    let message = if message.is_null() {
        "unknown dlopen error".to_string()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
        unsafe { std::ffi::CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    CudaLibrary::Failed(path, message)
}

/// The version libtorch was composed with (`build-version` in its folder), if recorded.
pub fn libtorch_version() -> Option<String> {
    std::fs::read_to_string(libtorch_dir().join("build-version"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// Resolve `auto | cpu | cuda | cuda:N` and set the CPU thread count (default 1: the
/// networks are small, and OpenMP's spinning threads lose badly to any other load on the
/// cores). Call once, first.
pub fn select(spec: &str, threads: Option<usize>) -> Result<Device, DeviceError> {
    load_cuda_library();
    let threads = threads.unwrap_or(1);
    if threads == 0 {
        return Err(DeviceError::Threads);
    }
    tch::set_num_threads(threads as i32);
    let cuda = tch::Cuda::is_available();
    let count = if cuda {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    match spec {
        "auto" => Ok(if cuda { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| DeviceError::Unknown(spec.to_string()))?,
                None => return Err(DeviceError::Unknown(spec.to_string())),
            };
            if !cuda {
                return Err(DeviceError::NoCuda(spec.to_string()));
            }
            if index >= count {
                return Err(DeviceError::NoSuchGpu {
                    requested: spec.to_string(),
                    count,
                });
            }
            Ok(Device::Cuda(index))
        }
    }
}
