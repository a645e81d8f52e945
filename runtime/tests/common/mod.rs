//! Test bundles: a small Dreamer-shaped model written as real ONNX graphs with the manifest
//! schema and tensor names of `dreamer-bundle`, plus the same model in plain Rust so tests
//! can check every action the agent returns.
//!
//! The model keeps the structure of the real one (encoder, GRU-like deterministic update,
//! Gaussian prior and posterior with softplus std, tanh-Normal actor, KL surprise) with
//! single-layer blocks:
//! ```text
//! embed   = concat(tanh(pix @ Wp), tanh(obs @ Wo))      pix = f32(u8)/255 - 0.5, flattened HWC
//! h'      = tanh(h @ Whh + concat(s, a) @ Wsa)
//! prior   = (h' @ Wpm, softplus(h' @ Wps) + 0.1)
//! post    = (x @ Wqm, softplus(x @ Wqs) + 0.1)          x = concat(h', embed)
//! s'      = post_mean + post_std * noise
//! actor   = (f @ Wam, softplus(f @ Was) + 1e-4)         f = concat(h', s')
//! action  = tanh(mean + std * action_noise)
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use dreamer_bundle::contract::{self, Contract, ObservationKind, TaskDefinition};
use dreamer_bundle::{
    self as bundle, ActionInfo, DType, GraphInfo, LatentInfo, Manifest, ObservationInfo, PixelInfo,
    StateInfo, TaskInfo, TensorInfo, TrainingInfo, names,
};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const PIXELS: usize = 64 * 64 * 3;
const MIN_STD: f32 = 0.1;

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// State observation length (0 = no state input).
    pub obs: usize,
    /// Whether the policy takes 64x64x3 pixels.
    pub pixels: bool,
    pub embed_state: usize,
    pub embed_pixels: usize,
    pub deter: usize,
    pub stoch: usize,
    pub action: usize,
}

impl Sizes {
    pub fn state() -> Self {
        Sizes {
            obs: 5,
            pixels: false,
            embed_state: 6,
            embed_pixels: 0,
            deter: 8,
            stoch: 4,
            action: 2,
        }
    }
    /// Matches the `pendulum` task: 3 state values, 1 action.
    pub fn pendulum() -> Self {
        Sizes {
            obs: 3,
            pixels: false,
            embed_state: 6,
            embed_pixels: 0,
            deter: 8,
            stoch: 4,
            action: 1,
        }
    }
    pub fn pixels() -> Self {
        Sizes {
            obs: 0,
            pixels: true,
            embed_state: 0,
            embed_pixels: 6,
            deter: 8,
            stoch: 4,
            action: 1,
        }
    }
    pub fn both() -> Self {
        Sizes {
            obs: 3,
            pixels: true,
            embed_state: 4,
            embed_pixels: 5,
            deter: 8,
            stoch: 4,
            action: 2,
        }
    }
    pub fn embed(&self) -> usize {
        self.embed_state + self.embed_pixels
    }
}

/// Weights, row-major `[in, out]`.
#[derive(Debug, Clone)]
pub struct Weights {
    pub sizes: Sizes,
    wp: Vec<f32>,
    wo: Vec<f32>,
    whh: Vec<f32>,
    wsa: Vec<f32>,
    wpm: Vec<f32>,
    wps: Vec<f32>,
    wqm: Vec<f32>,
    wqs: Vec<f32>,
    wam: Vec<f32>,
    was: Vec<f32>,
}

