//! [`Contract::validate`]: the contract against the graphs and the rest of the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{
    Contract, Fill, LINEAR_FORMULA, MappingKind, ObservationKind, OutputRef, Source, StepScheme,
};
use crate::{BundleError, DType, GraphInfo, Manifest, TensorInfo};

/// A contract error: the manifest field (a dotted path) and what is wrong with its value.
fn invalid(origin: &Path, field: String, message: String) -> BundleError {
    BundleError::Invalid {
        path: origin.to_path_buf(),
        field,
        message,
    }
}

impl Contract {
    /// Checks the contract against the rest of `manifest`: every graph and tensor it names
    /// exists with a matching dtype and shape, every input of every scheme has exactly one
    /// source, and the values it shares with other sections agree. `origin` names the
    /// manifest in errors. The loader runs it after the checks of the other sections, on
    /// which it relies (action bounds, action repeat, graph shapes).
    pub fn validate(&self, manifest: &Manifest, origin: &Path) -> Result<(), BundleError> {
        let bad =
            |field: &str, message: String| invalid(origin, format!("contract.{field}"), message);
        if self.steps.is_empty() {
            return Err(bad("steps", "lists no step scheme".to_string()));
        }
        let observed = self.observation_kinds(manifest, origin)?;
        for (name, scheme) in &self.steps {
            scheme.validate(manifest, &observed, &format!("steps.{name}"), origin)?;
        }
        let initial = match self.initial_state.value {
            Fill::Zeros => "zeros",
        };
        if manifest.latent.initial != initial {
            return Err(bad(
                "initial_state.value",
                format!(
                    "is `{initial}` but latent.initial is `{}`",
                    manifest.latent.initial
                ),
            ));
        }
        self.validate_action(origin)?;
        self.validate_timing(manifest, origin)?;
        if self.task_definition.source.is_empty() {
            return Err(bad("task_definition.source", "is empty".to_string()));
        }
        if self.task_definition.version == 0 {
            return Err(bad(
                "task_definition.version",
                "is 0; versions start at 1".to_string(),
            ));
        }
        Ok(())
    }

    /// The observations the bundle takes, after checking that `observation_encoding` covers
    /// exactly those of `observation`.
    fn observation_kinds(
        &self,
        manifest: &Manifest,
        origin: &Path,
    ) -> Result<BTreeSet<ObservationKind>, BundleError> {
        let pairs = [
            (
                "state",
                ObservationKind::State,
                manifest.observation.state.is_some(),
                self.observation_encoding.state.is_some(),
            ),
            (
                "pixels",
                ObservationKind::Pixels,
                manifest.observation.pixels.is_some(),
                self.observation_encoding.pixels.is_some(),
            ),
        ];
        let mut kinds = BTreeSet::new();
        for (name, kind, described, encoded) in pairs {
            if described != encoded {
                let message = if described {
                    format!("is null, but observation.{name} describes that observation")
                } else {
                    format!("is given, but observation.{name} is null")
                };
                return Err(invalid(
                    origin,
                    format!("contract.observation_encoding.{name}"),
                    message,
                ));
            }
            if described {
                kinds.insert(kind);
            }
        }
        if kinds.is_empty() {
            return Err(invalid(
                origin,
                "observation".to_string(),
                "describes neither state nor pixels".to_string(),
            ));
        }
        Ok(kinds)
    }

    /// The bounds themselves (sizes, finite, low below high) are checked with the rest of
    /// `action` before the contract; only the mapping is the contract's.
    fn validate_action(&self, origin: &Path) -> Result<(), BundleError> {
        let mapping = &self.action_mapping;
        let expected = match mapping.kind {
            MappingKind::Linear => LINEAR_FORMULA,
        };
        if mapping.formula != expected {
            return Err(invalid(
                origin,
                "contract.action_mapping.formula".to_string(),
                format!("is `{}`, linear means `{expected}`", mapping.formula),
            ));
        }
        Ok(())
    }

    fn validate_timing(&self, manifest: &Manifest, origin: &Path) -> Result<(), BundleError> {
        let dt = self.timing.physics_step_s;
        if !(dt.is_finite() && dt > 0.0) {
            return Err(invalid(
                origin,
                "contract.timing.physics_step_s".to_string(),
                format!("is {dt}; need a positive number of seconds"),
            ));
        }
        let task = &manifest.task;
        let period = dt * f64::from(task.action_repeat);
        // Both are written from the same float64 product; allow for a reader's rounding.
        if (task.control_period_s - period).abs() > 1e-9 * period {
            return Err(invalid(
                origin,
                "task.control_period_s".to_string(),
                format!(
                    "is {}, but contract.timing.physics_step_s {dt} * task.action_repeat {} = {period}",
                    task.control_period_s, task.action_repeat
                ),
            ));
        }
        Ok(())
    }
}

