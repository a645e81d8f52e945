//! Test support: random checkpoints written per docs/checkpoint-format.md, and an independent
//! float64 implementation of the layer equations (plain loops) that produces the
//! `reference.safetensors` a trainer would write.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// A checkpoint to generate. Task facts (`o`, `a`) must match the `dreamer-tasks` task.
#[derive(Debug, Clone)]
pub struct Spec {
    pub task: &'static str,
    pub obs: &'static str,
    pub o: usize,
    pub a: usize,
    pub d: usize,
    pub s: usize,
    pub h: usize,
    pub u: usize,
    pub c: usize,
    pub min_std: f64,
    pub pcont: bool,
    /// `model.symlog_obs`: the state encoder sees `sign(x) ln(1 + |x|)`.
    pub symlog: bool,
    /// Recorded closed-loop steps `T`.
    pub steps: usize,
    /// Random single-step cases `N`.
    pub cases: usize,
}

impl Spec {
    /// Pendulum from state: O = 3, A = 1, tiny network.
    pub fn state() -> Spec {
        Spec {
            task: "pendulum",
            obs: "state",
            o: 3,
            a: 1,
            d: 12,
            s: 5,
            h: 10,
            u: 16,
            c: 2,
            min_std: 0.1,
            pcont: false,
            symlog: false,
            steps: 500,
            cases: 8,
        }
    }

    /// Cartpole swingup from pixels: A = 1, conv depth 2.
    pub fn pixels() -> Spec {
        Spec {
            task: "cartpole-swingup",
            obs: "pixels",
            o: 5,
            steps: 120,
            pcont: true,
            ..Spec::state()
        }
    }

    pub fn uses_pixels(&self) -> bool {
        self.obs != "state"
    }

    pub fn uses_state(&self) -> bool {
        self.obs != "pixels"
    }

    pub fn e(&self) -> usize {
        (if self.uses_pixels() { 32 * self.c } else { 0 })
            + if self.uses_state() { self.u } else { 0 }
    }

    pub fn f(&self) -> usize {
        self.d + self.s
    }

    /// Every tensor of the contract with its shape, written out from the tables of
    /// docs/checkpoint-format.md.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (a, d, s, h, u, c, f, e) = (
            self.a,
            self.d,
            self.s,
            self.h,
            self.u,
            self.c,
            self.f(),
            self.e(),
        );
        let mut list: Vec<(String, Vec<usize>)> = Vec::new();
        let mut lin = |name: &str, out: usize, inp: usize| {
            list.push((format!("{name}.weight"), vec![out, inp]));
            list.push((format!("{name}.bias"), vec![out]));
        };
        if self.uses_state() {
            lin("encoder.state.l0", u, self.o);
            lin("encoder.state.l1", u, u);
            lin("decoder.state.l0", u, f);
            lin("decoder.state.l1", u, u);
            lin("decoder.state.out", self.o, u);
        }
        lin("rssm.img_in", h, s + a);
        lin("rssm.img_out", h, d);
        lin("rssm.img_dist", 2 * s, h);
        lin("rssm.obs_out", h, d + e);
        lin("rssm.obs_dist", 2 * s, h);
        lin("reward.l0", u, f);
        lin("reward.l1", u, u);
        lin("reward.out", 1, u);
        lin("value.l0", u, f);
        lin("value.l1", u, u);
        lin("value.l2", u, u);
        lin("value.out", 1, u);
        if self.pcont {
            lin("pcont.l0", u, f);
            lin("pcont.l1", u, u);
            lin("pcont.l2", u, u);
            lin("pcont.out", 1, u);
        }
        lin("actor.l0", u, f);
        lin("actor.l1", u, u);
        lin("actor.l2", u, u);
        lin("actor.l3", u, u);
        lin("actor.out", 2 * a, u);
        if self.uses_pixels() {
            lin("decoder.pixels.linear", 32 * c, f);
        }
        list.push(("rssm.gru.weight_ih".into(), vec![3 * d, h]));
        list.push(("rssm.gru.bias_ih".into(), vec![3 * d]));
        list.push(("rssm.gru.weight_hh".into(), vec![3 * d, d]));
        list.push(("rssm.gru.bias_hh".into(), vec![3 * d]));
        if self.uses_pixels() {
            let depth = [3, c, 2 * c, 4 * c, 8 * c];
            for i in 0..4 {
                list.push((
                    format!("encoder.pixels.conv{i}.weight"),
                    vec![depth[i + 1], depth[i], 4, 4],
                ));
                list.push((format!("encoder.pixels.conv{i}.bias"), vec![depth[i + 1]]));
            }
            let deconv = [
                (32 * c, 4 * c, 5),
                (4 * c, 2 * c, 5),
                (2 * c, c, 6),
                (c, 3, 6),
            ];
            for (i, (inp, out, k)) in deconv.into_iter().enumerate() {
                list.push((
                    format!("decoder.pixels.deconv{i}.weight"),
                    vec![inp, out, k, k],
                ));
                list.push((format!("decoder.pixels.deconv{i}.bias"), vec![out]));
            }
        }
        list
    }
}

pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Weights like torch's default init: uniform in `±1/sqrt(fan_in)`, biases included.
pub fn random_weights(spec: &Spec, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tensors = spec.tensors();
    let shapes: BTreeMap<String, Vec<usize>> = tensors.iter().cloned().collect();
    tensors
        .into_iter()
        .map(|(name, shape)| {
            // A bias shares its weight's bound.
            let weight_name = match name.strip_suffix(".bias") {
                Some(prefix) => format!("{prefix}.weight"),
                None => name.replace(".bias_", ".weight_"),
            };
            let weight = shapes[&weight_name].clone();
            let fan_in: usize = if name.contains("deconv") {
                weight[0] * weight[2] * weight[3]
            } else {
                weight[1..].iter().product()
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            (name, (shape, data))
        })
        .collect()
}

// ---- float64 reference implementation --------------------------------------------------

pub struct Reference<'w> {
    pub spec: Spec,
    pub w: &'w Weights,
}

fn elu(x: f64) -> f64 {
    if x > 0.0 { x } else { x.exp_m1() }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Posterior/prior outputs of one RSSM step.
#[derive(Debug, Clone)]
pub struct Step {
    pub h: Vec<f64>,
    pub s: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub prior_mean: Vec<f64>,
    pub prior_std: Vec<f64>,
}

impl Reference<'_> {
    fn param(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        &self.w[name]
    }

    /// `y = x W^T + b`, W `[out, in]`.
    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (shape, w) = self.param(&format!("{name}.weight"));
        let (_, b) = self.param(&format!("{name}.bias"));
        let (out, inp) = (shape[0], shape[1]);
        assert_eq!(x.len(), inp, "{name}");
        (0..out)
            .map(|o| {
                let mut acc = f64::from(b[o]);
                for i in 0..inp {
                    acc += f64::from(w[o * inp + i]) * x[i];
                }
                acc
            })
            .collect()
    }

    fn linear_elu(&self, name: &str, x: &[f64]) -> Vec<f64> {
        self.linear(name, x).into_iter().map(elu).collect()
    }

    /// Valid convolution, stride 2, kernel 4, relu. x: [cin, n, n] -> [cout, m, m].
    fn conv(&self, name: &str, x: &[f64], n: usize) -> (Vec<f64>, usize) {
        let (shape, w) = self.param(&format!("{name}.weight"));
        let (_, b) = self.param(&format!("{name}.bias"));
        let (cout, cin, k) = (shape[0], shape[1], shape[2]);
        let m = (n - k) / 2 + 1;
        let mut y = vec![0.0; cout * m * m];
        for co in 0..cout {
            for oy in 0..m {
                for ox in 0..m {
                    let mut acc = f64::from(b[co]);
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let wv = w[((co * cin + ci) * k + ky) * k + kx];
                                acc += f64::from(wv) * x[(ci * n + 2 * oy + ky) * n + 2 * ox + kx];
                            }
                        }
                    }
                    y[(co * m + oy) * m + ox] = acc.max(0.0);
                }
            }
        }
        (y, m)
    }

    /// Embedding: pixels `[64, 64, 3]` u8 HWC and/or the state vector.
    pub fn encoder(&self, pixels: Option<&[u8]>, state: Option<&[f32]>) -> Vec<f64> {
        let mut e = Vec::new();
        if let Some(p) = pixels {
            let mut x = vec![0.0; 3 * 64 * 64];
            for y in 0..64 {
                for xx in 0..64 {
                    for c in 0..3 {
                        x[(c * 64 + y) * 64 + xx] =
                            f64::from(p[(y * 64 + xx) * 3 + c]) / 255.0 - 0.5;
                    }
                }
            }
            let mut n = 64;
            for i in 0..4 {
                (x, n) = self.conv(&format!("encoder.pixels.conv{i}"), &x, n);
            }
            e.extend(x);
        }
        if let Some(st) = state {
            let x: Vec<f64> = st
                .iter()
                .map(|&v| f64::from(v))
                .map(|v| {
                    if self.spec.symlog {
                        v.signum() * v.abs().ln_1p()
                    } else {
                        v
                    }
                })
                .collect();
            let x = self.linear_elu("encoder.state.l0", &x);
            e.extend(self.linear_elu("encoder.state.l1", &x));
        }
        e
    }

    fn gaussian(&self, name: &str, y: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let out = self.linear(name, y);
        let s = self.spec.s;
        let mean = out[..s].to_vec();
        let std = out[s..]
            .iter()
            .map(|&r| softplus(r) + self.spec.min_std)
            .collect();
        (mean, std)
    }

    fn transition(&self, h: &[f64], s: &[f64], a: &[f64]) -> Vec<f64> {
        let sa: Vec<f64> = s.iter().chain(a).copied().collect();
        let x = self.linear_elu("rssm.img_in", &sa);
        let d = self.spec.d;
        let gates = |wname: &str, bname: &str, v: &[f64]| {
            let (shape, w) = self.param(wname);
            let (_, b) = self.param(bname);
            let inp = shape[1];
            (0..3 * d)
                .map(|o| {
                    f64::from(b[o])
                        + (0..inp)
                            .map(|i| f64::from(w[o * inp + i]) * v[i])
                            .sum::<f64>()
                })
                .collect::<Vec<f64>>()
        };
        let gi = gates("rssm.gru.weight_ih", "rssm.gru.bias_ih", &x);
        let gh = gates("rssm.gru.weight_hh", "rssm.gru.bias_hh", h);
        (0..d)
            .map(|j| {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[d + j] + gh[d + j]);
                let n = (gi[2 * d + j] + r * gh[2 * d + j]).tanh();
                (1.0 - z) * n + z * h[j]
            })
            .collect()
    }

    /// Prior step: (h', s', mean, std).
    pub fn img_step(&self, h: &[f64], s: &[f64], a: &[f64], noise: &[f64]) -> Step {
        let h2 = self.transition(h, s, a);
        let y = self.linear_elu("rssm.img_out", &h2);
        let (mean, std) = self.gaussian("rssm.img_dist", &y);
        let s2 = sample(&mean, &std, noise);
        Step {
            h: h2,
            s: s2,
            prior_mean: mean.clone(),
            prior_std: std.clone(),
            mean,
            std,
        }
    }

    /// Posterior step.
    pub fn obs_step(&self, h: &[f64], s: &[f64], a: &[f64], e: &[f64], noise: &[f64]) -> Step {
        let prior = self.img_step(h, s, a, &vec![0.0; self.spec.s]);
        let he: Vec<f64> = prior.h.iter().chain(e).copied().collect();
        let y = self.linear_elu("rssm.obs_out", &he);
        let (mean, std) = self.gaussian("rssm.obs_dist", &y);
        Step {
            s: sample(&mean, &std, noise),
            h: prior.h,
            mean,
            std,
            prior_mean: prior.mean,
            prior_std: prior.std,
        }
    }

    /// (mode, mean, std) of the tanh-Normal policy.
    pub fn actor(&self, feat: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut x = feat.to_vec();
        for i in 0..4 {
            x = self.linear_elu(&format!("actor.l{i}"), &x);
        }
        let out = self.linear("actor.out", &x);
        let a = self.spec.a;
        let shift = (5.0f64.exp() - 1.0).ln();
        let mean: Vec<f64> = out[..a].iter().map(|&m| 5.0 * (m / 5.0).tanh()).collect();
        let std = out[a..]
            .iter()
            .map(|&r| softplus(r + shift) + 1e-4)
            .collect();
        let mode = mean.iter().map(|m| m.tanh()).collect();
        (mode, mean, std)
    }
}

