//! The observation a step takes: its borrowed form, its sizes, and where it goes in a graph.

use dreamer_bundle::{Manifest, names};

use crate::error::{LoadError, StepError};
use crate::graph::GraphRunner;

/// One observation, borrowed: raw state values and/or raw HWC pixels, as the manifest's
/// `observation` section describes them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation<'a> {
    /// Raw state values `[state size]`.
    pub state: Option<&'a [f32]>,
    /// Raw pixels, height x width x channels `[H * W * C]`.
    pub pixels: Option<&'a [u8]>,
}

/// Values per observation input as the manifest describes them (0 for an absent input).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObservationSizes {
    pub state: usize,
    pub pixels: usize,
}

impl ObservationSizes {
    pub fn of(manifest: &Manifest) -> Self {
        let observation = &manifest.observation;
        ObservationSizes {
            state: observation.state.as_ref().map_or(0, |s| s.size as usize),
            pixels: observation
                .pixels
                .as_ref()
                .map_or(0, |p| (p.height * p.width * p.channels) as usize),
        }
    }
}

/// Where the observation goes in a graph: the indices of its `obs_state` and `obs_pixels`
/// inputs, where it has them.
#[derive(Debug, Clone, Copy)]
pub(super) struct ObsInputs {
    state: Option<usize>,
    pixels: Option<usize>,
}

impl ObsInputs {
    pub fn find(graph: &GraphRunner) -> Self {
        ObsInputs {
            state: graph.input_index(names::OBS_STATE),
            pixels: graph.input_index(names::OBS_PIXELS),
        }
    }

    /// The graph's observation inputs must agree with the manifest's observation section.
    pub fn check(&self, graph: &GraphRunner, manifest: &Manifest) -> Result<(), LoadError> {
        let sizes = ObservationSizes::of(manifest);
        let check = |index: Option<usize>, name: &str, expected: usize| match index {
            Some(i) => {
                let len = graph.input_len(i);
                if len != expected {
                    return Err(LoadError::Manifest {
                        graph: graph.role.clone(),
                        message: format!(
                            "input `{name}` holds {len} values but the manifest's observation \
                             section describes {expected}"
                        ),
                    });
                }
                Ok(())
            }
            None if expected > 0 => Err(LoadError::Manifest {
                graph: graph.role.clone(),
                message: format!("the manifest describes `{name}` but the graph has no such input"),
            }),
            None => Ok(()),
        };
        check(self.state, names::OBS_STATE, sizes.state)?;
        check(self.pixels, names::OBS_PIXELS, sizes.pixels)?;
        if self.state.is_none() && self.pixels.is_none() {
            return Err(LoadError::Manifest {
                graph: graph.role.clone(),
                message: "takes neither `obs_state` nor `obs_pixels`".to_string(),
            });
        }
        Ok(())
    }

    /// Validates the observation and copies it into the graph's inputs.
    pub fn write(&self, graph: &mut GraphRunner, obs: &Observation<'_>) -> Result<(), StepError> {
        if let Some(index) = self.state {
            let input = names::OBS_STATE;
            let values = obs.state.ok_or(StepError::MissingInput { input })?;
            let target = graph.input_f32(index);
            if values.len() != target.len() {
                return Err(StepError::WrongSize {
                    input,
                    expected: target.len(),
                    got: values.len(),
                });
            }
            if let Some(index) = values.iter().position(|x| !x.is_finite()) {
                return Err(StepError::NonFinite { input, index });
            }
            target.copy_from_slice(values);
        }
        if let Some(index) = self.pixels {
            let input = names::OBS_PIXELS;
            let values = obs.pixels.ok_or(StepError::MissingInput { input })?;
            let target = graph.input_u8(index);
            if values.len() != target.len() {
                return Err(StepError::WrongSize {
                    input,
                    expected: target.len(),
                    got: values.len(),
                });
            }
            target.copy_from_slice(values);
        }
        Ok(())
    }
}
