//! The random cases: every graph on the reference's random single-step inputs (`rand.*`),
//! against the trainer's outputs, and the fused graphs against the separate ones.

use dreamer_bundle::names;

use super::batch::{Dims, features, rows, valid};
use super::compare::{max_abs_err, max_rel_err};
use super::feeds::{self, Feeds, Latent, Noise, Observations, Prepared};
use super::reference::Reference;
use super::session::{Graph, Outputs};
use crate::error::ExportError;

/// An output and what it should be: (output name, expected values [rows, width], width).
type Expected<'r> = (&'static str, &'r [f32], usize);

/// The reference's random single-step inputs, `N` cases: `rand.h` [N, D], `rand.s` [N, S],
/// `rand.a` [N, A], `rand.embed` [N, E], `rand.noise` [N, S] and the observations.
pub struct RandomCases<'r> {
    n: usize,
    h: &'r [f32],
    s: &'r [f32],
    a: &'r [f32],
    embed: &'r [f32],
    noise: &'r [f32],
    observations: Observations<'r>,
}

impl<'r> RandomCases<'r> {
    pub fn read(r: &'r Reference, d: &Dims) -> Result<Self, ExportError> {
        let n = r.count("rand.h")?;
        Ok(RandomCases {
            n,
            h: r.f32("rand.h", &[n, d.d])?,
            s: r.f32("rand.s", &[n, d.s])?,
            a: r.f32("rand.a", &[n, d.a])?,
            embed: r.f32("rand.embed", &[n, d.e])?,
            noise: r.f32("rand.noise", &[n, d.s])?,
            observations: Observations::read(r, "rand", n, d)?,
        })
    }

    /// Chunks of the static batch: (first row, valid rows).
    fn chunks(&self, batch: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let n = self.n;
        (0..n)
            .step_by(batch)
            .map(move |start| (start, batch.min(n - start)))
    }

    /// Largest error of `graph`'s outputs against the trainer's `expected` tables over every
    /// case; `feeds(start)` gives the graph's inputs for the batch of cases from `start`.
    fn check_outputs(
        &self,
        graph: &mut Graph,
        d: &Dims,
        expected: &[Expected<'_>],
        feeds: impl Fn(usize) -> Feeds,
    ) -> Result<f64, ExportError> {
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let out = graph.run(feeds(start))?;
            for &(name, want, w) in expected {
                let want = &want[start * w..(start + count) * w];
                err = err.max(max_abs_err(valid(&out[name], w, count), want));
            }
        }
        Ok(err)
    }

    /// `encoder` on `rand.obs.*` against `rand.encoder.embed` [N, E].
    pub fn check_encoder(
        &self,
        g: &mut Graph,
        r: &Reference,
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let expected = self.recorded(r, "rand.encoder", &[(names::EMBED, "embed", d.e)])?;
        self.check_outputs(g, d, &expected, |start| {
            self.observations.rows(start, d.batch)
        })
    }

    /// `rssm_img_step` against `rand.img_step.*`.
    pub fn check_img_step(
        &self,
        g: &mut Graph,
        r: &Reference,
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let expected = self.recorded(r, "rand.img_step", &rssm_step_outputs(d))?;
        self.check_outputs(g, d, &expected, |start| {
            feeds::img_step(self.latent(d, start), self.state_noise(d, start))
        })
    }

    /// `rssm_obs_step` on `rand.embed` against `rand.obs_step.*`.
    pub fn check_obs_step(
        &self,
        g: &mut Graph,
        r: &Reference,
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let mut outputs = rssm_step_outputs(d).to_vec();
        outputs.extend([
            (names::PRIOR_MEAN, "prior_mean", d.s),
            (names::PRIOR_STD, "prior_std", d.s),
        ]);
        let expected = self.recorded(r, "rand.obs_step", &outputs)?;
        self.check_outputs(g, d, &expected, |start| {
            let embed = rows(self.embed, d.e, start, d.batch);
            feeds::obs_step(self.latent(d, start), embed, self.state_noise(d, start))
        })
    }

