//! The checkpoint folder's contract, written by the trainer and read by the exporter
//! (docs/checkpoint-format.md): the file names and the format version.

/// `format_version` in `state.json`; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The weights (safetensors, float32, torch layout).
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimiser moments and the adaptive entropy weight (safetensors).
pub const OPTIM_FILE: &str = "optim.safetensors";
/// Counters, the format version and the best evaluation (JSON).
pub const STATE_FILE: &str = "state.json";
/// The resolved run configuration (TOML, [`crate::Config`]).
pub const CONFIG_FILE: &str = "config.toml";
/// The float64 reference cases the exporter verifies its graphs against (safetensors).
pub const REFERENCE_FILE: &str = "reference.safetensors";
