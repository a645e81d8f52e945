//! The closed-loop trajectory: `policy_step`, and the split step (`rssm_img_step` then
//! `policy_observe`), over the trainer's recorded episode (`traj.*`), step by step.

use dreamer_bundle::names;

use super::batch::{Dims, broadcast};
use super::compare::{max_abs_err, max_rel_err};
use super::feeds::{self, Latent, Noise, Observations, Prepared};
use super::reference::Reference;
use super::session::{Graph, Outputs};
use crate::error::ExportError;

/// The trajectory's figures (see [`closed_loop`]).
pub struct TrajectoryErrors {
    pub steps: usize,
    pub step_max_abs_err: f64,
    pub final_latent_max_abs_err: f64,
    pub surprise_max_rel_err: f64,
    /// The action's share of `step_max_abs_err`.
    pub action_max_abs_err: f64,
}

/// Runs `policy_step` from the initial state over the recorded observations with the
/// recorded state noise (`traj.noise`: zeros, except where the trainer moved a categorical
/// latent's draw away from a tie; zeros when absent), feeding back its own h and s, and
/// compares every step with the trainer's. Every batch row gets the same observation, so
/// every row must match.
///
/// The action fed back is the trainer's recorded one: the observations are a recording, so
/// they cannot answer a different action, and with a policy that is not saturated the loop
/// action -> latent -> action on fixed observations amplifies any rounding difference (two
/// float64 implementations of the same agent end up 0.6 apart after 500 steps; docs/export.md).
/// With the recorded actions the latent recurrence itself is checked, and it contracts.
///
/// Each step is also taken from the trainer's own previous latent (teacher-forced), by
/// `policy_step` and by the split step (`rssm_img_step` with zero noise, then
/// `policy_observe`); the per-step and surprise figures are the worse of the two.
///
/// Reads `traj.h` [T, D], `traj.s` [T, S], `traj.action` [T, A], `traj.surprise` [T],
/// `traj.prior_{mean,std}` and `traj.post_{mean,std}` [T, S], and `traj.obs.*`.
pub fn closed_loop(
    policy: &mut Graph,
    [img_step, observe]: [&mut Graph; 2],
    r: &Reference,
    d: &Dims,
) -> Result<TrajectoryErrors, ExportError> {
    let t_len = r.count("traj.h")?;
    let want_h = r.f32("traj.h", &[t_len, d.d])?;
    let want_s = r.f32("traj.s", &[t_len, d.s])?;
    let want_a = r.f32("traj.action", &[t_len, d.a])?;
    let want_surprise = r.f32("traj.surprise", &[t_len])?;
    let want_prior_mean = r.f32("traj.prior_mean", &[t_len, d.s])?;
    let want_prior_std = r.f32("traj.prior_std", &[t_len, d.s])?;
    // Recorded in the reference for the trainer's own diagnostics; checked here for shape only.
    for name in ["traj.post_mean", "traj.post_std"] {
        r.f32(name, &[t_len, d.s])?;
    }
    let observations = Observations::read(r, "traj", t_len, d)?;
    let recorded_noise = if r.has("traj.noise") {
        Some(r.f32("traj.noise", &[t_len, d.s])?)
    } else {
        None
    };

    let b = d.batch;
    // Row `t` of a recorded [T, width] table, for every batch entry: [B, width].
    let recorded_row =
        |table: &[f32], width: usize, t: usize| broadcast(&table[t * width..(t + 1) * width], b);
    // What the trainer's step `t` started from: its latent and action after step `t - 1`
    // (zeros before the first step).
    let recorded_start = |t: usize| match t.checked_sub(1) {
        None => Latent {
            h: vec![0.0; b * d.d],
            s: vec![0.0; b * d.s],
            action: vec![0.0; b * d.a],
        },
        Some(p) => Latent {
            h: recorded_row(want_h, d.d, p),
            s: recorded_row(want_s, d.s, p),
            action: recorded_row(want_a, d.a, p),
        },
    };
    let mut own = recorded_start(0);
    let mut errors = TrajectoryErrors {
        steps: t_len,
        step_max_abs_err: 0.0,
        final_latent_max_abs_err: 0.0,
        surprise_max_rel_err: 0.0,
        action_max_abs_err: 0.0,
    };
    for (t, &recorded_surprise) in want_surprise.iter().enumerate() {
        let observation = || observations.row(t).rows(0, b);
        // The step's noise: the recorded state noise, no action noise.
        let noise = || Noise {
            state: recorded_noise
                .map_or_else(|| vec![0.0; b * d.s], |table| recorded_row(table, d.s, t)),
            ..Noise::zeros(d)
        };
        let mut step = |from: Latent| policy.run(feeds::policy_step(observation(), from, noise()));
        // Largest difference of an output from the trainer's value at step t.
        let err = |out: &Outputs, name: &str, want: &[f32], n: usize| {
            max_abs_err(
                out.get(name).map_or(&[][..], |v| &v[..]),
                &recorded_row(want, n, t),
            )
        };
        let surprise_err = |out: &Outputs| {
            let actual = out.get(names::SURPRISE).map_or(&[][..], |v| &v[..]);
            max_rel_err(actual, &vec![recorded_surprise; b])
        };

        // One step from the trainer's own previous latent: the error of a single step.
        let start = recorded_start(t);
        let forced = step(start.clone())?;
        let forced_action_err = err(&forced, names::ACTION, want_a, d.a);
        let step_err = err(&forced, names::H_NEXT, want_h, d.d)
            .max(err(&forced, names::S_NEXT, want_s, d.s))
            .max(forced_action_err);
        errors.step_max_abs_err = errors.step_max_abs_err.max(step_err);
        errors.surprise_max_rel_err = errors.surprise_max_rel_err.max(surprise_err(&forced));

        // The same step split: the transition prepared from that latent, then the observation.
        let mut prepared = img_step.run(feeds::img_step(start, Noise::zeros(d).state))?;
        let prepare_err = err(&prepared, names::H_NEXT, want_h, d.d)
            .max(err(&prepared, names::MEAN, want_prior_mean, d.s))
            .max(err(&prepared, names::STD, want_prior_std, d.s));
        let prepared = Prepared {
            h_next: prepared.remove(names::H_NEXT).unwrap_or_default(),
            prior_mean: prepared.remove(names::MEAN).unwrap_or_default(),
            prior_std: prepared.remove(names::STD).unwrap_or_default(),
        };
        let split = observe.run(feeds::policy_observe(observation(), prepared, noise()))?;
        let split_action_err = err(&split, names::ACTION, want_a, d.a);
        let split_err = err(&split, names::S_NEXT, want_s, d.s).max(split_action_err);
        errors.action_max_abs_err = errors
            .action_max_abs_err
            .max(forced_action_err)
            .max(split_action_err);
        errors.step_max_abs_err = errors.step_max_abs_err.max(prepare_err.max(split_err));
        errors.surprise_max_rel_err = errors.surprise_max_rel_err.max(surprise_err(&split));

        // The bundle's own closed loop: its latent fed back, drift accumulating.
        let mut out = step(own)?;
        let lh = err(&out, names::H_NEXT, want_h, d.d);
        let ls = err(&out, names::S_NEXT, want_s, d.s);
        own = Latent {
            h: out.remove(names::H_NEXT).unwrap_or_default(),
            s: out.remove(names::S_NEXT).unwrap_or_default(),
            action: recorded_row(want_a, d.a, t),
        };
        if t + 1 == t_len {
            errors.final_latent_max_abs_err = lh.max(ls);
        }
    }
    Ok(errors)
}
