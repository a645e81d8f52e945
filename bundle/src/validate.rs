//! Sense checks of manifest values against each other and against the graphs' declared
//! input and output shapes. No file is read: this runs on the parsed manifest alone.
//!
//! Each error names the field and its value, and for a shape the graph tensor it disagrees
//! with, e.g. `latent.deter is 99 but graph rssm_img_step input h is [1, 128]`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::open::unsafe_name;
use crate::{
    ACTOR, BundleError, DType, ENCODER, ENVIRONMENT_SOURCE, ENVIRONMENT_VERSION, GRAPH_ROLES,
    Manifest, POLICY_OBSERVE, POLICY_STEP, RSSM_IMG_STEP, RSSM_OBS_STEP, TensorInfo, names,
};

/// Graphs every bundle must have; `policy_observe` is optional (older bundles lack it).
const REQUIRED_GRAPHS: [&str; 5] = [ENCODER, RSSM_OBS_STEP, RSSM_IMG_STEP, ACTOR, POLICY_STEP];

/// Checks every value of `manifest`; `origin` names the manifest in errors.
pub(crate) fn validate(manifest: &Manifest, origin: &Path) -> Result<(), BundleError> {
    let v = Validator { origin };
    v.scalars(manifest)?;
    v.action(manifest)?;
    v.files(manifest)?;
    v.graphs(manifest)?;
    v.environment(manifest)?;
    // Last: the contract refers to graphs and sizes checked above.
    manifest.contract.validate(manifest, origin)
}

/// One dimension a tensor must have, and the manifest field(s) it comes from.
#[derive(Debug, Clone)]
struct Dim {
    value: i64,
    field: String,
}

fn dim(field: &str, value: impl Into<i64>) -> Dim {
    Dim {
        value: value.into(),
        field: field.to_string(),
    }
}

struct Validator<'a> {
    origin: &'a Path,
}

