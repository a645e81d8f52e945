//! One ONNX graph with its input and output tensors allocated once and bound for every run.
//!
//! Runs go straight to ONNX Runtime's C `Run` with pre-built name arrays and pre-allocated
//! output values, so a run makes no Rust heap allocation: the safe `Session::run` path
//! collects names and wraps every output in a new value on each call.

use std::ffi::{CString, c_char};
use std::ptr;

use dreamer_bundle::{Bundle, DType, GraphInfo, TensorInfo};
use ort::AsPointer;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::sys::{OrtApi, OrtValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::LoadError;
use crate::options::AgentOptions;
use crate::provider::{self, GraphPlacement};

/// Element type of a bound tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    U8,
}

/// A tensor owned by ONNX Runtime's value with a stable pointer to its CPU data.
struct Buffer {
    info: TensorInfo,
    elem: Elem,
    value: DynValue,
    data: *mut u8,
    /// Number of elements.
    len: usize,
}

impl Buffer {
    fn new(graph: &str, info: &TensorInfo) -> Result<Self, LoadError> {
        let bad = |what: String| LoadError::Manifest {
            graph: graph.to_string(),
            message: format!("tensor `{}`: {what}", info.name),
        };
        if info.shape.is_empty() || info.shape.iter().any(|&d| d <= 0) {
            return Err(bad(format!(
                "shape {:?} is not static and positive",
                info.shape
            )));
        }
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        let len = shape.iter().product();
        let ort_err = |e: ort::Error| bad(format!("cannot allocate: {e}"));
        let (elem, value, data) = match info.dtype {
            DType::Float32 => {
                let mut tensor =
                    Tensor::<f32>::from_array((shape, vec![0.0f32; len])).map_err(ort_err)?;
                let data = tensor.data_ptr_mut().cast::<u8>();
                (Elem::F32, tensor.into_dyn(), data)
            }
            DType::Uint8 => {
                let mut tensor =
                    Tensor::<u8>::from_array((shape, vec![0u8; len])).map_err(ort_err)?;
                let data = tensor.data_ptr_mut().cast::<u8>();
                (Elem::U8, tensor.into_dyn(), data)
            }
            DType::Float16 => {
                return Err(bad(
                    "float16 inputs and outputs are not supported; export with float32 I/O \
                     (float16 weights inside the graph are fine)"
                        .to_string(),
                ));
            }
        };
        Ok(Buffer {
            info: info.clone(),
            elem,
            value,
            data,
            len,
        })
    }

    fn f32(&self) -> &[f32] {
        assert_eq!(
            self.elem,
            Elem::F32,
            "tensor `{}` is not float32",
            self.info.name
        );
        // SAFETY: `data` points at `len` f32 owned by `value`, which lives as long as self.
        unsafe { std::slice::from_raw_parts(self.data.cast::<f32>(), self.len) }
    }

    fn f32_mut(&mut self) -> &mut [f32] {
        assert_eq!(
            self.elem,
            Elem::F32,
            "tensor `{}` is not float32",
            self.info.name
        );
        // SAFETY: as above; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.data.cast::<f32>(), self.len) }
    }