    /// `actor` on `concat(rand.h, rand.s)` with zero noise against `rand.actor.*` [N, A].
    pub fn check_actor(&self, g: &mut Graph, r: &Reference, d: &Dims) -> Result<f64, ExportError> {
        let outputs = [
            (names::ACTION, "mode", d.a),
            (names::MEAN, "mean", d.a),
            (names::STD, "std", d.a),
        ];
        let expected = self.recorded(r, "rand.actor", &outputs)?;
        self.check_outputs(g, d, &expected, |start| {
            let latent = self.latent(d, start);
            feeds::actor(features(&latent.h, &latent.s, d), Noise::zeros(d).action)
        })
    }

    /// The trainer's value `{prefix}.{key}` [N, width] of every graph output
    /// `(name, key, width)`.
    fn recorded<'t>(
        &self,
        r: &'t Reference,
        prefix: &str,
        outputs: &[(&'static str, &str, usize)],
    ) -> Result<Vec<Expected<'t>>, ExportError> {
        outputs
            .iter()
            .map(|&(name, key, w)| Ok((name, r.f32(&format!("{prefix}.{key}"), &[self.n, w])?, w)))
            .collect()
    }

    /// `policy_observe` on the random cases, its transition prepared by the trainer
    /// (`rand.img_step.{h,mean,std}`: h' and the prior do not depend on the noise), against
    /// `policy_step` on the same cases: the split step must give the fused step's action,
    /// posterior sample and surprise.
    pub fn check_policy_observe(
        &self,
        observe: &mut Graph,
        policy: &mut Graph,
        r: &Reference,
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let n = self.n;
        let h_next = r.f32("rand.img_step.h", &[n, d.d])?;
        let prior_mean = r.f32("rand.img_step.mean", &[n, d.s])?;
        let prior_std = r.f32("rand.img_step.std", &[n, d.s])?;
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let prepared = Prepared {
                h_next: rows(h_next, d.d, start, d.batch),
                prior_mean: rows(prior_mean, d.s, start, d.batch),
                prior_std: rows(prior_std, d.s, start, d.batch),
            };
            let observation = self.observations.rows(start, d.batch);
            let split = observe.run(feeds::policy_observe(
                observation,
                prepared,
                self.noise(d, start),
            ))?;
            let fused = policy.run(self.policy_step_feeds(d, start))?;
            let expected = [
                (names::ACTION, &fused[names::ACTION][..], d.a),
                (names::S_NEXT, &fused[names::S_NEXT][..], d.s),
            ];
            err = err.max(policy_err(
                &split,
                &expected,
                &fused[names::SURPRISE],
                count,
            ));
        }
        Ok(err)
    }

    /// `policy_step` on the random cases (with sampling noise) against the separate graphs
    /// chained by hand: catches wiring mistakes in the fused graph. The trainer comparison of
    /// `policy_step` is the closed-loop trajectory.
    pub fn check_policy_parts(
        &self,
        policy: &mut Graph,
        [encoder, obs_step, actor]: [&mut Graph; 3],
        d: &Dims,
    ) -> Result<f64, ExportError> {
        let mut err: f64 = 0.0;
        for (start, count) in self.chunks(d.batch) {
            let embed = encoder.run(self.observations.rows(start, d.batch))?;
            let post = obs_step.run(feeds::obs_step(
                self.latent(d, start),
                embed[names::EMBED].clone(),
                self.state_noise(d, start),
            ))?;
            let feat = features(&post[names::H_NEXT], &post[names::S_NEXT], d);
            let act = actor.run(feeds::actor(feat, self.action_noise(d, start)))?;
            let surprise = kl_rows(&post, d);
            let out = policy.run(self.policy_step_feeds(d, start))?;
            let expected = [
                (names::ACTION, &act[names::ACTION][..], d.a),
                (names::H_NEXT, &post[names::H_NEXT][..], d.d),
                (names::S_NEXT, &post[names::S_NEXT][..], d.s),
            ];
            err = err.max(policy_err(&out, &expected, &surprise, count));
        }
        Ok(err)
    }

    /// `rand.h` [B, D], `rand.s` [B, S] and `rand.a` [B, A] for the batch from `start`.
    fn latent(&self, d: &Dims, start: usize) -> Latent {
        Latent {
            h: rows(self.h, d.d, start, d.batch),
            s: rows(self.s, d.s, start, d.batch),
            action: rows(self.a, d.a, start, d.batch),
        }
    }

    /// `rand.noise` for the batch from `start`. [B, S]
    fn state_noise(&self, d: &Dims, start: usize) -> Vec<f32> {
        rows(self.noise, d.s, start, d.batch)
    }

    /// Actor noise for one batch, taken from the posterior noise values: any non-zero values
    /// exercise the sampling path of every graph alike. [B, A]
    fn action_noise(&self, d: &Dims, start: usize) -> Vec<f32> {
        self.state_noise(d, start)
            .chunks(d.s)
            .flat_map(|row| (0..d.a).map(|i| row[i % d.s]))
            .collect()
    }

    /// Both noises for the batch from `start`.
    fn noise(&self, d: &Dims, start: usize) -> Noise {
        Noise {
            state: self.state_noise(d, start),
            action: self.action_noise(d, start),
        }
    }

    /// Every input of `policy_step` for the batch from `start`.
    fn policy_step_feeds(&self, d: &Dims, start: usize) -> Feeds {
        feeds::policy_step(
            self.observations.rows(start, d.batch),
            self.latent(d, start),
            self.noise(d, start),
        )
    }
}