fn sample(mean: &[f64], std: &[f64], noise: &[f64]) -> Vec<f64> {
    mean.iter()
        .zip(std)
        .zip(noise)
        .map(|((m, s), n)| m + s * n)
        .collect()
}

pub fn kl(step: &Step) -> f64 {
    (0..step.mean.len())
        .map(|i| {
            let (mq, sq, mp, sp) = (
                step.mean[i],
                step.std[i],
                step.prior_mean[i],
                step.prior_std[i],
            );
            (sp / sq).ln() + (sq * sq + (mq - mp) * (mq - mp)) / (2.0 * sp * sp) - 0.5
        })
        .sum()
}

// ---- files -----------------------------------------------------------------------------

enum Data {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Tensors to write with safetensors.
#[derive(Default)]
pub struct TensorFile {
    tensors: BTreeMap<String, (Vec<usize>, Data)>,
}

impl TensorFile {
    pub fn f32(&mut self, name: &str, shape: &[usize], data: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), Data::F32(data)));
    }

    pub fn f64(&mut self, name: &str, shape: &[usize], data: &[f64]) {
        self.f32(name, shape, data.iter().map(|&x| x as f32).collect());
    }

    pub fn u8(&mut self, name: &str, shape: &[usize], data: Vec<u8>) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), Data::U8(data)));
    }

    pub fn remove(&mut self, name: &str) {
        self.tensors.remove(name);
    }

    pub fn write(&self, path: &Path) {
        let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, data))| match data {
                Data::F32(v) => (
                    name.clone(),
                    Dtype::F32,
                    shape.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Data::U8(v) => (name.clone(), Dtype::U8, shape.clone(), v.clone()),
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, dt, shape, b)| (n.clone(), TensorView::new(*dt, shape.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
    }
}

pub fn weights_file(weights: &Weights) -> TensorFile {
    let mut file = TensorFile::default();
    for (name, (shape, data)) in weights {
        file.f32(name, shape, data.clone());
    }
    file
}

pub fn config_toml(spec: &Spec) -> String {
    format!(
        "[run]\ntask = \"{}\"\nobs_mode = \"{}\"\naction_repeat = 2\nseed = 0\nsteps = 1000\nenvs = 1\n\n\
         [model]\ndeter = {}\nstoch = {}\nhidden = {}\nunits = {}\ncnn_depth = {}\nmin_std = {}\npcont = {}\nsymlog_obs = {}\n\n\
         [train]\nbatch = 4\nmodel_lr = 6e-4\n",
        spec.task,
        spec.obs,
        spec.d,
        spec.s,
        spec.h,
        spec.u,
        spec.c,
        spec.min_std,
        spec.pcont,
        spec.symlog
    )
}

pub const STATE_JSON: &str = r#"{"format_version": 1, "counters": {"env_steps": 12000, "updates": 340, "episodes": 12}, "eval_return": 123.5}"#;

/// The reference file a trainer writes: random single-step cases and a closed-loop trajectory
/// of the deterministic policy over random observations.
pub fn reference_file(spec: &Spec, weights: &Weights, seed: u64) -> TensorFile {
    let model = Reference {
        spec: spec.clone(),
        w: weights,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = |n: usize, scale: f64| -> Vec<f64> {
        (0..n)
            .map(|_| rng.sample::<f64, _>(StandardNormal) * scale)
            .collect()
    };
    let (n, d, s, a, e) = (spec.cases, spec.d, spec.s, spec.a, spec.e());
    let mut file = TensorFile::default();

    // Random cases.
    let rh: Vec<f64> = normal(n * d, 1.0).into_iter().map(f64::tanh).collect();
    let rs = normal(n * s, 1.0);
    let ra: Vec<f64> = normal(n * a, 1.0).into_iter().map(f64::tanh).collect();
    let rembed = normal(n * e, 1.0);
    let rnoise = normal(n * s, 1.0);
    let robs_state = normal(n * spec.o, 1.0);
    let mut pixel_rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let mut pixels = |count: usize| -> Vec<u8> {
        (0..count * 64 * 64 * 3)
            .map(|_| pixel_rng.random())
            .collect()
    };
    let robs_pixels = pixels(n);
    // Round the inputs to f32 first: the graphs see exactly these values.
    let f = |v: &[f64]| -> Vec<f64> { v.iter().map(|&x| f64::from(x as f32)).collect() };
    let (rh, rs, ra, rembed, rnoise, robs_state) = (
        f(&rh),
        f(&rs),
        f(&ra),
        f(&rembed),
        f(&rnoise),
        f(&robs_state),
    );
    file.f64("rand.h", &[n, d], &rh);
    file.f64("rand.s", &[n, s], &rs);
    file.f64("rand.a", &[n, a], &ra);
    file.f64("rand.embed", &[n, e], &rembed);
    file.f64("rand.noise", &[n, s], &rnoise);
    let mut out: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in 0..n {
        let row = |v: &[f64], w: usize| v[i * w..(i + 1) * w].to_vec();
        let state_obs: Vec<f32> = row(&robs_state, spec.o).iter().map(|&x| x as f32).collect();
        let emb = model.encoder(
            spec.uses_pixels()
                .then(|| &robs_pixels[i * 12288..(i + 1) * 12288]),
            spec.uses_state().then_some(state_obs.as_slice()),
        );
        out.entry("rand.encoder.embed").or_default().extend(emb);
        let img = model.img_step(&row(&rh, d), &row(&rs, s), &row(&ra, a), &row(&rnoise, s));
        out.entry("rand.img_step.h").or_default().extend(&img.h);
        out.entry("rand.img_step.s").or_default().extend(&img.s);
        out.entry("rand.img_step.mean")
            .or_default()
            .extend(&img.mean);
        out.entry("rand.img_step.std").or_default().extend(&img.std);
        let post = model.obs_step(
            &row(&rh, d),
            &row(&rs, s),
            &row(&ra, a),
            &row(&rembed, e),
            &row(&rnoise, s),
        );
        out.entry("rand.obs_step.h").or_default().extend(&post.h);
        out.entry("rand.obs_step.s").or_default().extend(&post.s);
        out.entry("rand.obs_step.mean")
            .or_default()
            .extend(&post.mean);
        out.entry("rand.obs_step.std")
            .or_default()
            .extend(&post.std);
        out.entry("rand.obs_step.prior_mean")
            .or_default()
            .extend(&post.prior_mean);
        out.entry("rand.obs_step.prior_std")
            .or_default()
            .extend(&post.prior_std);
        let feat: Vec<f64> = row(&rh, d).into_iter().chain(row(&rs, s)).collect();
        let (mode, mean, std) = model.actor(&feat);
        out.entry("rand.actor.mode").or_default().extend(mode);
        out.entry("rand.actor.mean").or_default().extend(mean);
        out.entry("rand.actor.std").or_default().extend(std);
    }
    for (name, v) in &out {
        let width = v.len() / n;
        file.f64(name, &[n, width], v);
    }
    if spec.uses_pixels() {
        file.u8("rand.obs.pixels", &[n, 64, 64, 3], robs_pixels);
    }
    if spec.uses_state() {
        file.f64("rand.obs.state", &[n, spec.o], &robs_state);
    }

    // Closed-loop trajectory.
    let t_len = spec.steps;
    let traj_state = f(&normal(t_len * spec.o, 1.0));
    let traj_pixels = pixels(t_len);
    let (mut h, mut st, mut act) = (vec![0.0; d], vec![0.0; s], vec![0.0; a]);
    let mut traj: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in 0..t_len {
        let state_obs: Vec<f32> = traj_state[t * spec.o..(t + 1) * spec.o]
            .iter()
            .map(|&x| x as f32)
            .collect();
        let emb = model.encoder(
            spec.uses_pixels()
                .then(|| &traj_pixels[t * 12288..(t + 1) * 12288]),
            spec.uses_state().then_some(state_obs.as_slice()),
        );
        let post = model.obs_step(&h, &st, &act, &emb, &vec![0.0; s]);
        h = post.h.clone();
        st = post.s.clone();
        let feat: Vec<f64> = h.iter().chain(&st).copied().collect();
        act = model.actor(&feat).0;
        traj.entry("traj.h").or_default().extend(&h);
        traj.entry("traj.s").or_default().extend(&st);
        traj.entry("traj.action").or_default().extend(&act);
        traj.entry("traj.post_mean").or_default().extend(&post.mean);
        traj.entry("traj.post_std").or_default().extend(&post.std);
        traj.entry("traj.prior_mean")
            .or_default()
            .extend(&post.prior_mean);
        traj.entry("traj.prior_std")
            .or_default()
            .extend(&post.prior_std);
        traj.entry("traj.surprise").or_default().push(kl(&post));
    }
    for (name, v) in &traj {
        if *name == "traj.surprise" {
            file.f64(name, &[t_len], v);
        } else {
            file.f64(name, &[t_len, v.len() / t_len], v);
        }
    }
    if spec.uses_pixels() {
        file.u8("traj.obs.pixels", &[t_len, 64, 64, 3], traj_pixels);
    }
    if spec.uses_state() {
        file.f64("traj.obs.state", &[t_len, spec.o], &traj_state);
    }
    file
}

/// Writes a complete checkpoint folder (weights, config, state, reference) and returns it.
pub fn write_checkpoint(dir: &Path, spec: &Spec, seed: u64) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let weights = random_weights(spec, seed);
    weights_file(&weights).write(&dir.join("model.safetensors"));
    fs::write(dir.join("config.toml"), config_toml(spec)).unwrap();
    fs::write(dir.join("state.json"), STATE_JSON).unwrap();
    reference_file(spec, &weights, seed + 100).write(&dir.join("reference.safetensors"));
    dir.to_path_buf()
}

/// The `env` record (`state.json`) the trainer writes for `spec` run as the bridged task
/// `task` (`gym:...` / `dmc:...`): one array of `spec.o` state values, `spec.a` actions in
/// [-2, 2], 0.05 s steps, 200 per episode.
pub fn env_record(spec: &Spec, task: &str) -> serde_json::Value {
    let repeat = 2;
    serde_json::json!({
        "task": task,
        "kwargs": {"g": 9.81},
        "obs_mode": spec.obs,
        "action_repeat": repeat,
        "state_size": spec.o,
        "state_fields": (0..spec.o).map(|i| format!("obs[{i}]")).collect::<Vec<_>>(),
        "state_layout": [{"name": "obs", "shape": [spec.o], "dtype": "float32"}],
        "action_size": spec.a,
        "action_low": vec![-2.0; spec.a],
        "action_high": vec![2.0; spec.a],
        "action_space": format!("Box(-2.0, 2.0, ({},), float32)", spec.a),
        "pixels": spec.uses_pixels().then_some("render:rgb_array"),
        "physics_dt": 0.05,
        "control_period_s": 0.05 * f64::from(repeat),
        "max_env_steps": 200,
        "max_decisions": 100,
        "versions": {"gymnasium": "1.4.0", "python": "3.11.7"},
    })
}

/// A complete checkpoint of `spec` trained on the bridged task `task`, with `record` as the
/// `env` of its `state.json` (None: no record).
pub fn write_bridged_checkpoint(
    dir: &Path,
    spec: &Spec,
    seed: u64,
    task: &str,
    record: Option<serde_json::Value>,
) -> PathBuf {
    write_checkpoint(dir, spec, seed);
    let config = config_toml(spec).replacen(
        &format!("task = \"{}\"", spec.task),
        &format!(
            "task = \"{task}\"\nenv_kwargs = '{{\"g\": 9.81}}'\npython = \"/opt/robot/bin/python\""
        ),
        1,
    );
    fs::write(dir.join("config.toml"), config).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(STATE_JSON).unwrap();
    if let Some(record) = record {
        state["env"] = record;
    }
    fs::write(dir.join("state.json"), state.to_string()).unwrap();
    dir.to_path_buf()
}

/// `<repo>/.deps/python`, where scripts/fetch-deps installs onnx and onnxruntime.
pub fn deps_python() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/python");
    assert!(
        dir.join("onnx").is_dir() && dir.join("onnxruntime").is_dir(),
        "{} has no onnx/onnxruntime Python packages: run scripts/fetch-deps first",
        dir.display()
    );
    dir
}
