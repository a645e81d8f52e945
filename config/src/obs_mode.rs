//! Which observations the agent sees: the one definition shared by the tasks, the trainer
//! and the exporter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which observations an environment produces and the agent encodes (`run.obs_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObsMode {
    /// The task's state vector.
    #[default]
    State,
    /// 64x64 RGB frames.
    Pixels,
    /// Both, encoded side by side.
    Both,
}

/// Every valid `run.obs_mode` value, in the order of [`ObsMode`].
pub const OBS_MODE_NAMES: [&str; 3] = ["state", "pixels", "both"];

impl ObsMode {
    pub fn uses_state(self) -> bool {
        matches!(self, ObsMode::State | ObsMode::Both)
    }
    pub fn uses_pixels(self) -> bool {
        matches!(self, ObsMode::Pixels | ObsMode::Both)
    }
    /// The name in configuration files and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ObsMode::State => "state",
            ObsMode::Pixels => "pixels",
            ObsMode::Both => "both",
        }
    }
}

impl fmt::Display for ObsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an observation mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown observation mode `{0}`; valid: state, pixels, both")]
pub struct UnknownObsMode(pub String);

impl FromStr for ObsMode {
    type Err = UnknownObsMode;
    fn from_str(text: &str) -> Result<Self, UnknownObsMode> {
        match text {
            "state" => Ok(ObsMode::State),
            "pixels" => Ok(ObsMode::Pixels),
            "both" => Ok(ObsMode::Both),
            other => Err(UnknownObsMode(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for name in OBS_MODE_NAMES {
            assert_eq!(name.parse::<ObsMode>().unwrap().name(), name);
        }
        assert_eq!(
            "rgb".parse::<ObsMode>(),
            Err(UnknownObsMode("rgb".to_string()))
        );
    }
}