/// The outputs both RSSM steps have, with their names in the reference and their widths:
/// `h_next` [B, D], `s_next`, `mean` and `std` [B, S].
fn rssm_step_outputs(d: &Dims) -> [(&'static str, &'static str, usize); 4] {
    [
        (names::H_NEXT, "h", d.d),
        (names::S_NEXT, "s", d.s),
        (names::MEAN, "mean", d.s),
        (names::STD, "std", d.s),
    ]
}

/// The worse of the absolute error of `actual`'s outputs against `expected` (other graphs'
/// outputs, [B, width]) and the relative error of its surprise against `surprise` [B], over
/// the first `count` rows.
fn policy_err(actual: &Outputs, expected: &[Expected<'_>], surprise: &[f32], count: usize) -> f64 {
    let abs = expected
        .iter()
        .map(|&(name, want, w)| max_abs_err(valid(&actual[name], w, count), valid(want, w, count)))
        .fold(0.0, f64::max);
    abs.max(max_rel_err(
        valid(&actual[names::SURPRISE], 1, count),
        valid(surprise, 1, count),
    ))
}

/// Per-row KL of an `rssm_obs_step` output (posterior and prior mean and std, [B, S] each),
/// summed over S, computed in f64. [B]
fn kl_rows(post: &Outputs, d: &Dims) -> Vec<f32> {
    let get = |name: &str| post[name].chunks(d.s);
    if d.classes > 0 {
        // Categoricals: sum q (ln q - ln p) over the class probabilities.
        return get(names::MEAN)
            .zip(get(names::PRIOR_MEAN))
            .map(|(q, p)| {
                q.iter()
                    .zip(p)
                    .map(|(&q, &p)| {
                        let (q, p) = (f64::from(q), f64::from(p));
                        q * (q.ln() - p.ln())
                    })
                    .sum::<f64>() as f32
            })
            .collect();
    }
    get(names::MEAN)
        .zip(get(names::STD))
        .zip(get(names::PRIOR_MEAN).zip(get(names::PRIOR_STD)))
        .map(|((mq, sq), (mp, sp))| {
            let mut kl = 0.0f64;
            for i in 0..d.s {
                let (mq, sq, mp, sp) = (
                    f64::from(mq[i]),
                    f64::from(sq[i]),
                    f64::from(mp[i]),
                    f64::from(sp[i]),
                );
                kl += (sp / sq).ln() + (sq * sq + (mq - mp) * (mq - mp)) / (2.0 * sp * sp) - 0.5;
            }
            kl as f32
        })
        .collect()
}
