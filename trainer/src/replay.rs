//! Replay: whole episodes, each one NumPy `.npz` file on disk (arrays `action [L, A]`,
//! `reward [L]`, `discount [L]`, and `state [L, O]` and/or `image [L, 64, 64, 3]` u8),
//! reloaded at restart; training samples uniform fixed-length windows.
//!
//! Step `t` of an episode holds observation `t`, the action taken before it (zeros at the
//! reset) and the reward received with it (zero at the reset).

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use dreamer_persist::AtomicFile;
use ndarray::{Array1, Array2, Array4};
use ndarray_npy::NpzWriter;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::networks::{IMAGE_SIZE, Obs};
use crate::npz::Npz;

const FRAME: usize = (IMAGE_SIZE * IMAGE_SIZE * 3) as usize;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("episode file {path}: {message}")]
    Episode { path: PathBuf, message: String },
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
    /// [L]
    pub discount: Vec<f32>,
}

/// Replayed sequences, `[B, T, ..]`. `action[t]` is the action taken before `obs[t]` and
/// `reward[t]` the reward received with it.
#[derive(Debug)]
pub struct Batch {
    pub obs: Obs,
    /// [B, T, A]
    pub action: Tensor,
    /// [B, T]
    pub reward: Tensor,
    /// [B, T]: 0 after a terminal transition, else 1.
    pub discount: Tensor,
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

#[derive(Debug)]
pub struct Replay {
    dir: PathBuf,
    layout: Layout,
    episodes: Vec<Episode>,
    /// Index of the next episode file written.
    next_index: usize,
    /// Episodes below the `limit` given to [`Replay::open`] whose files were not found.
    missing: usize,
}

fn episode_path(dir: &Path, index: usize, len: usize) -> PathBuf {
    dir.join(format!("ep{index:06}-{len}.npz"))
}

/// The index in an episode file name `ep<index>-<len>.npz`.
fn episode_index(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("ep")?.split('-').next()?.parse().ok()
}

impl Replay {
    /// Open (creating) `dir` and load its episodes in the order they were written: all of
    /// them when `limit` is None, else those numbered below `limit` (the episodes a
    /// checkpoint counts). Files numbered `limit` or above were written after that
    /// checkpoint by a session stopped before its next one: they are deleted, and new
    /// episodes are numbered from `limit` on, as that session's were, so that a resumed run
    /// stores what an uninterrupted one would. Episodes below `limit` whose files are gone are
    /// counted in [`Replay::missing`]. Files that do not match `layout` are an error.
    pub fn open(dir: &Path, layout: Layout, limit: Option<usize>) -> Result<Replay, ReplayError> {
        let io = |source| ReplayError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "npz")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ep"))
            })
            .collect();
        files.sort();
        let mut missing = 0;
        if let Some(limit) = limit {
            // A set, not a flag per index: `limit` comes from state.json and may be huge.
            let mut seen = std::collections::BTreeSet::new();
            let mut kept = Vec::new();
            for path in files {
                match episode_index(&path) {
                    // One file per index (the first in name order).
                    Some(i) if i < limit && seen.insert(i) => kept.push(path),
                    Some(i) if i >= limit => {
                        fs::remove_file(&path).map_err(|source| ReplayError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    }
                    _ => {}
                }
            }
            files = kept;
            missing = limit - files.len();
        }
        let episodes = files
            .iter()
            .map(|p| load_episode(p, layout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Replay {
            dir: dir.to_path_buf(),
            layout,
            next_index: limit.unwrap_or(episodes.len()),
            episodes,
            missing,
        })
    }

    /// The folder the episode files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Episodes below the `limit` of [`Replay::open`] whose files were not found.
    pub fn missing(&self) -> usize {
        self.missing
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Total stored steps.
    pub fn steps(&self) -> usize {
        self.episodes.iter().map(Episode::len).sum()
    }

    /// Store an episode in memory and on disk (replacing a file of that name whole).
    pub fn add(&mut self, episode: Episode) -> Result<(), ReplayError> {
        let path = episode_path(&self.dir, self.next_index, episode.len());
        save_episode(&path, &episode, self.layout)?;
        self.episodes.push(episode);
        self.next_index += 1;
        Ok(())
    }

    /// `batch` windows of `length` steps: an episode uniformly (among those long enough),
    /// then a start uniformly. None while no episode is long enough.
    pub fn sample(&self, batch: usize, length: usize, rng: &mut ChaCha8Rng) -> Option<Sample> {
        let eligible: Vec<&Episode> = self.episodes.iter().filter(|e| e.len() >= length).collect();
        if eligible.is_empty() {
            return None;
        }
        let l = self.layout;
        let mut out = Sample {
            batch,
            length,
            layout: l,
            state: Vec::with_capacity(batch * length * l.state),
            pixels: Vec::with_capacity(if l.pixels { batch * length * FRAME } else { 0 }),
            action: Vec::with_capacity(batch * length * l.action),
            reward: Vec::with_capacity(batch * length),
            discount: Vec::with_capacity(batch * length),
        };
        for _ in 0..batch {
            let episode = eligible[rng.random_range(0..eligible.len())];
            let start = rng.random_range(0..=episode.len() - length);
            let range = start..start + length;
            out.state
                .extend_from_slice(&episode.state[range.start * l.state..range.end * l.state]);
            if l.pixels {
                out.pixels
                    .extend_from_slice(&episode.pixels[range.start * FRAME..range.end * FRAME]);
            }
            out.action
                .extend_from_slice(&episode.action[range.start * l.action..range.end * l.action]);
            out.reward.extend_from_slice(&episode.reward[range.clone()]);
            out.discount.extend_from_slice(&episode.discount[range]);
        }
        Some(out)
    }
}

/// Sampled windows on the host, `[B, T, ..]` flattened.
#[derive(Debug, Clone)]
pub struct Sample {
    pub batch: usize,
    pub length: usize,
    pub layout: Layout,
    pub state: Vec<f32>,
    pub pixels: Vec<u8>,
    pub action: Vec<f32>,
    pub reward: Vec<f32>,
    pub discount: Vec<f32>,
}

impl Sample {
    /// The tensors of a training batch on `device`.
    pub fn to_batch(&self, device: Device) -> Batch {
        let (b, t) = (self.batch as i64, self.length as i64);
        let l = self.layout;
        let state = (l.state > 0).then(|| {
            Tensor::from_slice(&self.state)
                .reshape([b, t, l.state as i64])
                .to_device(device)
        });
        let pixels = l.pixels.then(|| {
            Tensor::from_slice(&self.pixels)
                .reshape([b, t, IMAGE_SIZE, IMAGE_SIZE, 3])
                .to_device(device)
        });
        Batch {
            obs: Obs { state, pixels },
            action: Tensor::from_slice(&self.action)
                .reshape([b, t, l.action as i64])
                .to_device(device),
            reward: Tensor::from_slice(&self.reward)
                .reshape([b, t])
                .to_kind(Kind::Float)
                .to_device(device),
            discount: Tensor::from_slice(&self.discount)
                .reshape([b, t])
                .to_device(device),
        }
    }
}

fn shape_error(path: &Path, message: String) -> ReplayError {
    ReplayError::Episode {
        path: path.to_path_buf(),
        message,
    }
}

fn save_episode(path: &Path, episode: &Episode, layout: Layout) -> Result<(), ReplayError> {
    let len = episode.len();
    let err = |message: String| shape_error(path, message);
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
        let side = IMAGE_SIZE as usize;
        let image = Array4::from_shape_vec((len, side, side, 3), episode.pixels.clone())
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

fn load_episode(path: &Path, layout: Layout) -> Result<Episode, ReplayError> {
    let err = |message: String| shape_error(path, message);
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
        let side = IMAGE_SIZE as usize;
        if image.dim() != (len, side, side, 3) {
            return Err(err(format!(
                "image is {:?}, expected [{len}, 64, 64, 3]",
                image.dim()
            )));
        }
        episode.pixels = image.into_iter().collect();
    }
    Ok(episode)
}
