//! The inputs of every bundle graph, named in one place, and the recorded observations of
//! the reference file as graph inputs. Every tensor is batch-major with the bundle's static
//! batch `B` (sizes as in [`Dims`](super::batch::Dims)).

use dreamer_bundle::names;

use super::batch::{Dims, PIXEL_LEN, PIXEL_SHAPE, rows};
use super::reference::Reference;
use crate::error::ExportError;

/// Data of one graph input, batch-major.
pub enum Feed {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Every input of one graph run, by input name.
pub type Feeds = Vec<(&'static str, Feed)>;

/// What a step starts from: `h` [B, D], `s` [B, S] and the action taken from them [B, A].
#[derive(Clone)]
pub struct Latent {
    pub h: Vec<f32>,
    pub s: Vec<f32>,
    pub action: Vec<f32>,
}

/// Sampling noise: of the stochastic state [B, S] and of the action [B, A]. Zeros give
/// the deterministic policy.
pub struct Noise {
    pub state: Vec<f32>,
    pub action: Vec<f32>,
}

impl Noise {
    pub fn zeros(d: &Dims) -> Noise {
        Noise {
            state: vec![0.0; d.batch * d.s],
            action: vec![0.0; d.batch * d.a],
        }
    }

    /// The `noise` and `action_noise` inputs of the policy graphs.
    fn into_feeds(self) -> [(&'static str, Feed); 2] {
        [
            (names::NOISE, Feed::F32(self.state)),
            (names::ACTION_NOISE, Feed::F32(self.action)),
        ]
    }
}

/// The transition prepared before the observation arrives (`rssm_img_step` with zero noise):
/// `h_next` [B, D] and the prior's `mean` and `std` [B, S].
pub struct Prepared {
    pub h_next: Vec<f32>,
    pub prior_mean: Vec<f32>,
    pub prior_std: Vec<f32>,
}

/// `rssm_img_step`: the latent and its action, transition noise [B, S].
pub fn img_step(from: Latent, noise: Vec<f32>) -> Feeds {
    vec![
        (names::H, Feed::F32(from.h)),
        (names::S, Feed::F32(from.s)),
        (names::ACTION, Feed::F32(from.action)),
        (names::NOISE, Feed::F32(noise)),
    ]
}

/// `rssm_obs_step`: the latent and its action, `embed` [B, E], posterior noise [B, S].
pub fn obs_step(from: Latent, embed: Vec<f32>, noise: Vec<f32>) -> Feeds {
    vec![
        (names::H, Feed::F32(from.h)),
        (names::S, Feed::F32(from.s)),
        (names::PREV_ACTION, Feed::F32(from.action)),
        (names::EMBED, Feed::F32(embed)),
        (names::NOISE, Feed::F32(noise)),
    ]
}

/// `actor`: `feat` [B, D + S], action noise [B, A].
pub fn actor(feat: Vec<f32>, action_noise: Vec<f32>) -> Feeds {
    vec![
        (names::FEAT, Feed::F32(feat)),
        (names::ACTION_NOISE, Feed::F32(action_noise)),
    ]
}

/// `policy_step`: the observation's inputs, the latent and previous action, both noises.
pub fn policy_step(mut observation: Feeds, from: Latent, noise: Noise) -> Feeds {
    observation.extend([
        (names::H, Feed::F32(from.h)),
        (names::S, Feed::F32(from.s)),
        (names::PREV_ACTION, Feed::F32(from.action)),
    ]);
    observation.extend(noise.into_feeds());
    observation
}

/// `policy_observe`: the observation's inputs, the prepared transition, both noises.
pub fn policy_observe(mut observation: Feeds, prepared: Prepared, noise: Noise) -> Feeds {
    observation.extend([
        (names::H_NEXT, Feed::F32(prepared.h_next)),
        (names::PRIOR_MEAN, Feed::F32(prepared.prior_mean)),
        (names::PRIOR_STD, Feed::F32(prepared.prior_std)),
    ]);
    observation.extend(noise.into_feeds());
    observation
}

/// Recorded observations of the reference: `{prefix}.obs.pixels` u8 [N, 64, 64, 3] and
/// `{prefix}.obs.state` f32 [N, O], each present when the bundle uses it.
#[derive(Clone, Copy)]
pub struct Observations<'r> {
    pixels: Option<&'r [u8]>,
    /// The table and `O`.
    state: Option<(&'r [f32], usize)>,
}

impl<'r> Observations<'r> {
    /// Reads `{prefix}.obs.*` with `n` rows.
    pub fn read(r: &'r Reference, prefix: &str, n: usize, d: &Dims) -> Result<Self, ExportError> {
        let mut pixel_shape = vec![n];
        pixel_shape.extend(PIXEL_SHAPE);
        Ok(Observations {
            pixels: if d.pixels {
                Some(r.u8(&format!("{prefix}.obs.pixels"), &pixel_shape)?)
            } else {
                None
            },
            state: match d.o {
                Some(o) => Some((r.f32(&format!("{prefix}.obs.state"), &[n, o])?, o)),
                None => None,
            },
        })
    }

    /// Row `t` only: an observation that [`Observations::rows`] repeats for every batch entry.
    pub fn row(self, t: usize) -> Observations<'r> {
        Observations {
            pixels: self.pixels.map(|p| &p[t * PIXEL_LEN..(t + 1) * PIXEL_LEN]),
            state: self.state.map(|(x, o)| (&x[t * o..(t + 1) * o], o)),
        }
    }

    /// Rows `start..start + B` as the observation inputs (rows past N repeat the last):
    /// `obs_pixels` u8 [B, 64, 64, 3], `obs_state` f32 [B, O].
    pub fn rows(&self, start: usize, batch: usize) -> Feeds {
        let mut feeds = Vec::new();
        if let Some(p) = self.pixels {
            feeds.push((
                names::OBS_PIXELS,
                Feed::U8(rows(p, PIXEL_LEN, start, batch)),
            ));
        }
        if let Some((x, o)) = self.state {
            feeds.push((names::OBS_STATE, Feed::F32(rows(x, o, start, batch))));
        }
        feeds
    }
}
