//! Execution providers: which hardware runs each graph, and what happens when it cannot.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ort::session::builder::SessionBuilder;

/// The execution provider a graph should run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's CPU provider (always present).
    #[default]
    Cpu,
    /// NVIDIA CUDA (needs the `cuda` cargo feature and a CUDA build of ONNX Runtime).
    Cuda,
    /// NVIDIA TensorRT, with CUDA for the nodes TensorRT does not take (needs the `tensorrt`
    /// cargo feature and a TensorRT build of ONNX Runtime).
    TensorRt,
}

impl Provider {
    /// ONNX Runtime's name for the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::TensorRt => "TensorrtExecutionProvider",
        }
    }

    /// Whether this binary was compiled with the provider's cargo feature.
    pub fn compiled_in(self) -> bool {
        match self {
            Provider::Cpu => true,
            Provider::Cuda => cfg!(feature = "cuda"),
            Provider::TensorRt => cfg!(feature = "tensorrt"),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        })
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" | "trt" => Ok(Provider::TensorRt),
            other => Err(format!(
                "unknown execution provider `{other}` (expected cpu, cuda or tensorrt)"
            )),
        }
    }
}

/// Settings of the GPU providers; ignored on CPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceOptions {
    /// CUDA device ordinal.
    pub device_id: i32,
    /// Let TensorRT build fp16 kernels (inputs and outputs stay float32).
    pub fp16: bool,
    /// Folder where TensorRT keeps built engines, so later starts skip the build (minutes on
    /// a Jetson). Created if missing.
    pub trt_engine_cache: Option<PathBuf>,
    /// Folder for TensorRT's kernel timing cache, shared across models. Created if missing.
    pub trt_timing_cache: Option<PathBuf>,
}

/// Which provider a graph ended up on, and why when it is not the one requested.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPlacement {
    /// Graph role (`policy_step`, `encoder`, ...).
    pub graph: String,
    pub requested: Provider,
    /// Providers registered with the session, in priority order; ONNX Runtime's CPU provider
    /// is always the last resort for nodes the others do not take.
    pub registered: Vec<&'static str>,
    /// Why the requested provider is not running the graph (only when fallback was allowed).
    pub fallback_reason: Option<String>,
    /// ONNX Runtime may not place nodes on the CPU: set for a GPU provider without
    /// fallback, so a graph the provider cannot run entirely is refused at load time.
    pub cpu_fallback_disabled: bool,
}

impl GraphPlacement {
    /// The provider that runs the graph's nodes first.
    pub fn primary(&self) -> &'static str {
        self.registered
            .first()
            .copied()
            .unwrap_or(Provider::Cpu.ort_name())
    }
}

impl fmt::Display for GraphPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.graph, self.registered.join(" > "))?;
        if self.cpu_fallback_disabled {
            write!(f, " (no CPU fallback)")?;
        }
        if let Some(reason) = &self.fallback_reason {
            write!(f, " (requested {}, fell back: {reason})", self.requested)?;
        }
        Ok(())
    }
}

/// Registers the requested provider on a session builder. A provider that cannot be
/// registered is an error unless `allow_fallback`, in which case the graph runs on CPU and
/// the placement says why.
pub(crate) fn register(
    builder: &mut SessionBuilder,
    graph: &str,
    requested: Provider,
    device: &DeviceOptions,
    allow_fallback: bool,
) -> Result<GraphPlacement, String> {
    let mut placement = GraphPlacement {
        graph: graph.to_string(),
        requested,
        registered: Vec::new(),
        fallback_reason: None,
        cpu_fallback_disabled: false,
    };
    let outcome = match requested {
        Provider::Cpu => Ok(Vec::new()),
        Provider::Cuda | Provider::TensorRt if !requested.compiled_in() => Err(format!(
            "this binary was built without the `{requested}` cargo feature (rebuild with \
             `--features {requested}`)"
        )),
        Provider::Cuda | Provider::TensorRt => register_gpu(builder, requested, device),
    };
    match outcome {
        Ok(names) => placement.registered = names,
        Err(reason) if allow_fallback => placement.fallback_reason = Some(reason),
        Err(reason) => return Err(reason),
    }
    // The session builder applies `cpu_fallback_disabled`.
    if requested != Provider::Cpu && !allow_fallback {
        placement.cpu_fallback_disabled = true;
    } else {
        placement.registered.push(Provider::Cpu.ort_name());
    }
    Ok(placement)
}

#[cfg(feature = "cuda")]
fn register_gpu(
    builder: &mut SessionBuilder,
    requested: Provider,
    device: &DeviceOptions,
) -> Result<Vec<&'static str>, String> {
    use ort::ep;
    let mut dispatches = Vec::new();
    #[cfg(feature = "tensorrt")]
    if requested == Provider::TensorRt {
        let mut trt = ep::TensorRT::default()
            .with_device_id(device.device_id)
            .with_fp16(device.fp16);
        if let Some(dir) = &device.trt_engine_cache {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create engine cache {}: {e}", dir.display()))?;
            trt = trt
                .with_engine_cache(true)
                .with_engine_cache_path(dir.display().to_string());
        }
        if let Some(dir) = &device.trt_timing_cache {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create timing cache {}: {e}", dir.display()))?;
            trt = trt
                .with_timing_cache(true)
                .with_timing_cache_path(dir.display().to_string());
        }
        dispatches.push(trt.build().error_on_failure());
    }
    let _ = requested;
    dispatches.push(
        ep::CUDA::default()
            .with_device_id(device.device_id)
            .build()
            .error_on_failure(),
    );
    let mut names = Vec::new();
    for dispatch in &dispatches {
        dispatch
            .register(builder)
            .map_err(|e| format!("{} could not be registered: {e}", dispatch.name()))?;
        names.push(dispatch.name());
    }
    Ok(names)
}

#[cfg(not(feature = "cuda"))]
fn register_gpu(
    _builder: &mut SessionBuilder,
    requested: Provider,
    _device: &DeviceOptions,
) -> Result<Vec<&'static str>, String> {
    Err(format!(
        "this binary was built without the `{requested}` cargo feature"
    ))
}