    fn u8_mut(&mut self) -> &mut [u8] {
        assert_eq!(
            self.elem,
            Elem::U8,
            "tensor `{}` is not uint8",
            self.info.name
        );
        // SAFETY: `data` points at `len` bytes owned by `value`.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

/// A session plus its bound tensors.
pub(crate) struct GraphRunner {
    pub role: String,
    session: Session,
    api: &'static OrtApi,
    inputs: Vec<Buffer>,
    outputs: Vec<Buffer>,
    // The name strings the pointers below point into.
    _names: Vec<CString>,
    input_name_ptrs: Vec<*const c_char>,
    output_name_ptrs: Vec<*const c_char>,
    input_value_ptrs: Vec<*const OrtValue>,
    output_value_ptrs: Vec<*mut OrtValue>,
    pub placement: GraphPlacement,
}

// SAFETY: the raw pointers point into values and strings owned by the runner itself, and the
// session is Send; nothing is shared with another thread.
unsafe impl Send for GraphRunner {}

impl std::fmt::Debug for GraphRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphRunner")
            .field("role", &self.role)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl GraphRunner {
    /// Creates the session for `role` and allocates its tensors from the manifest, checking
    /// them against what the ONNX file declares. The session is built from the bytes that
    /// [`Bundle::open`] read once and checked against their sha256: the file is not read again.
    pub fn open(bundle: &Bundle, role: &str, options: &AgentOptions) -> Result<Self, LoadError> {
        let info: &GraphInfo = bundle.manifest.graph(role)?;
        let runtime = dreamer_ort::load(options.ort_lib.as_deref())?;
        let file = bundle.dir.join(&info.file);
        let model = bundle.graph_bytes(role)?;
        let session_err = |message: String| LoadError::Session {
            graph: role.to_string(),
            file: file.clone(),
            message,
        };
        let ort_err = |e: ort::Error| session_err(e.to_string());
        // All optimisations, layout ones included: the blocked (NCHWc) convolutions they
        // enable halve the pixel encoder's time on x86.
        let mut builder = Session::builder(runtime.environment())
            .map_err(ort_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| ort_err(e.into()))?
            .with_intra_threads(options.intra_threads.max(1))
            .map_err(|e| ort_err(e.into()))?
            .with_intra_op_spinning(options.spinning)
            .map_err(|e| ort_err(e.into()))?
            .with_inter_op_spinning(options.spinning)
            .map_err(|e| ort_err(e.into()))?;
        let placement = provider::register(
            &mut builder,
            role,
            options.provider,
            &options.device,
            options.allow_fallback,
        )
        .map_err(|message| LoadError::Provider {
            graph: role.to_string(),
            provider: options.provider,
            message,
        })?;
        if placement.cpu_fallback_disabled {
            builder = builder
                .with_config_entry("session.disable_cpu_ep_fallback", "1")
                .map_err(|e| ort_err(e.into()))?;
        }
        let session = builder.commit_from_memory(model).map_err(ort_err)?;

        check_declared(role, "input", &info.inputs, session.inputs())?;
        check_declared(role, "output", &info.outputs, session.outputs())?;

        let inputs = info
            .inputs
            .iter()
            .map(|t| Buffer::new(role, t))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = info
            .outputs
            .iter()
            .map(|t| Buffer::new(role, t))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<CString> = inputs
            .iter()
            .chain(&outputs)
            .map(|b| {
                CString::new(b.info.name.as_str()).map_err(|_| LoadError::Manifest {
                    graph: role.to_string(),
                    message: format!("tensor name {:?} contains a NUL byte", b.info.name),
                })
            })
            .collect::<Result<_, _>>()?;
        let input_name_ptrs = names[..inputs.len()].iter().map(|n| n.as_ptr()).collect();
        let output_name_ptrs = names[inputs.len()..].iter().map(|n| n.as_ptr()).collect();
        let input_value_ptrs = inputs.iter().map(|b| b.value.ptr()).collect();
        let output_value_ptrs = outputs.iter().map(|b| b.value.ptr().cast_mut()).collect();
        Ok(GraphRunner {
            role: role.to_string(),
            session,
            api: ort::api(),
            inputs,
            outputs,
            _names: names,
            input_name_ptrs,
            output_name_ptrs,
            input_value_ptrs,
            output_value_ptrs,
            placement,
        })
    }

    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|b| b.info.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|b| b.info.name == name)
    }

    /// Index of a required input, or the manifest error naming it.
    pub fn require_input(&self, name: &str) -> Result<usize, LoadError> {
        self.input_index(name)
            .ok_or_else(|| self.missing("input", name))
    }

    pub fn require_output(&self, name: &str) -> Result<usize, LoadError> {
        self.output_index(name)
            .ok_or_else(|| self.missing("output", name))
    }

    fn missing(&self, kind: &str, name: &str) -> LoadError {
        LoadError::Manifest {
            graph: self.role.clone(),
            message: format!("has no {kind} `{name}`"),
        }
    }

    /// Number of elements of an input.
    pub fn input_len(&self, index: usize) -> usize {
        self.inputs[index].len
    }

    pub fn output_len(&self, index: usize) -> usize {
        self.outputs[index].len
    }

    pub fn input_f32(&mut self, index: usize) -> &mut [f32] {
        self.inputs[index].f32_mut()
    }

    pub fn input_u8(&mut self, index: usize) -> &mut [u8] {
        self.inputs[index].u8_mut()
    }

    pub fn input_f32_ref(&self, index: usize) -> &[f32] {
        self.inputs[index].f32()
    }

    pub fn output_f32(&self, index: usize) -> &[f32] {
        self.outputs[index].f32()
    }

    /// Copies an output into an input of the same length (a step's commit of h', s' or the
    /// action for the next step).
    pub fn copy_output_to_input(&mut self, output: usize, input: usize) {
        self.inputs[input]
            .f32_mut()
            .copy_from_slice(self.outputs[output].f32());
    }

    /// Runs the graph on the bound inputs into the bound outputs.
    pub fn run(&mut self) -> Result<(), String> {
        // SAFETY: every pointer array has the length passed with it and points at names and
        // values owned by self; the output values are pre-allocated with the declared shapes,
        // so ONNX Runtime writes into them instead of returning new values.
        let status = unsafe {
            (self.api.Run)(
                self.session.ptr_mut(),
                ptr::null(),
                self.input_name_ptrs.as_ptr(),
                self.input_value_ptrs.as_ptr(),
                self.input_value_ptrs.len(),
                self.output_name_ptrs.as_ptr(),
                self.output_name_ptrs.len(),
                self.output_value_ptrs.as_mut_ptr(),
            )
        };
        dreamer_ort::check_status(status)
    }