impl Weights {
    pub fn random(sizes: Sizes, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = |rows: usize, cols: usize| -> Vec<f32> {
            let scale = 1.5 / (rows.max(1) as f32).sqrt();
            (0..rows * cols)
                .map(|_| rng.random_range(-scale..scale))
                .collect()
        };
        let (d, s, a, e) = (sizes.deter, sizes.stoch, sizes.action, sizes.embed());
        Weights {
            wp: w(if sizes.pixels { PIXELS } else { 0 }, sizes.embed_pixels),
            wo: w(sizes.obs, sizes.embed_state),
            whh: w(d, d),
            wsa: w(s + a, d),
            wpm: w(d, s),
            wps: w(d, s),
            wqm: w(d + e, s),
            wqs: w(d + e, s),
            wam: w(d + s, a),
            was: w(d + s, a),
            sizes,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plain Rust reference

fn matvec(x: &[f32], w: &[f32], cols: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; cols];
    for (i, xi) in x.iter().enumerate() {
        for (j, yj) in y.iter_mut().enumerate() {
            *yj += xi * w[i * cols + j];
        }
    }
    y
}

fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Latent state and previous action of the reference model.
#[derive(Debug, Clone)]
pub struct RefState {
    pub h: Vec<f32>,
    pub s: Vec<f32>,
    pub prev_action: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct RefStep {
    pub action: Vec<f32>,
    pub surprise: f32,
}

impl Weights {
    pub fn initial(&self) -> RefState {
        RefState {
            h: vec![0.0; self.sizes.deter],
            s: vec![0.0; self.sizes.stoch],
            prev_action: vec![0.0; self.sizes.action],
        }
    }

    /// One policy step with the given noises (zeros for the deterministic policy).
    pub fn step(
        &self,
        st: &mut RefState,
        state_obs: &[f32],
        pixels: &[u8],
        noise: &[f32],
        action_noise: &[f32],
    ) -> RefStep {
        let z = self.sizes;
        let mut embed = Vec::new();
        if z.pixels {
            let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0 - 0.5).collect();
            embed.extend(
                matvec(&x, &self.wp, z.embed_pixels)
                    .iter()
                    .map(|v| v.tanh()),
            );
        }
        if z.obs > 0 {
            embed.extend(
                matvec(state_obs, &self.wo, z.embed_state)
                    .iter()
                    .map(|v| v.tanh()),
            );
        }
        let sa: Vec<f32> = st.s.iter().chain(&st.prev_action).copied().collect();
        let a1 = matvec(&st.h, &self.whh, z.deter);
        let a2 = matvec(&sa, &self.wsa, z.deter);
        let h: Vec<f32> = a1.iter().zip(&a2).map(|(x, y)| (x + y).tanh()).collect();
        let pm = matvec(&h, &self.wpm, z.stoch);
        let ps: Vec<f32> = matvec(&h, &self.wps, z.stoch)
            .iter()
            .map(|&v| softplus(v) + MIN_STD)
            .collect();
        let x: Vec<f32> = h.iter().chain(&embed).copied().collect();
        let qm = matvec(&x, &self.wqm, z.stoch);
        let qs: Vec<f32> = matvec(&x, &self.wqs, z.stoch)
            .iter()
            .map(|&v| softplus(v) + MIN_STD)
            .collect();
        let s: Vec<f32> = (0..z.stoch).map(|i| qm[i] + qs[i] * noise[i]).collect();
        let f: Vec<f32> = h.iter().chain(&s).copied().collect();
        let am = matvec(&f, &self.wam, z.action);
        let asd: Vec<f32> = matvec(&f, &self.was, z.action)
            .iter()
            .map(|&v| softplus(v) + 1e-4)
            .collect();
        let action: Vec<f32> = (0..z.action)
            .map(|i| (am[i] + asd[i] * action_noise[i]).tanh())
            .collect();
        let surprise = (0..z.stoch)
            .map(|i| {
                (ps[i] / qs[i]).ln()
                    + (qs[i] * qs[i] + (qm[i] - pm[i]).powi(2)) / (2.0 * ps[i] * ps[i])
                    - 0.5
            })
            .sum();
        st.h = h;
        st.s = s;
        st.prev_action = action.clone();
        RefStep { action, surprise }
    }
}

// ---------------------------------------------------------------------------------------
// ONNX graph building

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT64: i32 = 7;

struct Builder {
    graph: GraphProto,
    next: usize,
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

fn value_info(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem;
    tensor.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = Some(ty).into();
    v
}

impl Builder {
    fn new(name: &str) -> Self {
        let mut graph = GraphProto::new();
        graph.name = name.to_string();
        Builder { graph, next: 0 }
    }

    fn input(&mut self, name: &str, elem: i32, dims: &[i64]) -> String {
        self.graph.input.push(value_info(name, elem, dims));
        name.to_string()
    }

    fn output(&mut self, name: &str, elem: i32, dims: &[i64]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    fn init_f32(&mut self, dims: &[i64], data: &[f32]) -> String {
        let name = format!("w{}", self.next);
        self.next += 1;
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.to_vec();
        t.data_type = FLOAT;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(t);
        name
    }

    fn init_i64(&mut self, dims: &[i64], data: &[i64]) -> String {
        let name = format!("w{}", self.next);
        self.next += 1;
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.to_vec();
        t.data_type = INT64;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(t);
        name
    }

    fn scalar(&mut self, value: f32) -> String {
        self.init_f32(&[], &[value])
    }

    /// Adds a node; `out` names its single output (or a fresh name when `None`).
    fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: Option<&str>,
    ) -> String {
        let name = out.map_or_else(
            || {
                self.next += 1;
                format!("t{}", self.next)
            },
            str::to_string,
        );
        let mut node = NodeProto::new();
        node.op_type = op.to_string();
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = vec![name.clone()];
        node.attribute = attrs;
        self.graph.node.push(node);
        name
    }

    fn matmul(&mut self, x: &str, w: &[f32], rows: usize, cols: usize) -> String {
        let w = self.init_f32(&[rows as i64, cols as i64], w);
        self.op("MatMul", &[x, &w], vec![], None)
    }

    fn concat(&mut self, parts: &[&str], out: Option<&str>) -> String {
        self.op("Concat", parts, vec![attr_int("axis", 1)], out)
    }

    /// softplus(x) + floor
    fn std_head(&mut self, x: &str, floor: f32, out: Option<&str>) -> String {
        let sp = self.op("Softplus", &[x], vec![], None);
        let c = self.scalar(floor);
        self.op("Add", &[&sp, &c], vec![], out)
    }

    fn finish(self, path: &Path) {
        let mut model = ModelProto::new();
        model.ir_version = 8;
        let mut opset = OperatorSetIdProto::new();
        opset.version = 17;
        model.opset_import.push(opset);
        model.producer_name = "dreamer-runtime-tests".to_string();
        model.graph = Some(self.graph).into();
        std::fs::write(path, model.write_to_bytes().unwrap()).unwrap();
    }
}

/// Encoder nodes: observation inputs -> embedding `[1, E]`.
fn encoder(b: &mut Builder, w: &Weights, out: &str) -> String {
    let z = w.sizes;
    let mut parts = Vec::new();
    if z.pixels {
        let p = b.input(names::OBS_PIXELS, UINT8, &[1, 64, 64, 3]);
        let f = b.op("Cast", &[&p], vec![attr_int("to", FLOAT as i64)], None);
        let k = b.scalar(1.0 / 255.0);
        let scaled = b.op("Mul", &[&f, &k], vec![], None);
        let half = b.scalar(0.5);
        let centred = b.op("Sub", &[&scaled, &half], vec![], None);
        let shape = b.init_i64(&[2], &[1, PIXELS as i64]);
        let flat = b.op("Reshape", &[&centred, &shape], vec![], None);
        let m = b.matmul(&flat, &w.wp, PIXELS, z.embed_pixels);
        parts.push(b.op("Tanh", &[&m], vec![], None));
    }
    if z.obs > 0 {
        let o = b.input(names::OBS_STATE, FLOAT, &[1, z.obs as i64]);
        let m = b.matmul(&o, &w.wo, z.obs, z.embed_state);
        parts.push(b.op("Tanh", &[&m], vec![], None));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    if refs.len() == 1 {
        b.op("Identity", &refs, vec![], Some(out))
    } else {
        b.concat(&refs, Some(out))
    }
}

/// Deterministic update and prior: returns (h', prior_mean, prior_std).
fn img_core(
    b: &mut Builder,
    w: &Weights,
    h: &str,
    s: &str,
    a: &str,
    (out_h, out_pm, out_ps): (&str, Option<&str>, Option<&str>),
) -> (String, String, String) {
    let z = w.sizes;
    let sa = b.concat(&[s, a], None);
    let x1 = b.matmul(h, &w.whh, z.deter, z.deter);
    let x2 = b.matmul(&sa, &w.wsa, z.stoch + z.action, z.deter);
    let sum = b.op("Add", &[&x1, &x2], vec![], None);
    let h_next = b.op("Tanh", &[&sum], vec![], Some(out_h));
    let pm = b.matmul(&h_next, &w.wpm, z.deter, z.stoch);
    let pm = b.op("Identity", &[&pm], vec![], out_pm);
    let ps_raw = b.matmul(&h_next, &w.wps, z.deter, z.stoch);
    let ps = b.std_head(&ps_raw, MIN_STD, out_ps);
    (h_next, pm, ps)
}

/// Posterior: returns (s', mean, std).
fn posterior(
    b: &mut Builder,
    w: &Weights,
    h_next: &str,
    embed: &str,
    noise: &str,
    (out_s, out_m, out_std): (&str, Option<&str>, Option<&str>),
) -> (String, String, String) {
    let z = w.sizes;
    let x = b.concat(&[h_next, embed], None);
    let qm = b.matmul(&x, &w.wqm, z.deter + z.embed(), z.stoch);
    let qm = b.op("Identity", &[&qm], vec![], out_m);
    let qs_raw = b.matmul(&x, &w.wqs, z.deter + z.embed(), z.stoch);
    let qs = b.std_head(&qs_raw, MIN_STD, out_std);
    let scaled = b.op("Mul", &[&qs, noise], vec![], None);
    let s = b.op("Add", &[&qm, &scaled], vec![], Some(out_s));
    (s, qm, qs)
}

/// Actor on features `[1, D+S]`: returns the action name.
fn actor(
    b: &mut Builder,
    w: &Weights,
    feat: &str,
    noise: &str,
    out_action: &str,
    out_mean: Option<&str>,
    out_std: Option<&str>,
) -> String {
    let z = w.sizes;
    let m = b.matmul(feat, &w.wam, z.deter + z.stoch, z.action);
    let m = b.op("Identity", &[&m], vec![], out_mean);
    let sd_raw = b.matmul(feat, &w.was, z.deter + z.stoch, z.action);
    let sd = b.std_head(&sd_raw, 1e-4, out_std);
    let scaled = b.op("Mul", &[&sd, noise], vec![], None);
    let pre = b.op("Add", &[&m, &scaled], vec![], None);
    b.op("Tanh", &[&pre], vec![], Some(out_action))
}

/// KL(post || prior) summed over S -> `[1]`.
fn kl(b: &mut Builder, qm: &str, qs: &str, pm: &str, ps: &str, out: &str) -> String {
    let ratio = b.op("Div", &[ps, qs], vec![], None);
    let log = b.op("Log", &[&ratio], vec![], None);
    let qs2 = b.op("Mul", &[qs, qs], vec![], None);
    let diff = b.op("Sub", &[qm, pm], vec![], None);
    let diff2 = b.op("Mul", &[&diff, &diff], vec![], None);
    let num = b.op("Add", &[&qs2, &diff2], vec![], None);
    let ps2 = b.op("Mul", &[ps, ps], vec![], None);
    let two = b.scalar(2.0);
    let den = b.op("Mul", &[&ps2, &two], vec![], None);
    let frac = b.op("Div", &[&num, &den], vec![], None);
    let half = b.scalar(0.5);
    let t = b.op("Add", &[&log, &frac], vec![], None);
    let t = b.op("Sub", &[&t, &half], vec![], None);
    let axes = b.init_i64(&[1], &[1]);
    b.op(
        "ReduceSum",
        &[&t, &axes],
        vec![attr_int("keepdims", 0)],
        Some(out),
    )
}

/// Options of a test bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The fused graph fails inside ONNX Runtime (an out-of-range Gather) whenever an
    /// observation entry is 2 or more.
    pub runtime_error_on_large_obs: bool,
}

/// Writes a complete bundle for `w` into `dir` and returns its manifest.
pub fn write_bundle(dir: &Path, w: &Weights, faults: Faults) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let z = w.sizes;
    let (d, s, a, e) = (
        z.deter as i64,
        z.stoch as i64,
        z.action as i64,
        z.embed() as i64,
    );
    let f32t = |name: &str, shape: &[i64]| TensorInfo {
        name: name.to_string(),
        dtype: DType::Float32,
        shape: shape.to_vec(),
    };
    let mut obs_inputs = Vec::new();
    if z.pixels {
        obs_inputs.push(TensorInfo {
            name: names::OBS_PIXELS.to_string(),
            dtype: DType::Uint8,
            shape: vec![1, 64, 64, 3],
        });
    }
    if z.obs > 0 {
        obs_inputs.push(f32t(names::OBS_STATE, &[1, z.obs as i64]));
    }
    let mut graphs = BTreeMap::new();

    // encoder
    let mut b = Builder::new("encoder");
    encoder(&mut b, w, names::EMBED);
    b.output(names::EMBED, FLOAT, &[1, e]);
    b.finish(&dir.join("encoder.onnx"));
    graphs.insert(
        bundle::ENCODER.to_string(),
        GraphInfo {
            file: "encoder.onnx".into(),
            inputs: obs_inputs.clone(),
            outputs: vec![f32t(names::EMBED, &[1, e])],
        },
    );

    // rssm_obs_step
    let mut b = Builder::new("rssm_obs_step");
    let h = b.input(names::H, FLOAT, &[1, d]);
    let st = b.input(names::S, FLOAT, &[1, s]);
    let pa = b.input(names::PREV_ACTION, FLOAT, &[1, a]);
    let em = b.input(names::EMBED, FLOAT, &[1, e]);
    let nz = b.input(names::NOISE, FLOAT, &[1, s]);
    let (hn, _, _) = img_core(
        &mut b,
        w,
        &h,
        &st,
        &pa,
        (
            names::H_NEXT,
            Some(names::PRIOR_MEAN),
            Some(names::PRIOR_STD),
        ),
    );
    posterior(
        &mut b,
        w,
        &hn,
        &em,
        &nz,
        (names::S_NEXT, Some(names::MEAN), Some(names::STD)),
    );
    for (n, dims) in [
        (names::H_NEXT, [1, d]),
        (names::S_NEXT, [1, s]),
        (names::MEAN, [1, s]),
        (names::STD, [1, s]),
        (names::PRIOR_MEAN, [1, s]),
        (names::PRIOR_STD, [1, s]),
    ] {
        b.output(n, FLOAT, &dims);
    }
    b.finish(&dir.join("rssm_obs_step.onnx"));
    graphs.insert(
        bundle::RSSM_OBS_STEP.to_string(),
        GraphInfo {
            file: "rssm_obs_step.onnx".into(),
            inputs: vec![
                f32t(names::H, &[1, d]),
                f32t(names::S, &[1, s]),
                f32t(names::PREV_ACTION, &[1, a]),
                f32t(names::EMBED, &[1, e]),
                f32t(names::NOISE, &[1, s]),
            ],
            outputs: [
                names::H_NEXT,
                names::S_NEXT,
                names::MEAN,
                names::STD,
                names::PRIOR_MEAN,
                names::PRIOR_STD,
            ]
            .iter()
            .map(|n| f32t(n, &[1, if *n == names::H_NEXT { d } else { s }]))
            .collect(),
        },
    );

    // rssm_img_step
    let mut b = Builder::new("rssm_img_step");
    let h = b.input(names::H, FLOAT, &[1, d]);
    let st = b.input(names::S, FLOAT, &[1, s]);
    let ac = b.input(names::ACTION, FLOAT, &[1, a]);
    let nz = b.input(names::NOISE, FLOAT, &[1, s]);
    let (_, pm, ps) = img_core(
        &mut b,
        w,
        &h,
        &st,
        &ac,
        (names::H_NEXT, Some(names::MEAN), Some(names::STD)),
    );
    let scaled = b.op("Mul", &[&ps, &nz], vec![], None);
    b.op("Add", &[&pm, &scaled], vec![], Some(names::S_NEXT));
    for (n, dims) in [
        (names::H_NEXT, [1, d]),
        (names::S_NEXT, [1, s]),
        (names::MEAN, [1, s]),
        (names::STD, [1, s]),
    ] {
        b.output(n, FLOAT, &dims);
    }
    b.finish(&dir.join("rssm_img_step.onnx"));
    graphs.insert(
        bundle::RSSM_IMG_STEP.to_string(),
        GraphInfo {
            file: "rssm_img_step.onnx".into(),
            inputs: vec![
                f32t(names::H, &[1, d]),
                f32t(names::S, &[1, s]),
                f32t(names::ACTION, &[1, a]),
                f32t(names::NOISE, &[1, s]),
            ],
            outputs: vec![
                f32t(names::H_NEXT, &[1, d]),
                f32t(names::S_NEXT, &[1, s]),
                f32t(names::MEAN, &[1, s]),
                f32t(names::STD, &[1, s]),
            ],
        },
    );

    // actor
    let mut b = Builder::new("actor");
    let feat = b.input(names::FEAT, FLOAT, &[1, d + s]);
    let an = b.input(names::ACTION_NOISE, FLOAT, &[1, a]);
    actor(
        &mut b,
        w,
        &feat,
        &an,
        names::ACTION,
        Some(names::MEAN),
        Some(names::STD),
    );
    for n in [names::ACTION, names::MEAN, names::STD] {
        b.output(n, FLOAT, &[1, a]);
    }
    b.finish(&dir.join("actor.onnx"));
    graphs.insert(
        bundle::ACTOR.to_string(),
        GraphInfo {
            file: "actor.onnx".into(),
            inputs: vec![
                f32t(names::FEAT, &[1, d + s]),
                f32t(names::ACTION_NOISE, &[1, a]),
            ],
            outputs: vec![
                f32t(names::ACTION, &[1, a]),
                f32t(names::MEAN, &[1, a]),
                f32t(names::STD, &[1, a]),
            ],
        },
    );

    // policy_step (fused)
    let mut b = Builder::new("policy_step");
    let embed = encoder(&mut b, w, "embed_internal");
    let h = b.input(names::H, FLOAT, &[1, d]);
    let st = b.input(names::S, FLOAT, &[1, s]);
    let pa = b.input(names::PREV_ACTION, FLOAT, &[1, a]);
    let nz = b.input(names::NOISE, FLOAT, &[1, s]);
    let an = b.input(names::ACTION_NOISE, FLOAT, &[1, a]);
    let (hn, pm, ps) = img_core(&mut b, w, &h, &st, &pa, (names::H_NEXT, None, None));
    let (sn, qm, qs) = posterior(&mut b, w, &hn, &embed, &nz, (names::S_NEXT, None, None));
    let feat = b.concat(&[&hn, &sn], None);
    actor(&mut b, w, &feat, &an, names::ACTION, None, None);
    if faults.runtime_error_on_large_obs {
        let kl_name = kl(&mut b, &qm, &qs, &pm, &ps, "kl_internal");
        let src = if z.obs > 0 {
            names::OBS_STATE
        } else {
            names::H
        };
        let mx = b.op(
            "ReduceMax",
            &[src],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
            None,
        );
        let idx = b.op("Cast", &[&mx], vec![attr_int("to", INT64 as i64)], None);
        let table = b.init_f32(&[2], &[0.0, 0.0]);
        let picked = b.op("Gather", &[&table, &idx], vec![attr_int("axis", 0)], None);
        b.op("Add", &[&kl_name, &picked], vec![], Some(names::SURPRISE));
    } else {
        kl(&mut b, &qm, &qs, &pm, &ps, names::SURPRISE);
    }
    b.output(names::ACTION, FLOAT, &[1, a]);
    b.output(names::H_NEXT, FLOAT, &[1, d]);
    b.output(names::S_NEXT, FLOAT, &[1, s]);
    b.output(names::SURPRISE, FLOAT, &[1]);
    b.finish(&dir.join("policy_step.onnx"));
    let mut fused_inputs = obs_inputs.clone();
    fused_inputs.extend([
        f32t(names::H, &[1, d]),
        f32t(names::S, &[1, s]),
        f32t(names::PREV_ACTION, &[1, a]),
        f32t(names::NOISE, &[1, s]),
        f32t(names::ACTION_NOISE, &[1, a]),
    ]);
    graphs.insert(
        bundle::POLICY_STEP.to_string(),
        GraphInfo {
            file: "policy_step.onnx".into(),
            inputs: fused_inputs,
            outputs: vec![
                f32t(names::ACTION, &[1, a]),
                f32t(names::H_NEXT, &[1, d]),
                f32t(names::S_NEXT, &[1, s]),
                f32t(names::SURPRISE, &[1]),
            ],
        },
    );

    let files = graphs
        .values()
        .map(|g| {
            (
                g.file.clone(),
                bundle::sha256_file(&dir.join(&g.file)).unwrap(),
            )
        })
        .collect();
    let manifest = Manifest {
        format_version: bundle::FORMAT_VERSION,
        task: TaskInfo {
            name: "pendulum".into(),
            control_period_s: 0.1,
            action_repeat: 2,
            episode_decisions: 100,
        },
        observation: ObservationInfo {
            pixels: z.pixels.then(|| PixelInfo {
                height: 64,
                width: 64,
                channels: 3,
                layout: "HWC".into(),
                preprocess: "x / 255 - 0.5".into(),
            }),
            state: (z.obs > 0).then(|| StateInfo {
                size: z.obs as u32,
                fields: (0..z.obs).map(|i| format!("x{i}")).collect(),
            }),
        },
        action: ActionInfo {
            size: z.action as u32,
            low: vec![-1.0; z.action],
            high: vec![1.0; z.action],
            physical_low: vec![-2.0; z.action],
            physical_high: vec![2.0; z.action],
        },
        latent: LatentInfo {
            deter: z.deter as u32,
            stoch: z.stoch as u32,
            classes: 0,
            embed: z.embed() as u32,
            initial: "zeros".into(),
            min_std: MIN_STD,
        },
        batch: 1,
        precision: "float32".into(),
        quantization: None,
        graph_form: dreamer_bundle::GraphForm::Decomposed,
        opset: 17,
        ir_version: 8,
        graphs,
        training: TrainingInfo {
            env_steps: 1000,
            updates: 10,
            eval_return: None,
            config: BTreeMap::from([("model.deter".to_string(), z.deter.to_string())]),
        },
        verification: None,
        files,
        contract: test_contract(z, 0.1 / 2.0),
        environment: None,
    };
    write_manifest(dir, &manifest);
    manifest
}

/// The standard contract for a test bundle with `z`'s observations and no `policy_observe`
/// (so no split scheme).
fn test_contract(z: Sizes, physics_step_s: f64) -> Contract {
    let mut observations = Vec::new();
    if z.obs > 0 {
        observations.push(ObservationKind::State);
    }
    if z.pixels {
        observations.push(ObservationKind::Pixels);
    }
    let mut contract = Contract::standard(
        &observations,
        physics_step_s,
        TaskDefinition {
            source: "dreamer-tasks".into(),
            version: 1,
        },
    );
    contract.steps.remove(contract::SPLIT);
    contract
}

/// The manifest of the bundle in `dir`.
pub fn read_manifest(dir: &Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join(bundle::MANIFEST_FILE)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) {
    std::fs::write(
        dir.join(bundle::MANIFEST_FILE),
        serde_json::to_string_pretty(manifest).unwrap(),
    )
    .unwrap();
}

/// Deterministic pseudo-random observations.
pub fn observations(sizes: Sizes, count: usize, seed: u64) -> Vec<(Vec<f32>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let state = (0..sizes.obs)
                .map(|_| rng.random_range(-1.5f32..1.5))
                .collect();
            let pixels = if sizes.pixels {
                (0..PIXELS).map(|_| rng.random()).collect()
            } else {
                Vec::new()
            };
            (state, pixels)
        })
        .collect()
}
