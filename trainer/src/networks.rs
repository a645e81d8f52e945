//! Encoders, decoders, reward/value/continuation heads and the actor, with the variable names
//! and layer equations of docs/checkpoint-format.md.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Side length of pixel observations.
pub const IMAGE_SIZE: i64 = 64;
/// ln(e^5 - 1): shifts the actor's raw std so that a zero output gives std 5.
pub const ACTOR_STD_SHIFT: f64 = 4.993_239_250_550_511;

/// Observations, batch dimensions leading: state `[.., O]` f32, pixels `[.., 64, 64, 3]` u8.
#[derive(Debug)]
pub struct Obs {
    pub state: Option<Tensor>,
    pub pixels: Option<Tensor>,
}

impl Obs {
    /// Collapse the two leading dims `[B, T, ..]` into one `[B*T, ..]`.
    pub fn flatten_time(&self) -> Obs {
        let flat = |t: &Tensor| t.flatten(0, 1);
        Obs {
            state: self.state.as_ref().map(flat),
            pixels: self.pixels.as_ref().map(flat),
        }
    }
}

/// Dense layers with ELU after each hidden layer and an optional linear output layer.
/// Hidden layers are named `l0, l1, ..`, the output layer `out`.
#[derive(Debug)]
pub struct Mlp {
    hidden: Vec<nn::Linear>,
    out: Option<nn::Linear>,
}

impl Mlp {
    pub fn new(path: &nn::Path, input: i64, units: i64, layers: usize, out: Option<i64>) -> Mlp {
        let mut hidden = Vec::with_capacity(layers);
        let mut width = input;
        for i in 0..layers {
            hidden.push(nn::linear(
                path / format!("l{i}"),
                width,
                units,
                Default::default(),
            ));
            width = units;
        }
        let out = out.map(|size| nn::linear(path / "out", width, size, Default::default()));
        Mlp { hidden, out }
    }

    // [N, in] -> [N, out]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for layer in &self.hidden {
            x = layer.forward(&x).elu();
        }
        match &self.out {
            Some(out) => out.forward(&x),
            None => x,
        }
    }
}

/// Four stride-2 convolutions, kernel 4, no padding: `[N, 64, 64, 3]` u8 -> `[N, 32C]`.
#[derive(Debug)]
pub struct PixelEncoder {
    convs: Vec<nn::Conv2D>,
}

impl PixelEncoder {
    pub fn new(path: &nn::Path, depth: i64) -> PixelEncoder {
        let channels = [3, depth, 2 * depth, 4 * depth, 8 * depth];
        let config = nn::ConvConfig {
            stride: 2,
            ..Default::default()
        };
        let convs = (0..4)
            .map(|i| {
                nn::conv2d(
                    path / format!("conv{i}"),
                    channels[i],
                    channels[i + 1],
                    4,
                    config,
                )
            })
            .collect();
        PixelEncoder { convs }
    }

    // [N, 64, 64, 3] u8 -> [N, 32C]
    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        let kind = self.convs[0].ws.kind();
        let mut x = pixels_to_float(pixels, kind).permute([0, 3, 1, 2]);
        for conv in &self.convs {
            x = conv.forward(&x).relu();
        }
        x.flatten(1, -1)
    }
}

/// u8 pixels to the network's input space `x / 255 - 0.5` (any shape).
pub fn pixels_to_float(pixels: &Tensor, kind: Kind) -> Tensor {
    pixels.to_kind(kind) / 255.0 - 0.5
}

/// `sign(x) ln(1 + |x|)`, elementwise: compresses large magnitudes, near identity at 0.
pub fn symlog(x: &Tensor) -> Tensor {
    x.sign() * x.abs().log1p()
}

/// Encoder of whichever observations are in use; the embedding is `concat(pixels, state)`.
#[derive(Debug)]
pub struct Encoder {
    pixels: Option<PixelEncoder>,
    state: Option<Mlp>,
    /// The state MLP sees [`symlog`] of the observation.
    symlog_state: bool,
}

impl Encoder {
    pub fn new(
        path: &nn::Path,
        dims: &Dims,
        units: i64,
        depth: i64,
        symlog_state: bool,
    ) -> Encoder {
        Encoder {
            pixels: dims
                .pixels
                .then(|| PixelEncoder::new(&(path / "pixels"), depth)),
            state: dims
                .state
                .map(|size| Mlp::new(&(path / "state"), size, units, 2, None)),
            symlog_state,
        }
    }

    // Obs with leading [N] -> [N, E]
    pub fn forward(&self, obs: &Obs) -> Tensor {
        let mut parts = Vec::with_capacity(2);
        if let Some(net) = &self.pixels {
            parts.push(net.forward(obs.pixels.as_ref().expect("pixel observations")));
        }
        if let Some(net) = &self.state {
            let state = obs.state.as_ref().expect("state observations");
            parts.push(if self.symlog_state {
                net.forward(&symlog(state))
            } else {
                net.forward(state)
            });
        }
        Tensor::cat(&parts, 1)
    }
}

/// Dense layer then four stride-2 transposed convolutions: `[N, F]` -> `[N, 3, 64, 64]`
/// (the mean image in the encoder's input space, channels first).
#[derive(Debug)]
pub struct PixelDecoder {
    linear: nn::Linear,
    deconvs: Vec<nn::ConvTranspose2D>,
    depth: i64,
}