impl StepScheme {
    fn validate(
        &self,
        manifest: &Manifest,
        observed: &BTreeSet<ObservationKind>,
        field: &str,
        origin: &Path,
    ) -> Result<(), BundleError> {
        let bad = |sub: &str, message: String| {
            invalid(origin, format!("contract.{field}.{sub}"), message)
        };
        if self.runs.is_empty() {
            return Err(bad("runs", "is empty".to_string()));
        }
        let mut graphs: BTreeMap<&str, (usize, &GraphInfo)> = BTreeMap::new();
        for (position, role) in self.runs.iter().enumerate() {
            let graph = manifest.graphs.get(role).ok_or_else(|| {
                bad(
                    &format!("runs[{position}]"),
                    format!("names `{role}`, which is not among the manifest's graphs"),
                )
            })?;
            if graphs.insert(role, (position, graph)).is_some() {
                return Err(bad(
                    &format!("runs[{position}]"),
                    format!("runs `{role}` twice"),
                ));
            }
        }
        if let Some(extra) = self
            .inputs
            .keys()
            .find(|g| !graphs.contains_key(g.as_str()))
        {
            return Err(bad(
                &format!("inputs.{extra}"),
                "gives inputs for a graph the scheme does not run".to_string(),
            ));
        }
        let mut consumed = BTreeSet::new();
        for (position, role) in self.runs.iter().enumerate() {
            let graph = graphs[role.as_str()].1;
            let empty = BTreeMap::new();
            let sources = self.inputs.get(role).unwrap_or(&empty);
            let declared: BTreeSet<&str> = graph.inputs.iter().map(|t| t.name.as_str()).collect();
            if let Some(name) = sources.keys().find(|n| !declared.contains(n.as_str())) {
                return Err(bad(
                    &format!("inputs.{role}.{name}"),
                    format!("graph `{role}` has no such input"),
                ));
            }
            for input in &graph.inputs {
                let at = format!("inputs.{role}.{}", input.name);
                let source = sources.get(&input.name).ok_or_else(|| {
                    bad(
                        &at,
                        "is missing: every input of a graph run needs a source".to_string(),
                    )
                })?;
                let check = SourceCheck {
                    manifest,
                    graphs: &graphs,
                    position,
                    input,
                };
                check
                    .check(source, &mut consumed)
                    .map_err(|message| bad(&at, message))?;
            }
        }
        if &consumed != observed {
            return Err(bad(
                "inputs",
                format!(
                    "read the observations [{}], the manifest describes [{}]",
                    kinds_text(&consumed),
                    kinds_text(observed)
                ),
            ));
        }
        let batch = i64::from(manifest.batch);
        let action_shape = [batch, i64::from(manifest.action.size)];
        output_of(&graphs, &self.action, &action_shape).map_err(|m| bad("action", m))?;
        if let Some(surprise) = &self.surprise {
            output_of(&graphs, surprise, &[batch]).map_err(|m| bad("surprise", m))?;
        }
        Ok(())
    }
}

/// Checks one input's source against the graphs of its scheme.
struct SourceCheck<'a> {
    manifest: &'a Manifest,
    /// The scheme's graphs with their position in `runs`.
    graphs: &'a BTreeMap<&'a str, (usize, &'a GraphInfo)>,
    /// Position of the input's graph in `runs`.
    position: usize,
    input: &'a TensorInfo,
}