    /// Fills every input with random values (normal floats, uniform bytes).
    fn fill_random(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for buffer in &mut self.inputs {
            match buffer.elem {
                Elem::F32 => buffer
                    .f32_mut()
                    .iter_mut()
                    .for_each(|x| *x = 0.5 * rng.sample::<f32, _>(StandardNormal)),
                Elem::U8 => buffer.u8_mut().iter_mut().for_each(|x| *x = rng.random()),
            }
        }
    }

    /// Runs through ort's ordinary `Session::run`: inputs passed by reference, outputs
    /// allocated by ONNX Runtime and returned as new values. The baseline for overhead figures.
    fn run_session_api(&mut self) -> Result<(), String> {
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(self.inputs.len());
        for buffer in &self.inputs {
            let shape: Vec<usize> = buffer.info.shape.iter().map(|&d| d as usize).collect();
            let value = match buffer.elem {
                Elem::F32 => TensorRef::from_array_view((shape, buffer.f32()))
                    .map_err(|e| e.to_string())?
                    .into(),
                Elem::U8 => {
                    // SAFETY: `data` points at `len` bytes owned by the buffer.
                    let bytes = unsafe { std::slice::from_raw_parts(buffer.data, buffer.len) };
                    TensorRef::from_array_view((shape, bytes))
                        .map_err(|e| e.to_string())?
                        .into()
                }
            };
            inputs.push((buffer.info.name.clone(), value));
        }
        let outputs = self.session.run(inputs).map_err(|e| e.to_string())?;
        std::hint::black_box(&outputs);
        Ok(())
    }
}

fn check_declared(
    role: &str,
    kind: &str,
    manifest: &[TensorInfo],
    declared: &[ort::value::Outlet],
) -> Result<(), LoadError> {
    let bad = |message: String| LoadError::Manifest {
        graph: role.to_string(),
        message,
    };
    for outlet in declared {
        if !manifest.iter().any(|t| t.name == outlet.name()) {
            return Err(bad(format!(
                "the ONNX file has {kind} `{}` that the manifest does not list",
                outlet.name()
            )));
        }
    }
    for tensor in manifest {
        let Some(outlet) = declared.iter().find(|o| o.name() == tensor.name) else {
            return Err(bad(format!(
                "the manifest lists {kind} `{}` that the ONNX file does not have",
                tensor.name
            )));
        };
        let expected = match tensor.dtype {
            DType::Float32 => TensorElementType::Float32,
            DType::Float16 => TensorElementType::Float16,
            DType::Uint8 => TensorElementType::Uint8,
        };
        let actual = outlet.dtype().tensor_type();
        if actual != Some(expected) {
            return Err(bad(format!(
                "{kind} `{}`: the manifest says {:?}, the ONNX file says {:?}",
                tensor.name, tensor.dtype, actual
            )));
        }
        if let Some(shape) = outlet.dtype().tensor_shape() {
            let dims: &[i64] = shape;
            let matches = dims.len() == tensor.shape.len()
                && dims
                    .iter()
                    .zip(&tensor.shape)
                    .all(|(&d, &m)| d < 0 || d == m);
            if !matches {
                return Err(bad(format!(
                    "{kind} `{}`: the manifest says shape {:?}, the ONNX file says {:?}",
                    tensor.name, tensor.shape, dims
                )));
            }
        }
    }
    Ok(())
}

/// One graph of a bundle opened on its own with random inputs, for latency measurements.
#[derive(Debug)]
pub struct GraphBench {
    runner: GraphRunner,
}

impl GraphBench {
    /// Opens `role` of the opened `bundle` with the session settings of `options`, inputs
    /// filled with random values from `seed`.
    pub fn open(
        bundle: &Bundle,
        role: &str,
        options: &AgentOptions,
        seed: u64,
    ) -> Result<Self, LoadError> {
        let mut runner = GraphRunner::open(bundle, role, options)?;
        runner.fill_random(seed);
        Ok(GraphBench { runner })
    }

    pub fn placement(&self) -> &GraphPlacement {
        &self.runner.placement
    }

    /// One run with the pre-bound tensors (what the agent does).
    pub fn run_bound(&mut self) -> Result<(), String> {
        self.runner.run()
    }

    /// One run through ort's ordinary `Session::run` (outputs allocated per run).
    pub fn run_session_api(&mut self) -> Result<(), String> {
        self.runner.run_session_api()
    }
}