impl PixelDecoder {
    pub fn new(path: &nn::Path, feat: i64, depth: i64) -> PixelDecoder {
        let linear = nn::linear(path / "linear", feat, 32 * depth, Default::default());
        let channels = [32 * depth, 4 * depth, 2 * depth, depth, 3];
        let kernels = [5, 5, 6, 6];
        let config = nn::ConvTransposeConfig {
            stride: 2,
            ..Default::default()
        };
        let deconvs = (0..4)
            .map(|i| {
                nn::conv_transpose2d(
                    path / format!("deconv{i}"),
                    channels[i],
                    channels[i + 1],
                    kernels[i],
                    config,
                )
            })
            .collect();
        PixelDecoder {
            linear,
            deconvs,
            depth,
        }
    }

    // [N, F] -> [N, 3, 64, 64]
    pub fn forward(&self, feat: &Tensor) -> Tensor {
        let mut x = self
            .linear
            .forward(feat)
            .reshape([-1, 32 * self.depth, 1, 1]);
        let last = self.deconvs.len() - 1;
        for (i, deconv) in self.deconvs.iter().enumerate() {
            x = deconv.forward(&x);
            if i < last {
                x = x.relu();
            }
        }
        x
    }
}

/// Decoders of the observations in use; each output is the mean of a unit-variance Normal.
#[derive(Debug)]
pub struct Decoder {
    pub pixels: Option<PixelDecoder>,
    pub state: Option<Mlp>,
}

impl Decoder {
    pub fn new(path: &nn::Path, dims: &Dims, feat: i64, units: i64, depth: i64) -> Decoder {
        Decoder {
            pixels: dims
                .pixels
                .then(|| PixelDecoder::new(&(path / "pixels"), feat, depth)),
            state: dims
                .state
                .map(|size| Mlp::new(&(path / "state"), feat, units, 2, Some(size))),
        }
    }
}

/// Sizes of what the task provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// A
    pub action: i64,
    /// O, when state observations are in use.
    pub state: Option<i64>,
    /// Whether 64x64 pixel observations are in use.
    pub pixels: bool,
}

impl Dims {
    /// E: embedding length for conv depth `depth` and MLP width `units`.
    pub fn embed(&self, units: i64, depth: i64) -> i64 {
        let pixels = if self.pixels { 32 * depth } else { 0 };
        let state = if self.state.is_some() { units } else { 0 };
        pixels + state
    }
}

/// Tanh-transformed Normal policy: 4 ELU layers then `[2A]` (mean and std before squashing).
#[derive(Debug)]
pub struct Actor {
    net: Mlp,
    action: i64,
}

impl Actor {
    pub fn new(path: &nn::Path, feat: i64, units: i64, action: i64) -> Actor {
        Actor {
            net: Mlp::new(path, feat, units, 4, Some(2 * action)),
            action,
        }
    }

    /// Pre-tanh Normal: `[N, F]` -> (mean `[N, A]`, std `[N, A]`).
    pub fn dist(&self, feat: &Tensor) -> (Tensor, Tensor) {
        let out = self.net.forward(feat);
        let parts = out.split(self.action, -1);
        let mean = (&parts[0] / 5.0).tanh() * 5.0;
        let std = (&parts[1] + ACTOR_STD_SHIFT).softplus() + 1e-4;
        (mean, std)
    }

    /// Reparameterised sample `tanh(mean + std * noise)`: `[N, F]`, noise `[N, A]` -> `[N, A]`.
    pub fn sample(&self, feat: &Tensor, noise: &Tensor) -> Tensor {
        let (mean, std) = self.dist(feat);
        (mean + std * noise).tanh()
    }

    /// Single-sample estimate of the policy's entropy, `-log pi(a)`, for the sample drawn with
    /// `noise`: `[N, F]`, noise `[N, A]` -> (action `[N, A]`, entropy `[N]`). The tanh's log-Jacobian
    /// `log(1 - tanh(u)^2) = 2 (ln 2 - u - softplus(-2u))` is written so it stays finite when
    /// the action saturates.
    pub fn sample_with_entropy(&self, feat: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        let (mean, std) = self.dist(feat);
        let pre = &mean + &std * noise;
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_jacobian = ((-&pre * 2.0).softplus() + &pre - std::f64::consts::LN_2) * -2.0;
        let entropy = noise.square() * 0.5 + std.log() + half_log_2pi + log_jacobian;
        (
            pre.tanh(),
            entropy.sum_dim_intlist(-1, false, entropy.kind()),
        )
    }

    /// The deterministic action `tanh(mean)`: `[N, F]` -> `[N, A]`.
    pub fn mode(&self, feat: &Tensor) -> Tensor {
        self.dist(feat).0.tanh()
    }
}

/// Log density of a unit-variance Normal with mean `mean` at `x`, summed over the last
/// `event_dims` dimensions.
pub fn unit_normal_log_prob(mean: &Tensor, x: &Tensor, event_dims: usize) -> Tensor {
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let lp = (x - mean).square() * -0.5 - half_log_2pi;
    if event_dims == 0 {
        return lp;
    }
    let dims: Vec<i64> = (1..=event_dims as i64).map(|d| -d).collect();
    lp.sum_dim_intlist(dims.as_slice(), false, lp.kind())
}
