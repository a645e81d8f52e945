//! Replay: whole episodes, each one episode file on disk (`dreamer-episode`: one `.npz`
//! per episode), reloaded at restart; training samples uniform fixed-length windows.

use std::fs;
use std::path::{Path, PathBuf};

use dreamer_episode::{FRAME_BYTES as FRAME, file_index, file_name};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

pub use dreamer_episode::{Episode, EpisodeError, Layout};

use crate::networks::{IMAGE_SIZE, Obs};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Episode(#[from] EpisodeError),
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
    dir.join(file_name(index, len))
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
        let mut files = dreamer_episode::list(dir).map_err(io)?;
        let mut missing = 0;
        if let Some(limit) = limit {
            // A set, not a flag per index: `limit` comes from state.json and may be huge.
            let mut seen = std::collections::BTreeSet::new();
            let mut kept = Vec::new();
            for path in files {
                match file_index(&path) {
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
            .map(|p| dreamer_episode::load(p, layout))
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
        dreamer_episode::save(&path, &episode, self.layout)?;
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
