//! The episode file: one NumPy `.npz` per episode with arrays `action [L, A]`, `reward [L]`,
//! `discount [L]`, and `state [L, O]` and/or `image [L, 64, 64, 3]` (u8). Step `t` holds
//! observation `t`, the action taken before it (zeros at the reset) and the reward received
//! with it (zero at the reset).
//!
//! The trainer's replay stores its episodes this way, and the exporter calibrates int8
//! bundles on them; files are written kill-safe ([`save`]) and read with every array checked
//! against the [`Layout`] before use ([`load`]), since a file on disk may be damaged.

mod npz;

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use dreamer_persist::AtomicFile;
use ndarray::{Array1, Array2, Array4};
use ndarray_npy::NpzWriter;

pub use npz::{MAX_ENTRY_BYTES, Npz};

/// Side of the square pixel observation.
pub const IMAGE_SIDE: usize = 64;
/// Bytes of one pixel observation, `[64, 64, 3]`.
pub const FRAME_BYTES: usize = IMAGE_SIDE * IMAGE_SIDE * 3;

#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error("episode file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Persist(#[from] dreamer_persist::PersistError),
}

/// What each step of an episode holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub action: usize,
    /// State vector length, 0 when states are not stored.
    pub state: usize,
    pub pixels: bool,
}

/// One episode in memory, arrays flattened row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    /// [L, O]
    pub state: Vec<f32>,
    /// [L, 64, 64, 3]
    pub pixels: Vec<u8>,
    /// [L, A]
    pub action: Vec<f32>,
    /// [L]
    pub reward: Vec<f32>,
    /// [L]: 0 after a terminal transition, else 1.
    pub discount: Vec<f32>,
}

impl Episode {
    /// Number of steps (observations).
    pub fn len(&self) -> usize {
        self.reward.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reward.is_empty()
    }

    /// Append one step.
    pub fn push(
        &mut self,
        state: &[f32],
        pixels: &[u8],
        action: &[f32],
        reward: f32,
        discount: f32,
    ) {
        self.state.extend_from_slice(state);
        self.pixels.extend_from_slice(pixels);
        self.action.extend_from_slice(action);
        self.reward.push(reward);
        self.discount.push(discount);
    }

    /// Sum of the rewards.
    pub fn total_reward(&self) -> f64 {
        self.reward.iter().map(|&r| r as f64).sum()
    }
}

/// The file name of episode number `index` with `len` steps: `ep<index>-<len>.npz`.
pub fn file_name(index: usize, len: usize) -> String {
    format!("ep{index:06}-{len}.npz")
}

/// The index in an episode file name `ep<index>-<len>.npz`.
pub fn file_index(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("ep")?.split('-').next()?.parse().ok()
}

/// The episode files (`ep*.npz`) in `dir`, in name order, which is the order they were
/// written in.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "npz")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ep"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn file_error(path: &Path, message: String) -> EpisodeError {
    EpisodeError::File {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `episode` to `path` (compressed npz), replacing a file there whole.
pub fn save(path: &Path, episode: &Episode, layout: Layout) -> Result<(), EpisodeError> {
    let len = episode.len();
    let err = |message: String| file_error(path, message);
    let mut file = AtomicFile::create(path)?;
    let mut npz = NpzWriter::new_compressed(BufWriter::new(&mut file));
    let added = |name: &str, result: Result<(), ndarray_npy::WriteNpzError>| {
        result.map_err(|e| err(format!("writing `{name}`: {e}")))
    };
    let action = Array2::from_shape_vec((len, layout.action), episode.action.clone())
        .map_err(|e| err(format!("action: {e}")))?;
    added("action", npz.add_array("action", &action))?;
    added(
        "reward",
        npz.add_array("reward", &Array1::from(episode.reward.clone())),
    )?;
    added(
        "discount",
        npz.add_array("discount", &Array1::from(episode.discount.clone())),
    )?;
    if layout.state > 0 {
        let state = Array2::from_shape_vec((len, layout.state), episode.state.clone())
            .map_err(|e| err(format!("state: {e}")))?;
        added("state", npz.add_array("state", &state))?;
    }
    if layout.pixels {
        let image =
            Array4::from_shape_vec((len, IMAGE_SIDE, IMAGE_SIDE, 3), episode.pixels.clone())
                .map_err(|e| err(format!("image: {e}")))?;
        added("image", npz.add_array("image", &image))?;
    }
    npz.finish()
        .map_err(|e| err(format!("finishing: {e}")))?
        .into_inner()
        .map_err(|e| err(format!("finishing: {}", e.error())))?;
    file.commit()?;
    Ok(())
}

/// Reads the episode at `path`; every array must have the shape `layout` gives it.
pub fn load(path: &Path, layout: Layout) -> Result<Episode, EpisodeError> {
    let err = |message: String| file_error(path, message);
    let mut npz = Npz::open(path).map_err(err)?;
    let action: Array2<f32> = npz.array("action").map_err(err)?;
    let reward: Array1<f32> = npz.array("reward").map_err(err)?;
    let discount: Array1<f32> = npz.array("discount").map_err(err)?;
    let len = reward.len();
    if action.dim() != (len, layout.action) || discount.len() != len {
        return Err(err(format!(
            "action {:?} / discount [{}] do not match [{len}, {}]",
            action.dim(),
            discount.len(),
            layout.action
        )));
    }
    let mut episode = Episode {
        action: action.into_iter().collect(),
        reward: reward.to_vec(),
        discount: discount.to_vec(),
        ..Default::default()
    };
    if layout.state > 0 {
        let state: Array2<f32> = npz.array("state").map_err(err)?;
        if state.dim() != (len, layout.state) {
            return Err(err(format!(
                "state is {:?}, expected [{len}, {}]",
                state.dim(),
                layout.state
            )));
        }
        episode.state = state.into_iter().collect();
    }
    if layout.pixels {
        let image: Array4<u8> = npz.array("image").map_err(err)?;
        if image.dim() != (len, IMAGE_SIDE, IMAGE_SIDE, 3) {
            return Err(err(format!(
                "image is {:?}, expected [{len}, 64, 64, 3]",
                image.dim()
            )));
        }
        episode.pixels = image.into_iter().collect();
    }
    Ok(episode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_reads_back_as_written_and_a_wrong_layout_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            action: 2,
            state: 3,
            pixels: true,
        };
        let mut episode = Episode::default();
        for t in 0..4 {
            let x = t as f32;
            let frame = vec![t as u8; FRAME_BYTES];
            episode.push(&[x, -x, 0.5], &frame, &[x / 4.0, -1.0], x * 2.0, 1.0);
        }
        let path = dir.path().join(file_name(7, episode.len()));
        save(&path, &episode, layout).unwrap();
        assert_eq!(file_index(&path), Some(7));
        assert_eq!(list(dir.path()).unwrap(), vec![path.clone()]);
        assert_eq!(load(&path, layout).unwrap(), episode);
        let wrong = Layout { state: 4, ..layout };
        let message = load(&path, wrong).unwrap_err().to_string();
        assert!(
            message.contains("ep000007-4.npz") && message.contains("state"),
            "{message}"
        );
    }
}
