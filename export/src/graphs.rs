//! The six bundle graphs, built op for op from the equations of docs/checkpoint-format.md.
//!
//! Each model part (encoder, RSSM steps, actor, KL) is a function that adds its nodes to a
//! [`GraphBuilder`] and returns the names of its results, so `policy_step` and
//! `policy_observe` are the same parts wired together and cannot drift from the separate
//! graphs or from each other.

use dreamer_bundle::{GraphForm, names};
use dreamer_config::{GUMBEL_EPS, UNIFORM_MIX};

use crate::calibrate::Calibration;
use crate::checkpoint::{Checkpoint, PIXEL_CHANNELS, PIXEL_HW};
use crate::onnx::{ElemType, GraphBuilder, Port, Precision};
use crate::options::ExportOptions;
use crate::quantize::{ActivationQuant, quantize_bias, quantize_rows};

/// The actor's std offset `ln(e^5 - 1)` = 4.99323925..., so that a zero output gives
/// std = 5 + 1e-4.
fn actor_std_shift() -> f64 {
    (5.0f64.exp() - 1.0).ln()
}
/// The actor's mean is squashed into `[-5, 5]` before the tanh.
const ACTOR_MEAN_SCALE: f32 = 5.0;
const ACTOR_MIN_STD: f32 = 1e-4;
/// Probe keys of the GRU's two inputs: the transition's features and the previous `h`.
const GRU_INPUT: &str = "rssm.gru.ih.input";
const GRU_HIDDEN: &str = "rssm.gru.hh.input";
/// The state encoder's first layer, which stays float32 in an int8 bundle.
const STATE_INPUT_LAYER: &str = "encoder.state.l0";

/// One serialised graph with its declared inputs and outputs.
pub struct BuiltGraph {
    pub role: &'static str,
    pub bytes: Vec<u8>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// Extra outputs of a calibration graph ([`probe_graph`]), by probe key.
    pub probes: Vec<String>,
}

/// How the quantizable layers (the convolutions and the hidden dense layers, those followed
/// by an activation) are built.
#[derive(Clone, Copy)]
pub enum Layers<'c> {
    /// Float, in the options' weight precision.
    Float,
    /// Float32, and every quantizable layer's input (each convolution's output after its
    /// ReLU) also a graph output, under its probe key: what calibration measures.
    Probe,
    /// Int8 on the calibrated ranges (QDQ form).
    Int8(&'c Calibration),
}

/// The graph output name of probe `key`.
pub fn probe_output(key: &str) -> String {
    format!("calibration/{key}")
}

/// Builds every graph of the bundle: static batch size, weight precision and graph form
/// as `options` say; int8 layers (`Precision::Int8`) need the calibration.
pub fn build_all<'c>(
    ckpt: &'c Checkpoint,
    options: &ExportOptions,
    calibration: Option<&'c Calibration>,
) -> Result<Vec<BuiltGraph>, protobuf::Error> {
    let layers = match (options.precision, calibration) {
        (Precision::Int8, Some(c)) => Layers::Int8(c),
        _ => Layers::Float,
    };
    let net = Net {
        ckpt,
        batch: options.batch as i64,
        form: options.graph_form,
        layers,
    };
    let builders: [(&'static str, BuildFn<'c>); 6] = [
        (dreamer_bundle::ENCODER, Net::encoder_graph),
        (dreamer_bundle::RSSM_OBS_STEP, Net::obs_step_graph),
        (dreamer_bundle::RSSM_IMG_STEP, Net::img_step_graph),
        (dreamer_bundle::ACTOR, Net::actor_graph),
        (dreamer_bundle::POLICY_STEP, Net::policy_step_graph),
        (dreamer_bundle::POLICY_OBSERVE, Net::policy_observe_graph),
    ];
    builders
        .into_iter()
        .map(|(role, build)| {
            let mut g = GraphBuilder::new(role, options.precision);
            build(&net, &mut g);
            finish(g, role, ckpt)
        })
        .collect()
}

/// `policy_step` at batch 1 in float32 with every quantizable layer's input as an extra
/// output ([`Layers::Probe`]): run over recorded observations, it gives the activation
/// ranges of every layer of every graph (`policy_step` holds them all).
pub fn probe_graph(ckpt: &Checkpoint, form: GraphForm) -> Result<BuiltGraph, protobuf::Error> {
    let net = Net {
        ckpt,
        batch: 1,
        form,
        layers: Layers::Probe,
    };
    let role = dreamer_bundle::POLICY_STEP;
    let mut g = GraphBuilder::new(role, Precision::Float32);
    net.policy_step_graph(&mut g);
    finish(g, role, ckpt)
}

