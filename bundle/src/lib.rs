//! The model bundle: a folder of ONNX graphs plus `manifest.json`, the contract between the
//! exporter (which writes it) and every runtime (which only reads it).
//!
//! The manifest names every graph's inputs and outputs by role, so a runtime in any language
//! can drive the policy from the bundle alone. Every file is listed with its sha256 and a
//! loader refuses a bundle whose files do not match.
//!
//! The bundle is a trust boundary, and [`Bundle::open`] is the one way in: confined,
//! size-capped reads of listed files only (`open`), every manifest value checked against the
//! others and the graphs' shapes (`validate`), and with trusted keys an ed25519 signature
//! over the manifest (`sign`). Runtimes build sessions from [`Bundle::graph_bytes`] or
//! [`read_graph`], the bytes that were hashed.

pub mod contract;
mod error;
mod manifest;
mod open;
mod sign;
mod validate;

pub use error::BundleError;
pub use manifest::{
    ActionInfo, CalibrationInfo, DType, ENVIRONMENT_SOURCE, ENVIRONMENT_VERSION, EnvironmentInfo,
    GraphForm, GraphInfo, LatentInfo, LayoutInfo, Manifest, ObservationInfo, PixelInfo,
    QuantizationInfo, ReturnCheck, StateInfo, TaskInfo, TensorInfo, TrainingInfo, VerificationInfo,
    parse_manifest,
};
pub use open::{
    Bundle, MAX_FILE_BYTES, MAX_MANIFEST_BYTES, open, read_graph, sha256_file, sha256_hex,
};
pub use sign::{Authenticity, PublicKey, SIGNATURE_FILE, SecretKey, generate_key_pair};

/// Version of the manifest schema written by this crate. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 2;
/// File name of the manifest inside a bundle folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Graph roles and their file names.
pub const ENCODER: &str = "encoder";
pub const RSSM_OBS_STEP: &str = "rssm_obs_step";
pub const RSSM_IMG_STEP: &str = "rssm_img_step";
pub const ACTOR: &str = "actor";
pub const POLICY_STEP: &str = "policy_step";
/// `policy_step` after a prepared transition (split steps). Bundles from before it existed
/// lack it; they still load for the fused and separate steps.
pub const POLICY_OBSERVE: &str = "policy_observe";
pub const GRAPH_ROLES: [&str; 6] = [
    ENCODER,
    RSSM_OBS_STEP,
    RSSM_IMG_STEP,
    ACTOR,
    POLICY_STEP,
    POLICY_OBSERVE,
];

/// Input and output names of the graphs. Every name is also listed in the manifest with its
/// shape and dtype; these constants exist so the exporter and the runtime cannot disagree.
///
/// | graph | inputs | outputs |
/// |---|---|---|
/// | `encoder` | `obs_pixels` u8 `[B,64,64,3]` and/or `obs_state` `[B,O]` | `embed` `[B,E]` |
/// | `rssm_obs_step` | `h` `[B,D]`, `s` `[B,S]`, `prev_action` `[B,A]`, `embed` `[B,E]`, `noise` `[B,S]` | `h_next`, `s_next`, `mean`, `std`, `prior_mean`, `prior_std` |
/// | `rssm_img_step` | `h`, `s`, `action` `[B,A]`, `noise` `[B,S]` | `h_next`, `s_next`, `mean`, `std` |
/// | `actor` | `feat` `[B,D+S]`, `action_noise` `[B,A]` | `action`, `mean`, `std` `[B,A]` |
/// | `policy_step` | `obs_pixels` and/or `obs_state`, `h`, `s`, `prev_action`, `noise`, `action_noise` | `action` `[B,A]`, `h_next`, `s_next`, `surprise` `[B]` |
/// | `policy_observe` | `obs_pixels` and/or `obs_state`, `h_next` `[B,D]`, `prior_mean`, `prior_std` `[B,S]`, `noise`, `action_noise` | `action`, `s_next`, `surprise` |
///
/// `policy_observe` is `policy_step` split after the transition: `h_next`, `prior_mean` and
/// `prior_std` are `rssm_img_step`'s `h_next`, `mean` and `std` on (h, s, previous action)
/// with zero noise, so they can be computed before the observation arrives.
///
/// `noise` is the posterior/prior sampling noise and `action_noise` the actor's; feeding zeros
/// gives the deterministic policy (posterior mean, action mode `tanh(mean)`).
pub mod names {
    pub const OBS_PIXELS: &str = "obs_pixels";
    pub const OBS_STATE: &str = "obs_state";
    pub const EMBED: &str = "embed";
    pub const H: &str = "h";
    pub const S: &str = "s";
    pub const PREV_ACTION: &str = "prev_action";
    pub const ACTION: &str = "action";
    pub const NOISE: &str = "noise";
    pub const ACTION_NOISE: &str = "action_noise";
    pub const FEAT: &str = "feat";
    pub const H_NEXT: &str = "h_next";
    pub const S_NEXT: &str = "s_next";
    pub const MEAN: &str = "mean";
    pub const STD: &str = "std";
    pub const PRIOR_MEAN: &str = "prior_mean";
    pub const PRIOR_STD: &str = "prior_std";
    pub const SURPRISE: &str = "surprise";
}