impl Validator<'_> {
    fn bad(&self, field: impl Into<String>, message: String) -> BundleError {
        BundleError::Invalid {
            path: self.origin.to_path_buf(),
            field: field.into(),
            message,
        }
    }

    fn at_least_one(&self, field: &str, value: u64) -> Result<(), BundleError> {
        if value < 1 {
            return Err(self.bad(field, format!("is {value} but must be at least 1")));
        }
        Ok(())
    }

    /// A bridged task's `environment` names the task, covers the state vector, and is the
    /// task's definition; a built-in task has none.
    fn environment(&self, m: &Manifest) -> Result<(), BundleError> {
        let definition = &m.contract.task_definition;
        let Some(env) = &m.environment else {
            if definition.source == ENVIRONMENT_SOURCE {
                return Err(self.bad(
                    "contract.task_definition.source",
                    format!("is `{ENVIRONMENT_SOURCE}` but the manifest has no `environment`"),
                ));
            }
            return Ok(());
        };
        if definition.source != ENVIRONMENT_SOURCE || definition.version != ENVIRONMENT_VERSION {
            return Err(self.bad(
                "contract.task_definition",
                format!(
                    "is {} version {} but a manifest with an `environment` must say \
                     {ENVIRONMENT_SOURCE} version {ENVIRONMENT_VERSION}",
                    definition.source, definition.version
                ),
            ));
        }
        let prefix = match env.package.as_str() {
            "gymnasium" => "gym:",
            "dm_control" => "dmc:",
            other => {
                return Err(self.bad(
                    "environment.package",
                    format!("is `{other}`; expected gymnasium or dm_control"),
                ));
            }
        };
        if m.task.name != format!("{prefix}{}", env.id) {
            return Err(self.bad(
                "environment.id",
                format!(
                    "is `{}` ({}) but task.name is `{}`",
                    env.id, env.package, m.task.name
                ),
            ));
        }
        self.at_least_one(
            "environment.episode_env_steps",
            env.episode_env_steps.into(),
        )?;
        let layout: usize = env
            .state_layout
            .iter()
            .map(|leaf| leaf.shape.iter().product::<usize>())
            .sum();
        if let Some(state) = &m.observation.state
            && layout != state.size as usize
        {
            return Err(self.bad(
                "environment.state_layout",
                format!(
                    "holds {layout} values but observation.state.size is {}",
                    state.size
                ),
            ));
        }
        if m.observation.pixels.is_some() != env.pixels.is_some() {
            return Err(self.bad(
                "environment.pixels",
                format!(
                    "is {:?} but the bundle {} pixels",
                    env.pixels,
                    if m.observation.pixels.is_some() {
                        "takes"
                    } else {
                        "takes no"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Sizes, counts and rates that stand on their own.
    fn scalars(&self, m: &Manifest) -> Result<(), BundleError> {
        self.at_least_one("batch", m.batch.into())?;
        self.at_least_one("task.action_repeat", m.task.action_repeat.into())?;
        self.at_least_one("task.episode_decisions", m.task.episode_decisions.into())?;
        let period = m.task.control_period_s;
        if !(period.is_finite() && period > 0.0) {
            return Err(self.bad(
                "task.control_period_s",
                format!("is {period} but must be a finite number of seconds above 0"),
            ));
        }
        if m.task.name.trim().is_empty() {
            return Err(self.bad("task.name", "is empty".to_string()));
        }
        self.at_least_one("latent.deter", m.latent.deter.into())?;
        self.at_least_one("latent.stoch", m.latent.stoch.into())?;
        self.at_least_one("latent.embed", m.latent.embed.into())?;
        let classes = m.latent.classes;
        if classes == 1 || (classes > 1 && !m.latent.stoch.is_multiple_of(classes)) {
            return Err(self.bad(
                "latent.classes",
                format!(
                    "is {classes} but must be 0 (Gaussian) or at least 2 and divide latent.stoch ({})",
                    m.latent.stoch
                ),
            ));
        }
        if m.latent.initial != "zeros" {
            return Err(self.bad(
                "latent.initial",
                format!("is `{}` but only `zeros` is defined", m.latent.initial),
            ));
        }
        let min_std = m.latent.min_std;
        if !(min_std.is_finite() && min_std >= 0.0) {
            return Err(self.bad(
                "latent.min_std",
                format!("is {min_std} but must be finite and not negative"),
            ));
        }
        if !matches!(m.precision.as_str(), "float32" | "float16" | "int8") {
            return Err(self.bad(
                "precision",
                format!(
                    "is `{}` but must be `float32`, `float16` or `int8`",
                    m.precision
                ),
            ));
        }
        if (m.precision == "int8") != m.quantization.is_some() {
            return Err(self.bad(
                "quantization",
                format!(
                    "is {} but precision is `{}` (present exactly for `int8`)",
                    if m.quantization.is_some() {
                        "present"
                    } else {
                        "absent"
                    },
                    m.precision
                ),
            ));
        }
        for (field, value) in [("opset", m.opset), ("ir_version", m.ir_version)] {
            if value < 1 {
                return Err(self.bad(field, format!("is {value} but must be at least 1")));
            }
        }
        let obs = &m.observation;
        if obs.pixels.is_none() && obs.state.is_none() {
            return Err(self.bad(
                "observation",
                "has neither `pixels` nor `state`".to_string(),
            ));
        }
        if let Some(p) = &obs.pixels {
            self.at_least_one("observation.pixels.height", p.height.into())?;
            self.at_least_one("observation.pixels.width", p.width.into())?;
            self.at_least_one("observation.pixels.channels", p.channels.into())?;
            if p.layout != "HWC" {
                return Err(self.bad(
                    "observation.pixels.layout",
                    format!("is `{}` but only `HWC` is defined", p.layout),
                ));
            }
        }
        if let Some(s) = &obs.state {
            self.at_least_one("observation.state.size", s.size.into())?;
            if s.fields.len() != s.size as usize {
                return Err(self.bad(
                    "observation.state.fields",
                    format!(
                        "has {} names {:?} but observation.state.size is {}",
                        s.fields.len(),
                        s.fields,
                        s.size
                    ),
                ));
            }
        }
        if let Some(r) = m.training.eval_return
            && !r.is_finite()
        {
            return Err(self.bad("training.eval_return", format!("is {r}, not finite")));
        }
        Ok(())
    }

    /// Bounds: one per action entry, finite, low below high.
    fn action(&self, m: &Manifest) -> Result<(), BundleError> {
        let a = &m.action;
        self.at_least_one("action.size", a.size.into())?;
        let arrays = [
            ("action.low", &a.low),
            ("action.high", &a.high),
            ("action.physical_low", &a.physical_low),
            ("action.physical_high", &a.physical_high),
        ];
        for (field, values) in arrays {
            if values.len() != a.size as usize {
                return Err(self.bad(
                    field,
                    format!(
                        "has {} values {values:?} but action.size is {}",
                        values.len(),
                        a.size
                    ),
                ));
            }
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                return Err(self.bad(
                    format!("{field}[{i}]"),
                    format!("is {}, not finite", values[i]),
                ));
            }
        }
        for (low_field, low, high_field, high) in [
            ("action.low", &a.low, "action.high", &a.high),
            (
                "action.physical_low",
                &a.physical_low,
                "action.physical_high",
                &a.physical_high,
            ),
        ] {
            if let Some(i) = (0..low.len()).find(|&i| low[i] >= high[i]) {
                return Err(self.bad(
                    format!("{low_field}[{i}]"),
                    format!(
                        "is {} but must be below {high_field}[{i}] = {}",
                        low[i], high[i]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// File names stay inside the bundle, hashes are sha256 hex, every graph is listed.
    fn files(&self, m: &Manifest) -> Result<(), BundleError> {
        for (name, hash) in &m.files {
            if let Some(reason) = unsafe_name(name) {
                return Err(self.bad(format!("files.{name:?}"), format!("is refused: {reason}")));
            }
            if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(self.bad(
                    format!("files.{name:?}"),
                    format!("is {hash:?}, not a lowercase hex sha256"),
                ));
            }
        }
        for (role, graph) in &m.graphs {
            let field = format!("graphs.{role}.file");
            if let Some(reason) = unsafe_name(&graph.file) {
                return Err(self.bad(field, format!("{:?} is refused: {reason}", graph.file)));
            }
            if !m.files.contains_key(&graph.file) {
                return Err(self.bad(
                    field,
                    format!(
                        "is {:?}, which `files` does not list, so its sha256 cannot be checked",
                        graph.file
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every required graph exists, and each known graph's tensors have the dtypes and shapes
    /// the other fields imply.
    fn graphs(&self, m: &Manifest) -> Result<(), BundleError> {
        for role in REQUIRED_GRAPHS {
            if !m.graphs.contains_key(role) {
                return Err(self.bad(
                    "graphs",
                    format!("has no `{role}` graph (it has {:?})", m.graphs.keys()),
                ));
            }
        }
        // In pipeline order (encoder first, the fused graphs last), so a wrong size is blamed
        // on the graph that introduces it and on its own field.
        let mut ordered: Vec<(&String, &crate::GraphInfo)> = m.graphs.iter().collect();
        ordered.sort_by_key(|(role, _)| {
            GRAPH_ROLES
                .iter()
                .position(|r| r == role)
                .unwrap_or(GRAPH_ROLES.len())
        });
        for (role, graph) in ordered {
            for (kind, list) in [("input", &graph.inputs), ("output", &graph.outputs)] {
                let mut seen = BTreeSet::new();
                for t in list {
                    if !seen.insert(t.name.as_str()) {
                        return Err(self.bad(
                            format!("graphs.{role}.{kind}s"),
                            format!("lists `{}` twice", t.name),
                        ));
                    }
                }
            }
            if let Some((inputs, outputs)) = expected(m, role) {
                self.tensors(role, "input", &graph.inputs, &inputs)?;
                self.tensors(role, "output", &graph.outputs, &outputs)?;
            }
        }
        Ok(())
    }

    /// `actual` has exactly the tensors of `expected`, each with its dtype and shape.
    fn tensors(
        &self,
        role: &str,
        kind: &str,
        actual: &[TensorInfo],
        expected: &[(&str, DType, Vec<Dim>)],
    ) -> Result<(), BundleError> {
        let list_field = format!("graphs.{role}.{kind}s");
        for t in actual {
            if !expected.iter().any(|(name, ..)| *name == t.name) {
                return Err(self.bad(
                    &list_field,
                    format!(
                        "has {kind} `{}`, which a `{role}` graph of this manifest does not take",
                        t.name
                    ),
                ));
            }
        }
        for (name, dtype, dims) in expected {
            let Some(t) = actual.iter().find(|t| t.name == *name) else {
                return Err(self.bad(&list_field, format!("lacks {kind} `{name}`")));
            };
            if t.dtype != *dtype {
                return Err(self.bad(
                    format!("{list_field}.{name}.dtype"),
                    format!("is {:?} but must be {dtype:?}", t.dtype),
                ));
            }
            if t.shape.len() != dims.len() {
                let fields: Vec<&str> = dims.iter().map(|d| d.field.as_str()).collect();
                let values: Vec<i64> = dims.iter().map(|d| d.value).collect();
                return Err(self.bad(
                    format!("{list_field}.{name}.shape"),
                    format!("is {:?} but must be {fields:?} = {values:?}", t.shape),
                ));
            }
            if let Some(d) = dims.iter().zip(&t.shape).find(|(d, s)| d.value != **s) {
                return Err(self.bad(
                    &d.0.field,
                    format!(
                        "is {} but graph {role} {kind} {name} is {:?}",
                        d.0.value, t.shape
                    ),
                ));
            }
        }
        Ok(())
    }
}

type Tensors = Vec<(&'static str, DType, Vec<Dim>)>;

/// The inputs and outputs graph `role` must have given the manifest's sizes (the table in
/// [`crate::names`]), or `None` for a role this build does not know.
fn expected(m: &Manifest, role: &str) -> Option<(Tensors, Tensors)> {
    let b = || dim("batch", m.batch);
    let d = || dim("latent.deter", m.latent.deter);
    let s = || dim("latent.stoch", m.latent.stoch);
    let e = || dim("latent.embed", m.latent.embed);
    let a = || dim("action.size", m.action.size);
    let f = DType::Float32;
    let mut obs: Tensors = Vec::new();
    if let Some(p) = &m.observation.pixels {
        obs.push((
            names::OBS_PIXELS,
            DType::Uint8,
            vec![
                b(),
                dim("observation.pixels.height", p.height),
                dim("observation.pixels.width", p.width),
                dim("observation.pixels.channels", p.channels),
            ],
        ));
    }
    if let Some(st) = &m.observation.state {
        obs.push((
            names::OBS_STATE,
            f,
            vec![b(), dim("observation.state.size", st.size)],
        ));
    }
    let with_obs = |rest: Tensors| obs.iter().cloned().chain(rest).collect::<Tensors>();
    Some(match role {
        ENCODER => (obs.clone(), vec![(names::EMBED, f, vec![b(), e()])]),
        RSSM_OBS_STEP => (
            vec![
                (names::H, f, vec![b(), d()]),
                (names::S, f, vec![b(), s()]),
                (names::PREV_ACTION, f, vec![b(), a()]),
                (names::EMBED, f, vec![b(), e()]),
                (names::NOISE, f, vec![b(), s()]),
            ],
            vec![
                (names::H_NEXT, f, vec![b(), d()]),
                (names::S_NEXT, f, vec![b(), s()]),
                (names::MEAN, f, vec![b(), s()]),
                (names::STD, f, vec![b(), s()]),
                (names::PRIOR_MEAN, f, vec![b(), s()]),
                (names::PRIOR_STD, f, vec![b(), s()]),
            ],
        ),
        RSSM_IMG_STEP => (
            vec![
                (names::H, f, vec![b(), d()]),
                (names::S, f, vec![b(), s()]),
                (names::ACTION, f, vec![b(), a()]),
                (names::NOISE, f, vec![b(), s()]),
            ],
            vec![
                (names::H_NEXT, f, vec![b(), d()]),
                (names::S_NEXT, f, vec![b(), s()]),
                (names::MEAN, f, vec![b(), s()]),
                (names::STD, f, vec![b(), s()]),
            ],
        ),
        ACTOR => (
            vec![
                (
                    names::FEAT,
                    f,
                    vec![
                        b(),
                        dim(
                            "latent.deter + latent.stoch",
                            i64::from(m.latent.deter) + i64::from(m.latent.stoch),
                        ),
                    ],
                ),
                (names::ACTION_NOISE, f, vec![b(), a()]),
            ],
            vec![
                (names::ACTION, f, vec![b(), a()]),
                (names::MEAN, f, vec![b(), a()]),
                (names::STD, f, vec![b(), a()]),
            ],
        ),
        POLICY_STEP => (
            with_obs(vec![
                (names::H, f, vec![b(), d()]),
                (names::S, f, vec![b(), s()]),
                (names::PREV_ACTION, f, vec![b(), a()]),
                (names::NOISE, f, vec![b(), s()]),
                (names::ACTION_NOISE, f, vec![b(), a()]),
            ]),
            vec![
                (names::ACTION, f, vec![b(), a()]),
                (names::H_NEXT, f, vec![b(), d()]),
                (names::S_NEXT, f, vec![b(), s()]),
                (names::SURPRISE, f, vec![b()]),
            ],
        ),
        POLICY_OBSERVE => (
            with_obs(vec![
                (names::H_NEXT, f, vec![b(), d()]),
                (names::PRIOR_MEAN, f, vec![b(), s()]),
                (names::PRIOR_STD, f, vec![b(), s()]),
                (names::NOISE, f, vec![b(), s()]),
                (names::ACTION_NOISE, f, vec![b(), a()]),
            ]),
            vec![
                (names::ACTION, f, vec![b(), a()]),
                (names::S_NEXT, f, vec![b(), s()]),
                (names::SURPRISE, f, vec![b()]),
            ],
        ),
        _ => return None,
    })
}