impl SourceCheck<'_> {
    /// Ok, or what is wrong; records the observations read in `consumed`.
    fn check(
        &self,
        source: &Source,
        consumed: &mut BTreeSet<ObservationKind>,
    ) -> Result<(), String> {
        let input = self.input;
        let batch = i64::from(self.manifest.batch);
        match source {
            Source::Observation { observation } => {
                let (dtype, shape) = match observation {
                    ObservationKind::State => {
                        let state = self.manifest.observation.state.as_ref().ok_or(
                            "reads the state observation, but the manifest has no observation.state",
                        )?;
                        if state.fields.len() != state.size as usize {
                            return Err(format!(
                                "observation.state lists {} fields for size {}",
                                state.fields.len(),
                                state.size
                            ));
                        }
                        (DType::Float32, vec![batch, i64::from(state.size)])
                    }
                    ObservationKind::Pixels => {
                        let p = self.manifest.observation.pixels.as_ref().ok_or(
                            "reads the pixel observation, but the manifest has no observation.pixels",
                        )?;
                        let dims = [p.height, p.width, p.channels].map(i64::from);
                        (DType::Uint8, [[batch].as_slice(), &dims].concat())
                    }
                };
                consumed.insert(*observation);
                same_tensor(
                    input,
                    dtype,
                    &shape,
                    &format!("observation `{}`", observation.name()),
                )
            }
            Source::ThisStep { concat } => {
                let Some((last, batch_dims)) = input.shape.split_last() else {
                    return Err("is a scalar; a concatenation needs an axis".to_string());
                };
                let mut total = 0;
                for part in concat {
                    let output = self.output(part)?;
                    if self.graphs[part.graph.as_str()].0 >= self.position {
                        return Err(format!(
                            "reads `{}` of `{}`, which does not run before this graph",
                            part.output, part.graph
                        ));
                    }
                    let (out_last, out_batch) = output.shape.split_last().unwrap_or((&0, &[]));
                    if output.dtype != input.dtype || out_batch != batch_dims {
                        return Err(format!(
                            "is {}, but `{}` of `{}` is {}",
                            tensor_text(input.dtype, &input.shape),
                            part.output,
                            part.graph,
                            tensor_text(output.dtype, &output.shape)
                        ));
                    }
                    total += out_last;
                }
                if concat.is_empty() || total != *last {
                    return Err(format!(
                        "holds {last} values on its last axis, the concatenated outputs {total}"
                    ));
                }
                Ok(())
            }
            Source::PreviousStep { graph, output } => {
                let part = OutputRef {
                    graph: graph.clone(),
                    output: output.clone(),
                };
                let found = self.output(&part)?;
                same_tensor(
                    input,
                    found.dtype,
                    &found.shape,
                    &format!("`{output}` of `{graph}`"),
                )
            }
            Source::Noise | Source::Zeros => match input.dtype {
                DType::Float32 | DType::Float16 => Ok(()),
                DType::Uint8 => Err("is uint8; noise and zeros fill float inputs".to_string()),
            },
        }
    }

    fn output(&self, part: &OutputRef) -> Result<&TensorInfo, String> {
        let (_, graph) = self.graphs.get(part.graph.as_str()).ok_or_else(|| {
            format!(
                "reads graph `{}`, which the scheme does not run",
                part.graph
            )
        })?;
        find_output(graph, part)
    }
}

fn find_output<'a>(graph: &'a GraphInfo, part: &OutputRef) -> Result<&'a TensorInfo, String> {
    graph
        .outputs
        .iter()
        .find(|t| t.name == part.output)
        .ok_or_else(|| format!("graph `{}` has no output `{}`", part.graph, part.output))
}

fn output_of(
    graphs: &BTreeMap<&str, (usize, &GraphInfo)>,
    part: &OutputRef,
    shape: &[i64],
) -> Result<(), String> {
    let (_, graph) = graphs.get(part.graph.as_str()).ok_or_else(|| {
        format!(
            "names graph `{}`, which the scheme does not run",
            part.graph
        )
    })?;
    let found = find_output(graph, part)?;
    if found.shape != shape || found.dtype == DType::Uint8 {
        return Err(format!(
            "`{}` of `{}` is {}, need float {shape:?}",
            part.output,
            part.graph,
            tensor_text(found.dtype, &found.shape)
        ));
    }
    Ok(())
}

fn same_tensor(input: &TensorInfo, dtype: DType, shape: &[i64], what: &str) -> Result<(), String> {
    if input.dtype == dtype && input.shape == shape {
        Ok(())
    } else {
        Err(format!(
            "is {}, but {what} is {}",
            tensor_text(input.dtype, &input.shape),
            tensor_text(dtype, shape)
        ))
    }
}

/// A tensor's type as the manifest writes it, e.g. `float32 [1, 3]`.
fn tensor_text(dtype: DType, shape: &[i64]) -> String {
    let name = match dtype {
        DType::Float32 => "float32",
        DType::Float16 => "float16",
        DType::Uint8 => "uint8",
    };
    format!("{name} {shape:?}")
}

fn kinds_text(kinds: &BTreeSet<ObservationKind>) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    names.join(", ")
}