fn finish(
    g: GraphBuilder,
    role: &'static str,
    ckpt: &Checkpoint,
) -> Result<BuiltGraph, protobuf::Error> {
    Ok(BuiltGraph {
        role,
        bytes: g.to_bytes(&format!("Dreamer {role}, task {}", ckpt.task_name))?,
        inputs: g.inputs().to_vec(),
        outputs: g.outputs().to_vec(),
        probes: g.probes().to_vec(),
    })
}

/// Adds one graph's inputs, nodes and outputs.
type BuildFn<'c> = fn(&Net<'c>, &mut GraphBuilder);

struct Net<'a> {
    ckpt: &'a Checkpoint,
    batch: i64,
    form: GraphForm,
    layers: Layers<'a>,
}

impl Net<'_> {
    fn dims(&self, width: usize) -> [i64; 2] {
        [self.batch, width as i64]
    }

    fn weight(&self, g: &mut GraphBuilder, name: &str) -> String {
        let t = self.ckpt.tensor(name);
        g.weight(name, &t.shape, &t.data)
    }

    /// `x W^T + b` for the checkpoint layer `prefix`. x: [B, in] -> [B, out].
    fn linear(&self, g: &mut GraphBuilder, prefix: &str, x: &str) -> String {
        let w = self.weight(g, &format!("{prefix}.weight"));
        let b = self.weight(g, &format!("{prefix}.bias"));
        g.gemm(x, &w, &b)
    }

    /// The data of checkpoint tensor `name` ([rows, ...] or [rows]) cut into
    /// `order.len()` equal row blocks, block `order[i]` put in place `i` and mapped by
    /// `x * scale[i] + shift[i]` (in f64, rounded once to f32): how torch's gate layout
    /// becomes ONNX's and how constants are folded into weights.
    fn row_blocks(&self, name: &str, order: &[usize], scale: &[f64], shift: &[f64]) -> Vec<f32> {
        let t = self.ckpt.tensor(name);
        let block = t.data.len() / order.len();
        order
            .iter()
            .enumerate()
            .flat_map(|(place, &from)| {
                t.data[from * block..(from + 1) * block]
                    .iter()
                    .map(move |&x| (f64::from(x) * scale[place] + shift[place]) as f32)
            })
            .collect()
    }

    /// `log(1 + exp(x))`: one `Softplus` node in the compact form (ONNX Runtime's CPU
    /// kernel is exact over the whole range), the overflow-proof five-node form otherwise.
    fn softplus(&self, g: &mut GraphBuilder, x: &str) -> String {
        match self.form {
            GraphForm::Compact => g.unary("Softplus", x),
            GraphForm::Decomposed => g.softplus(x),
        }
    }

    /// A hidden dense layer, `elu(x W^T + b)`: quantizable, except the state encoder's first
    /// layer, which reads the raw observation: its entries have unrelated scales (cos and
    /// sin in [-1, 1] next to a velocity in [-8, 8]), which one uint8 scale per tensor would
    /// flatten. x: [B, in] -> [B, out].
    fn linear_elu(&self, g: &mut GraphBuilder, prefix: &str, x: &str) -> String {
        let key = format!("{prefix}.input");
        let layers = match prefix {
            STATE_INPUT_LAYER => Layers::Float,
            _ => self.layers,
        };
        let y = match layers {
            Layers::Float => self.linear(g, prefix, x),
            Layers::Probe => {
                g.probe(x, &probe_output(&key));
                self.linear(g, prefix, x)
            }
            Layers::Int8(calibration) => {
                let x = g.quantize_activation(x, calibration.quant(&key));
                let w = self.ckpt.tensor(&format!("{prefix}.weight"));
                let b = self.ckpt.tensor(&format!("{prefix}.bias"));
                let (w, b) = self.int8_params(g, prefix, &x, (&w.shape, &w.data), &b.data);
                g.gemm(&x, &w, &b)
            }
        };
        g.elu(&y)
    }

    /// The int8 weight (per output channel) and int32 bias of layer `prefix` read by the
    /// dequantized activation `x`. Returns (weight, bias) values.
    fn int8_params(
        &self,
        g: &mut GraphBuilder,
        prefix: &str,
        x: &str,
        (shape, w): (&[usize], &[f32]),
        b: &[f32],
    ) -> (String, String) {
        let q = quantize_rows(w, shape[0]);
        // Every int8 layer reads a dequantized activation (`quantize_activation`).
        let x_scale = g.activation_scale(x).unwrap_or(1.0);
        let (bias, scales) = quantize_bias(b, x_scale, &q.scales);
        (
            g.int8_weight(&format!("{prefix}.weight"), shape, &q),
            g.int32_bias(&format!("{prefix}.bias"), &bias, &scales),
        )
    }

    // ---- graph inputs ----------------------------------------------------------------

    /// The observation inputs in use: (pixels u8 [B, 64, 64, 3], state [B, O]).
    fn observation_inputs(&self, g: &mut GraphBuilder) -> (Option<String>, Option<String>) {
        let pixels = self.ckpt.obs.uses_pixels().then(|| {
            let hw = PIXEL_HW as i64;
            g.input(
                names::OBS_PIXELS,
                ElemType::Uint8,
                &[self.batch, hw, hw, PIXEL_CHANNELS as i64],
            )
        });
        let state = self
            .ckpt
            .sizes
            .obs_state
            .map(|o| g.input(names::OBS_STATE, ElemType::Float32, &self.dims(o)));
        (pixels, state)
    }

    fn f32_input(&self, g: &mut GraphBuilder, name: &str, width: usize) -> String {
        g.input(name, ElemType::Float32, &self.dims(width))
    }

    // ---- model parts -----------------------------------------------------------------

    /// Observation -> embedding [B, E]: conv stack on the preprocessed pixels, MLP on the
    /// state, concatenated pixels first.
    fn encoder(&self, g: &mut GraphBuilder, pixels: Option<&str>, state: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(pixels) = pixels {
            parts.push(self.pixel_encoder(g, pixels));
        }
        if let Some(state) = state {
            let symlog;
            let state = if self.ckpt.symlog_obs {
                symlog = g.symlog(state);
                symlog.as_str()
            } else {
                state
            };
            let x = self.linear_elu(g, "encoder.state.l0", state);
            parts.push(self.linear_elu(g, "encoder.state.l1", &x));
        }
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            g.concat(&refs)
        }
    }

    /// The conv stack: u8 [B, 64, 64, 3] -> [B, 32C] (CHW order).
    fn pixel_encoder(&self, g: &mut GraphBuilder, pixels: &str) -> String {
        // u8 [B, 64, 64, 3] -> [B, 3, 64, 64]; the `x / 255 - 0.5` is folded into the first
        // convolution (`pixel_folded_conv0`), which therefore reads the raw byte values.
        // Transposing bytes moves a quarter of the data a float transpose moves.
        let x = g.transpose(pixels, &[0, 3, 1, 2]);
        let mut x = match self.layers {
            // The bytes are already uint8 on scale 1: the first int8 layer reads them as is.
            Layers::Int8(_) => g.dequantize_activation(
                &x,
                ActivationQuant {
                    scale: 1.0,
                    zero_point: 0,
                },
            ),
            Layers::Float | Layers::Probe => g.cast_to_f32(&x),
        };
        for i in 0..4 {
            let (w_name, shape, w) = if i == 0 {
                self.pixel_folded_conv0()
            } else {
                let name = format!("encoder.pixels.conv{i}.weight");
                let t = self.ckpt.tensor(&name);
                (name, t.shape.clone(), t.data.clone())
            };
            let (b_name, b) = if i == 0 {
                (
                    "encoder.pixels.conv0.bias.folded".to_string(),
                    self.pixel_folded_conv0_bias(),
                )
            } else {
                let name = format!("encoder.pixels.conv{i}.bias");
                let data = self.ckpt.tensor(&name).data.clone();
                (name, data)
            };
            let key = format!("encoder.pixels.conv{i}.output");
            x = match self.layers {
                Layers::Float | Layers::Probe => {
                    let w = g.weight(&w_name, &shape, &w);
                    let b = g.weight(&b_name, &[b.len()], &b);
                    let y = g.conv(&x, &w, &b, 4, 2);
                    let y = g.unary("Relu", &y);
                    if matches!(self.layers, Layers::Probe) {
                        g.probe(&y, &probe_output(&key));
                    }
                    y
                }
                Layers::Int8(calibration) => {
                    let prefix = format!("encoder.pixels.conv{i}");
                    let (w, b) = self.int8_params(g, &prefix, &x, (&shape, &w), &b);
                    let y = g.conv(&x, &w, &b, 4, 2);
                    // The ReLU is the quantization itself: the calibrated range starts at
                    // zero, so zero point 0 clamps every negative value to 0.
                    g.quantize_activation(&y, calibration.quant(&key))
                }
            };
        }
        // [B, 8C, 2, 2] -> [B, 32C], CHW order
        g.flatten(&x)
    }

    /// The first pixel convolution with the preprocessing `x / 255 - 0.5` folded in, so it
    /// takes the raw byte values: `conv(x / 255 - 0.5, W) + b = conv(x, W / 255) + b - 0.5 *
    /// sum(W)`, the sum over (cin, kh, kw) per output channel. Computed in f64, rounded once
    /// to f32 (and to f16 after that, with float16 weights). Returns (weight, bias).
    fn pixel_folded_conv0(&self) -> (String, Vec<usize>, Vec<f32>) {
        let w = self.ckpt.tensor("encoder.pixels.conv0.weight"); // [Cout, Cin, k, k]
        let folded: Vec<f32> = w
            .data
            .iter()
            .map(|&x| (f64::from(x) / 255.0) as f32)
            .collect();
        (
            "encoder.pixels.conv0.weight.folded".to_string(),
            w.shape.clone(),
            folded,
        )
    }

    /// The bias of [`Net::pixel_folded_conv0`]: `b - 0.5 * sum(W)` per output channel.
    fn pixel_folded_conv0_bias(&self) -> Vec<f32> {
        let w = self.ckpt.tensor("encoder.pixels.conv0.weight");
        let b = self.ckpt.tensor("encoder.pixels.conv0.bias"); // [Cout]
        let per_out = w.data.len() / b.data.len();
        w.data
            .chunks(per_out)
            .zip(&b.data)
            .map(|(row, &bias)| {
                let sum: f64 = row.iter().map(|&x| f64::from(x)).sum();
                (f64::from(bias) - 0.5 * sum) as f32
            })
            .collect()
    }

    /// The deterministic transition: (h [B, D], s [B, S], a [B, A]) -> h' [B, D], a GRU cell
    /// with torch's gate layout (row blocks r | z | n, reset applied after the hidden matmul).
    fn transition(&self, g: &mut GraphBuilder, h: &str, s: &str, a: &str) -> String {
        let sa = g.concat(&[s, a]);
        let x = self.linear_elu(g, "rssm.img_in", &sa);
        match (self.layers, self.form) {
            // ONNX has no quantized GRU: an int8 bundle's GRU is two int8 Gemms and the
            // gate arithmetic, which also keeps its weights (the policy step's largest) at
            // a quarter of their size.
            (Layers::Int8(_), _) | (_, GraphForm::Decomposed) => self.gru_decomposed(g, &x, h),
            (Layers::Probe, GraphForm::Compact) => {
                g.probe(&x, &probe_output(GRU_INPUT));
                g.probe(h, &probe_output(GRU_HIDDEN));
                self.gru_operator(g, &x, h)
            }
            (Layers::Float, GraphForm::Compact) => self.gru_operator(g, &x, h),
        }
    }

    /// One of the GRU's two gate products, `x W^T + b` of checkpoint tensors `weight` and
    /// `bias`, int8 with `x` quantized under probe `key` in an int8 bundle.
    fn gate_gemm(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        (weight, bias): (&str, &str),
        key: &str,
    ) -> String {
        match self.layers {
            Layers::Float | Layers::Probe => {
                if matches!(self.layers, Layers::Probe) {
                    g.probe(x, &probe_output(key));
                }
                let w = self.weight(g, weight);
                let b = self.weight(g, bias);
                g.gemm(x, &w, &b)
            }
            Layers::Int8(calibration) => {
                let x = g.quantize_activation(x, calibration.quant(key));
                let w = self.ckpt.tensor(weight);
                let b = self.ckpt.tensor(bias);
                // `rssm.gru.ih` / `rssm.gru.hh`, as the manifest lists the layer.
                let layer = key.trim_end_matches(".input");
                let (w, b) = self.int8_params(g, layer, &x, (&w.shape, &w.data), &b.data);
                g.gemm(&x, &w, &b)
            }
        }
    }

    /// The GRU cell as ONNX's `GRU` operator: torch's row blocks r | z | n reordered to
    /// ONNX's z | r | h, the two biases concatenated. x [B, H], h [B, D] -> h' [B, D].
    fn gru_operator(&self, g: &mut GraphBuilder, x: &str, h: &str) -> String {
        let d = self.ckpt.sizes.deter;
        let gates = |name: &str| self.row_blocks(name, &[1, 0, 2], &[1.0; 3], &[0.0; 3]);
        let input = self.ckpt.tensor("rssm.gru.weight_ih").shape[1];
        let w = g.weight(
            "rssm.gru.W",
            &[1, 3 * d, input],
            &gates("rssm.gru.weight_ih"),
        );
        let r = g.weight("rssm.gru.R", &[1, 3 * d, d], &gates("rssm.gru.weight_hh"));
        let mut b = gates("rssm.gru.bias_ih");
        b.extend(gates("rssm.gru.bias_hh"));
        let b = g.weight("rssm.gru.B", &[1, 6 * d], &b);
        let x = g.unsqueeze(x, 0);
        let h = g.unsqueeze(h, 0);
        let h_next = g.gru(&x, &w, &r, &b, &h, d as i64);
        g.squeeze(&h_next, 0)
    }

    /// The GRU cell in elementary operators. x [B, H], h [B, D] -> h' [B, D].
    fn gru_decomposed(&self, g: &mut GraphBuilder, x: &str, h: &str) -> String {
        let d = self.ckpt.sizes.deter as i64;
        let ih = ("rssm.gru.weight_ih", "rssm.gru.bias_ih");
        let gi = self.gate_gemm(g, x, ih, GRU_INPUT);
        let gh = self.gate_gemm(g, h, ("rssm.gru.weight_hh", "rssm.gru.bias_hh"), GRU_HIDDEN);
        let gi = g.split(&gi, &[d, d, d]);
        let gh = g.split(&gh, &[d, d, d]);
        let r = g.binary("Add", &gi[0], &gh[0]);
        let r = g.unary("Sigmoid", &r);
        let z = g.binary("Add", &gi[1], &gh[1]);
        let z = g.unary("Sigmoid", &z);
        let rn = g.binary("Mul", &r, &gh[2]);
        let n = g.binary("Add", &gi[2], &rn);
        let n = g.unary("Tanh", &n);
        // (1 - z) * n + z * h, written as torch's kernel evaluates it: (h - n) * z + n.
        let hn = g.binary("Sub", h, &n);
        let hnz = g.binary("Mul", &hn, &z);
        g.binary("Add", &hnz, &n)
    }

    /// A Normal from a `[B, 2S]` layer output: (mean, softplus(raw) + min_std).
    fn gaussian(&self, g: &mut GraphBuilder, prefix: &str, y: &str) -> (String, String) {
        let s = self.ckpt.sizes.stoch as i64;
        let out = self.linear(g, prefix, y);
        let mut parts = g.split(&out, &[s, s]);
        let raw = parts.pop().unwrap_or_default();
        let mean = parts.pop().unwrap_or_default();
        let sp = self.softplus(g, &raw);
        let min_std = g.scalar(self.ckpt.min_std);
        let std = g.binary("Add", &sp, &min_std);
        (mean, std)
    }

    /// Categoricals from a `[B, S]` layer output of logits, `S / K` of `K` classes: (the
    /// class probabilities mixed with 1 % uniform, their one-hots' std `sqrt(p (1 - p))`).
    fn categorical(&self, g: &mut GraphBuilder, prefix: &str, y: &str) -> (String, String) {
        let (s, k) = (self.ckpt.sizes.stoch as i64, self.ckpt.sizes.classes as i64);
        let logits = self.linear(g, prefix, y);
        let grouped = g.reshape(&logits, &[0, s / k, k]);
        let soft = g.softmax_last(&grouped);
        let keep = g.scalar((1.0 - UNIFORM_MIX) as f32);
        let kept = g.binary("Mul", &soft, &keep);
        let floor = g.scalar((UNIFORM_MIX / k as f64) as f32);
        let mixed = g.binary("Add", &kept, &floor);
        let probs = g.reshape(&mixed, &[0, s]);
        let one = g.scalar(1.0);
        let rest = g.binary("Sub", &one, &probs);
        let var = g.binary("Mul", &probs, &rest);
        let std = g.unary("Sqrt", &var);
        (probs, std)
    }

    /// The stochastic state's distribution from a distribution layer's input `y`: a
    /// Gaussian's (mean, std) or the categoricals' (probabilities, std), [B, S] each.
    fn latent_dist(&self, g: &mut GraphBuilder, prefix: &str, y: &str) -> (String, String) {
        if self.ckpt.sizes.classes == 0 {
            self.gaussian(g, prefix, y)
        } else {
            self.categorical(g, prefix, y)
        }
    }

    /// Prior from h' [B, D] -> (mean, std) [B, S].
    fn prior(&self, g: &mut GraphBuilder, h_next: &str) -> (String, String) {
        let y = self.linear_elu(g, "rssm.img_out", h_next);
        self.latent_dist(g, "rssm.img_dist", &y)
    }

    /// Posterior from h' [B, D] and embedding [B, E] -> (mean, std) [B, S].
    fn posterior(&self, g: &mut GraphBuilder, h_next: &str, embed: &str) -> (String, String) {
        let he = g.concat(&[h_next, embed]);
        let y = self.linear_elu(g, "rssm.obs_out", &he);
        self.latent_dist(g, "rssm.obs_dist", &y)
    }

    /// `mean + std * noise`, [B, S] each.
    fn sample(&self, g: &mut GraphBuilder, mean: &str, std: &str, noise: &str) -> String {
        let scaled = g.binary("Mul", std, noise);
        g.binary("Add", mean, &scaled)
    }

    /// The stochastic state drawn with standard-normal `noise` [B, S] from its distribution
    /// (`latent_dist`): `mean + std * noise`, or per categorical the one-hot of the class
    /// that maximises `ln p + G`, `G = -ln(-ln u)` with `u = Phi(noise)` (Gumbel-max; zero
    /// noise picks the most likely class).
    fn latent_sample(&self, g: &mut GraphBuilder, mean: &str, std: &str, noise: &str) -> String {
        if self.ckpt.sizes.classes == 0 {
            return self.sample(g, mean, std, noise);
        }
        let (s, k) = (self.ckpt.sizes.stoch as i64, self.ckpt.sizes.classes as i64);
        let inv_sqrt2 = g.scalar(std::f32::consts::FRAC_1_SQRT_2);
        let scaled = g.binary("Mul", noise, &inv_sqrt2);
        let erf = g.unary("Erf", &scaled);
        let half = g.scalar(0.5);
        let halved = g.binary("Mul", &erf, &half);
        let u = g.binary("Add", &halved, &half);
        let u = g.clip(&u, GUMBEL_EPS as f32, (1.0 - GUMBEL_EPS) as f32);
        let log_u = g.unary("Log", &u);
        let neg = g.unary("Neg", &log_u);
        // -G = ln(-ln u)
        let minus_gumbel = g.unary("Log", &neg);
        let log_p = g.unary("Log", mean);
        let score = g.binary("Sub", &log_p, &minus_gumbel);
        let grouped = g.reshape(&score, &[0, s / k, k]);
        let one_hot = g.one_hot_of_max(&grouped, k);
        g.reshape(&one_hot, &[0, s])
    }

    /// Features [B, F] -> (action, mean, std) [B, A] of the tanh-Normal policy.
    fn actor(&self, g: &mut GraphBuilder, feat: &str, noise: &str) -> (String, String, String) {
        let mut x = feat.to_string();
        for i in 0..4 {
            x = self.linear_elu(g, &format!("actor.l{i}"), &x);
        }
        let a = self.ckpt.sizes.action as i64;
        let scale = g.scalar(ACTOR_MEAN_SCALE);
        let (m, raw) = match self.form {
            GraphForm::Compact => {
                // The mean rows divided by the scale and the std rows' bias shifted, in the
                // weights: out = [m / 5 | raw + shift].
                let inv = 1.0 / f64::from(ACTOR_MEAN_SCALE);
                let w = self.row_blocks("actor.out.weight", &[0, 1], &[inv, 1.0], &[0.0; 2]);
                let b = self.row_blocks(
                    "actor.out.bias",
                    &[0, 1],
                    &[inv, 1.0],
                    &[0.0, actor_std_shift()],
                );
                let shape = &self.ckpt.tensor("actor.out.weight").shape;
                let w = g.weight("actor.out.weight.folded", shape, &w);
                let b = g.weight("actor.out.bias.folded", &[b.len()], &b);
                let out = g.gemm(&x, &w, &b);
                let mut parts = g.split(&out, &[a, a]);
                let raw = parts.pop().unwrap_or_default();
                (parts.pop().unwrap_or_default(), raw)
            }
            GraphForm::Decomposed => {
                let out = self.linear(g, "actor.out", &x);
                let parts = g.split(&out, &[a, a]);
                let m = g.binary("Div", &parts[0], &scale);
                let shift = g.scalar(actor_std_shift() as f32);
                (m, g.binary("Add", &parts[1], &shift))
            }
        };
        let m = g.unary("Tanh", &m);
        let mean = g.binary("Mul", &m, &scale);
        let sp = self.softplus(g, &raw);
        let min_std = g.scalar(ACTOR_MIN_STD);
        let std = g.binary("Add", &sp, &min_std);
        let pre = self.sample(g, &mean, &std, noise);
        let action = g.unary("Tanh", &pre);
        (action, mean, std)
    }

    /// `KL(N(mq, sq) || N(mp, sp))` summed over S -> [B]; for categoricals (probabilities
    /// `mq`, `mp`) `sum mq (ln mq - ln mp)`.
    fn kl(&self, g: &mut GraphBuilder, mq: &str, sq: &str, mp: &str, sp: &str) -> String {
        if self.ckpt.sizes.classes > 0 {
            let log_q = g.unary("Log", mq);
            let log_p = g.unary("Log", mp);
            let diff = g.binary("Sub", &log_q, &log_p);
            let terms = g.binary("Mul", mq, &diff);
            return g.sum_axis1(&terms);
        }
        if self.form == GraphForm::Compact {
            return self.kl_compact(g, mq, sq, mp, sp);
        }
        let ratio = g.binary("Div", sp, sq);
        let log_ratio = g.unary("Log", &ratio);
        let var_q = g.binary("Mul", sq, sq);
        let diff = g.binary("Sub", mq, mp);
        let diff2 = g.binary("Mul", &diff, &diff);
        let num = g.binary("Add", &var_q, &diff2);
        let var_p = g.binary("Mul", sp, sp);
        let two = g.scalar(2.0);
        let den = g.binary("Mul", &two, &var_p);
        let frac = g.binary("Div", &num, &den);
        let terms = g.binary("Add", &log_ratio, &frac);
        let half = g.scalar(0.5);
        let terms = g.binary("Sub", &terms, &half);
        g.sum_axis1(&terms)
    }

    /// The same KL in fewer nodes: with r = sq / sp and z = (mq - mp) / sp,
    /// `sum(0.5 (r^2 + z^2) - ln r - 0.5)`.
    fn kl_compact(&self, g: &mut GraphBuilder, mq: &str, sq: &str, mp: &str, sp: &str) -> String {
        let r = g.binary("Div", sq, sp);
        let diff = g.binary("Sub", mq, mp);
        let z = g.binary("Div", &diff, sp);
        let r2 = g.binary("Mul", &r, &r);
        let z2 = g.binary("Mul", &z, &z);
        let squares = g.binary("Add", &r2, &z2);
        let half = g.scalar(0.5);
        let half_squares = g.binary("Mul", &squares, &half);
        let log_r = g.unary("Log", &r);
        let terms = g.binary("Sub", &half_squares, &log_r);
        // Per element, as the reference does, so that no sum of S halves cancels.
        let terms = g.binary("Sub", &terms, &half);
        g.sum_axis1(&terms)
    }

    // ---- graphs ----------------------------------------------------------------------

    fn encoder_graph(&self, g: &mut GraphBuilder) {
        let (pixels, state) = self.observation_inputs(g);
        let embed = self.encoder(g, pixels.as_deref(), state.as_deref());
        g.output(&embed, names::EMBED, &self.dims(self.ckpt.sizes.embed()));
    }

    fn obs_step_graph(&self, g: &mut GraphBuilder) {
        let sz = self.ckpt.sizes;
        let h = self.f32_input(g, names::H, sz.deter);
        let s = self.f32_input(g, names::S, sz.stoch);
        let a = self.f32_input(g, names::PREV_ACTION, sz.action);
        let e = self.f32_input(g, names::EMBED, sz.embed());
        let noise = self.f32_input(g, names::NOISE, sz.stoch);
        let h_next = self.transition(g, &h, &s, &a);
        let (prior_mean, prior_std) = self.prior(g, &h_next);
        let (mean, std) = self.posterior(g, &h_next, &e);
        let s_next = self.latent_sample(g, &mean, &std, &noise);
        let ds = self.dims(sz.deter);
        let ss = self.dims(sz.stoch);
        g.output(&h_next, names::H_NEXT, &ds);
        g.output(&s_next, names::S_NEXT, &ss);
        g.output(&mean, names::MEAN, &ss);
        g.output(&std, names::STD, &ss);
        g.output(&prior_mean, names::PRIOR_MEAN, &ss);
        g.output(&prior_std, names::PRIOR_STD, &ss);
    }

    fn img_step_graph(&self, g: &mut GraphBuilder) {
        let sz = self.ckpt.sizes;
        let h = self.f32_input(g, names::H, sz.deter);
        let s = self.f32_input(g, names::S, sz.stoch);
        let a = self.f32_input(g, names::ACTION, sz.action);
        let noise = self.f32_input(g, names::NOISE, sz.stoch);
        let h_next = self.transition(g, &h, &s, &a);
        let (mean, std) = self.prior(g, &h_next);
        let s_next = self.latent_sample(g, &mean, &std, &noise);
        let ss = self.dims(sz.stoch);
        g.output(&h_next, names::H_NEXT, &self.dims(sz.deter));
        g.output(&s_next, names::S_NEXT, &ss);
        g.output(&mean, names::MEAN, &ss);
        g.output(&std, names::STD, &ss);
    }

    fn actor_graph(&self, g: &mut GraphBuilder) {
        let sz = self.ckpt.sizes;
        let feat = self.f32_input(g, names::FEAT, sz.feat());
        let noise = self.f32_input(g, names::ACTION_NOISE, sz.action);
        let (action, mean, std) = self.actor(g, &feat, &noise);
        let aa = self.dims(sz.action);
        g.output(&action, names::ACTION, &aa);
        g.output(&mean, names::MEAN, &aa);
        g.output(&std, names::STD, &aa);
    }

    /// What follows the transition in a step: posterior from the prepared h' [B, D] and the
    /// embedding, its sample, KL against the prior (mean, std) [B, S], and the action.
    /// Returns (action [B, A], s' [B, S], surprise [B]).
    fn observe(
        &self,
        g: &mut GraphBuilder,
        h_next: &str,
        (prior_mean, prior_std): (&str, &str),
        embed: &str,
        noise: &str,
        action_noise: &str,
    ) -> (String, String, String) {
        let (mean, std) = self.posterior(g, h_next, embed);
        let s_next = self.latent_sample(g, &mean, &std, noise);
        let surprise = self.kl(g, &mean, &std, prior_mean, prior_std);
        let feat = g.concat(&[h_next, &s_next]);
        let (action, _, _) = self.actor(g, &feat, action_noise);
        (action, s_next, surprise)
    }

    fn policy_step_graph(&self, g: &mut GraphBuilder) {
        let sz = self.ckpt.sizes;
        let (pixels, state) = self.observation_inputs(g);
        let h = self.f32_input(g, names::H, sz.deter);
        let s = self.f32_input(g, names::S, sz.stoch);
        let a = self.f32_input(g, names::PREV_ACTION, sz.action);
        let noise = self.f32_input(g, names::NOISE, sz.stoch);
        let action_noise = self.f32_input(g, names::ACTION_NOISE, sz.action);
        let embed = self.encoder(g, pixels.as_deref(), state.as_deref());
        let h_next = self.transition(g, &h, &s, &a);
        let (prior_mean, prior_std) = self.prior(g, &h_next);
        let prior = (prior_mean.as_str(), prior_std.as_str());
        let (action, s_next, surprise) =
            self.observe(g, &h_next, prior, &embed, &noise, &action_noise);
        g.output(&action, names::ACTION, &self.dims(sz.action));
        g.output(&h_next, names::H_NEXT, &self.dims(sz.deter));
        g.output(&s_next, names::S_NEXT, &self.dims(sz.stoch));
        g.output(&surprise, names::SURPRISE, &[self.batch]);
    }

    /// `policy_step` without the transition and prior, which depend only on the previous
    /// latent and action and can be computed (by `rssm_img_step` with zero noise) before the
    /// observation arrives. The prepared h' is the posterior's h' unchanged, so it is not
    /// an output.
    fn policy_observe_graph(&self, g: &mut GraphBuilder) {
        let sz = self.ckpt.sizes;
        let (pixels, state) = self.observation_inputs(g);
        let h_next = self.f32_input(g, names::H_NEXT, sz.deter);
        let prior_mean = self.f32_input(g, names::PRIOR_MEAN, sz.stoch);
        let prior_std = self.f32_input(g, names::PRIOR_STD, sz.stoch);
        let noise = self.f32_input(g, names::NOISE, sz.stoch);
        let action_noise = self.f32_input(g, names::ACTION_NOISE, sz.action);
        let embed = self.encoder(g, pixels.as_deref(), state.as_deref());
        let prior = (prior_mean.as_str(), prior_std.as_str());
        let (action, s_next, surprise) =
            self.observe(g, &h_next, prior, &embed, &noise, &action_noise);
        g.output(&action, names::ACTION, &self.dims(sz.action));
        g.output(&s_next, names::S_NEXT, &self.dims(sz.stoch));
        g.output(&surprise, names::SURPRISE, &[self.batch]);
    }
}
