//! The recurrent state-space model: a GRU deterministic state `h` and a stochastic state `s`,
//! Gaussian or categorical (`model.classes`), with the equations of
//! docs/checkpoint-format.md. Every step takes its standard-normal noise (`[N, W]`, `W` the
//! width of `s`; zeros give the mean, or the most likely classes) from the caller, so results
//! never depend on torch's global generator.

use dreamer_config::{GUMBEL_EPS, UNIFORM_MIX};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// A latent state with the distribution it was drawn from. Leading dims are the batch (`[N]`
/// for one step, `[B, T]` or `[H, N]` for sequences); `W` is the width of `s`
/// ([`dreamer_config::ModelConfig::stoch_width`]).
#[derive(Debug)]
pub struct State {
    /// [.., D]
    pub h: Tensor,
    /// [.., W]: a Gaussian sample, or the one-hots of the categoricals' samples.
    pub s: Tensor,
    /// [.., W]: the Gaussian's mean, or the class probabilities (the one-hots' mean).
    pub mean: Tensor,
    /// [.., W]: the Gaussian's std, or the one-hots' std `sqrt(p (1 - p))`.
    pub std: Tensor,
}

impl State {
    /// The same state, cut from the autograd graph.
    pub fn detach(&self) -> State {
        State {
            h: self.h.detach(),
            s: self.s.detach(),
            mean: self.mean.detach(),
            std: self.std.detach(),
        }
    }

    /// Another handle on the same tensors.
    pub fn shallow_clone(&self) -> State {
        State {
            h: self.h.shallow_clone(),
            s: self.s.shallow_clone(),
            mean: self.mean.shallow_clone(),
            std: self.std.shallow_clone(),
        }
    }

    /// Collapse the two leading dims into one.
    pub fn flatten_time(&self) -> State {
        State {
            h: self.h.flatten(0, 1),
            s: self.s.flatten(0, 1),
            mean: self.mean.flatten(0, 1),
            std: self.std.flatten(0, 1),
        }
    }

    fn stack(states: &[State], dim: i64) -> State {
        let pick = |f: fn(&State) -> &Tensor| {
            Tensor::stack(&states.iter().map(f).collect::<Vec<_>>(), dim)
        };
        State {
            h: pick(|x| &x.h),
            s: pick(|x| &x.s),
            mean: pick(|x| &x.mean),
            std: pick(|x| &x.std),
        }
    }
}

#[derive(Debug)]
pub struct Rssm {
    img_in: nn::Linear,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    img_out: nn::Linear,
    img_dist: nn::Linear,
    obs_out: nn::Linear,
    obs_dist: nn::Linear,
    deter: i64,
    stoch: i64,
    /// `W`, the width of `s` ([`dreamer_config::ModelConfig::stoch_width`]).
    width: i64,
    /// Classes per categorical; 0 for the Gaussian state.
    classes: i64,
    min_std: f64,
}

impl Rssm {
    pub fn new(
        path: &nn::Path,
        sizes: &dreamer_config::ModelConfig,
        action: i64,
        embed: i64,
    ) -> Rssm {
        let (d, s, h) = (sizes.deter, sizes.stoch, sizes.hidden);
        // Width of the state, and of the distribution layers' output: mean and std of each
        // Gaussian, or the logits of every class.
        let w = sizes.stoch_width();
        let dist = if sizes.classes == 0 { 2 * s } else { w };
        let gru = path / "gru";
        // A placeholder, like the default initialisation of every layer here: `Agent::new`
        // re-draws all variables from the run seed (`init::initialise`), the GRU's uniform in
        // +-1/sqrt(D) as torch's GRUCell initialises them.
        let bound = 1.0 / (d as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Rssm {
            img_in: nn::linear(path / "img_in", w + action, h, Default::default()),
            weight_ih: gru.var("weight_ih", &[3 * d, h], init),
            weight_hh: gru.var("weight_hh", &[3 * d, d], init),
            bias_ih: gru.var("bias_ih", &[3 * d], init),
            bias_hh: gru.var("bias_hh", &[3 * d], init),
            img_out: nn::linear(path / "img_out", d, h, Default::default()),
            img_dist: nn::linear(path / "img_dist", h, dist, Default::default()),
            obs_out: nn::linear(path / "obs_out", d + embed, h, Default::default()),
            obs_dist: nn::linear(path / "obs_dist", h, dist, Default::default()),
            deter: d,
            stoch: s,
            width: w,
            classes: sizes.classes,
            min_std: sizes.min_std,
        }
    }

    /// The all-zero state of `n` sequences, in the weights' precision.
    pub fn initial(&self, n: i64, device: Device) -> State {
        let zeros = |size| Tensor::zeros([n, size], (self.weight_hh.kind(), device));
        State {
            h: zeros(self.deter),
            s: zeros(self.width),
            mean: zeros(self.width),
            std: zeros(self.width),
        }
    }

    /// `feat = concat(h, s)`: [.., D + S].
    pub fn get_feat(state: &State) -> Tensor {
        Tensor::cat(&[&state.h, &state.s], -1)
    }

    /// The sample `s` with the distribution's mean and std, `[.., W]` each, from a
    /// distribution layer's output and standard-normal `noise` `[.., W]`.
    fn sample(&self, out: &Tensor, noise: &Tensor) -> (Tensor, Tensor, Tensor) {
        if self.classes == 0 {
            // [.., 2S]: mean, then std = softplus + min_std; s = mean + std * noise.
            let parts = out.split(self.stoch, -1);
            let std = parts[1].softplus() + self.min_std;
            let s = &parts[0] + &std * noise;
            return (s, parts[0].shallow_clone(), std);
        }
        // [.., S * K] logits: S categoricals of K classes, grouped [.., S, K].
        let flat = out.size();
        let mut grouped = flat[..flat.len() - 1].to_vec();
        grouped.extend([self.stoch, self.classes]);
        let probs = out.reshape(&grouped[..]).softmax(-1, out.kind()) * (1.0 - UNIFORM_MIX)
            + UNIFORM_MIX / self.classes as f64;
        let index = self.gumbel_scores(&probs, noise).argmax(-1, true);
        let one_hot = probs.zeros_like().scatter_value(-1, &index, 1.0);
        // Straight-through: the one-hot forward, the probabilities' gradient backward.
        let s = one_hot + (&probs - probs.detach());
        let std = (&probs * (-&probs + 1.0)).sqrt().reshape(&flat[..]);
        (s.reshape(&flat[..]), probs.reshape(&flat[..]), std)
    }

    /// Prior transition: `(h [N, D], s [N, S])`, action `[N, A]` -> next prior state.
    pub fn img_step(&self, prev: &State, action: &Tensor, noise: &Tensor) -> State {
        let x = self
            .img_in
            .forward(&Tensor::cat(&[&prev.s, action], -1))
            .elu();
        let h = x.gru_cell(
            &prev.h,
            &self.weight_ih,
            &self.weight_hh,
            Some(&self.bias_ih),
            Some(&self.bias_hh),
        );
        let y = self.img_out.forward(&h).elu();
        let (s, mean, std) = self.sample(&self.img_dist.forward(&y), noise);
        State { h, s, mean, std }
    }

    /// Posterior step: previous state, action `[N, A]`, embedding `[N, E]` ->
    /// (posterior, prior). The prior's `s` is drawn with zero noise (the Gaussian's mean, the
    /// categoricals' most likely classes); it is never used as a sample.
    pub fn obs_step(
        &self,
        prev: &State,
        action: &Tensor,
        embed: &Tensor,
        noise: &Tensor,
    ) -> (State, State) {
        let zeros = prev.s.zeros_like();
        let prior = self.img_step(prev, action, &zeros);
        let y = self
            .obs_out
            .forward(&Tensor::cat(&[&prior.h, embed], -1))
            .elu();
        let (s, mean, std) = self.sample(&self.obs_dist.forward(&y), noise);
        let post = State {
            h: prior.h.shallow_clone(),
            s,
            mean,
            std,
        };
        (post, prior)
    }

    /// Filter a sequence: embeddings `[B, T, E]`, previous actions `[B, T, A]` (the action
    /// taken before each observation) and posterior noise `[B, T, S]` -> (posterior, prior),
    /// each `[B, T, ..]`.
    pub fn observe(&self, embed: &Tensor, action: &Tensor, noise: &Tensor) -> (State, State) {
        let (batch, steps) = (embed.size()[0], embed.size()[1]);
        let mut state = self.initial(batch, embed.device());
        let mut posts = Vec::with_capacity(steps as usize);
        let mut priors = Vec::with_capacity(steps as usize);
        for t in 0..steps {
            let (post, prior) = self.obs_step(
                &state,
                &action.select(1, t),
                &embed.select(1, t),
                &noise.select(1, t),
            );
            state = post.shallow_clone();
            posts.push(post);
            priors.push(prior);
        }
        (State::stack(&posts, 1), State::stack(&priors, 1))
    }

    /// Roll the prior from `start` (`[N, ..]`) for as many steps as `noise` (`[H, N, S]`)
    /// has, choosing each action with `policy(feat [N, F], step) -> [N, A]`. Returns the
    /// states after each action, `[H, N, ..]`.
    pub fn imagine(
        &self,
        start: State,
        noise: &Tensor,
        mut policy: impl FnMut(&Tensor, i64) -> Tensor,
    ) -> State {
        let horizon = noise.size()[0];
        let mut state = start;
        let mut states = Vec::with_capacity(horizon as usize);
        for step in 0..horizon {
            let action = policy(&Rssm::get_feat(&state), step);
            let next = self.img_step(&state, &action, &noise.get(step));
            states.push(next.shallow_clone());
            state = next;
        }
        State::stack(&states, 0)
    }

    /// Gumbel-max scores `ln p + G` of categoricals, probabilities `[.., S, K]` and
    /// standard-normal noise `[.., S * K]` -> `[.., S, K]`; a sample is the largest score's
    /// class. The noise is made uniform, `u = Phi(noise)`, and `G = -ln(-ln u)`: zero noise
    /// (u = 1/2 for every class) picks the most likely class.
    pub fn gumbel_scores(&self, probs: &Tensor, noise: &Tensor) -> Tensor {
        let u = ((noise / std::f64::consts::SQRT_2).erf() * 0.5 + 0.5)
            .clamp(GUMBEL_EPS, 1.0 - GUMBEL_EPS)
            .reshape(probs.size());
        probs.log() - (-u.log()).log()
    }

    /// Classes per categorical; 0 for the Gaussian state.
    pub fn classes(&self) -> i64 {
        self.classes
    }
}

/// `KL(post || prior)` of two stochastic states of `classes` classes per categorical (0:
/// Gaussian), summed over the latent: `[.., W]` -> `[..]`.
pub fn kl_divergence(post: &State, prior: &State, classes: i64) -> Tensor {
    if classes == 0 {
        gaussian_kl(post, prior)
    } else {
        // sum p (ln p - ln q) over every class of every categorical.
        let (p, q) = (&post.mean, &prior.mean);
        (p * (p.log() - q.log())).sum_dim_intlist(-1, false, p.kind())
    }
}

/// `KL(N(post) || N(prior))` summed over the last dim: `[.., S]` -> `[..]`.
fn gaussian_kl(post: &State, prior: &State) -> Tensor {
    let var_ratio = (&post.std / &prior.std).square();
    let mean_term = ((&post.mean - &prior.mean) / &prior.std).square();
    ((var_ratio + mean_term - 1.0) * 0.5 - (&post.std / &prior.std).log()).sum_dim_intlist(
        -1,
        false,
        post.mean.kind(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// An RSSM of 3 categoricals of 4 classes (W = 12).
    fn categorical() -> (nn::VarStore, Rssm) {
        let config = dreamer_config::Config::resolve(
            "cpu-state",
            None,
            &["model.stoch=3".into(), "model.classes=4".into()],
        )
        .unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let rssm = Rssm::new(&vs.root(), &config.model, 1, 5);
        (vs, rssm)
    }

    fn logits(n: i64) -> Tensor {
        let row = Tensor::from_slice(&[
            2.0f32, 0.0, -1.0, 0.5, // categorical 0
            0.0, 0.0, 0.0, 0.0, // categorical 1: uniform
            -3.0, 4.0, 1.0, 0.0, // categorical 2
        ]);
        row.unsqueeze(0).repeat([n, 1])
    }

    #[test]
    fn categorical_samples_are_one_hots_drawn_at_the_mixed_probabilities() {
        let (_vs, rssm) = categorical();
        let n = 20_000;
        let noise = Tensor::randn([n, 12], (Kind::Float, Device::Cpu));
        let (s, probs, std) = rssm.sample(&logits(n), &noise);
        let groups = s.reshape([n, 3, 4]);
        // Exactly one 1 per categorical, the rest exactly 0.
        assert_eq!(
            groups.sum_dim_intlist(-1, false, Kind::Float),
            Tensor::ones([n, 3], (Kind::Float, Device::Cpu))
        );
        assert_eq!(
            groups
                .eq(0.0)
                .logical_or(&groups.eq(1.0))
                .all()
                .int64_value(&[]),
            1
        );
        let expected = logits(1).reshape([3, 4]).softmax(-1, Kind::Float) * 0.99 + 0.0025;
        assert!(
            probs
                .get(0)
                .reshape([3, 4])
                .allclose(&expected, 1e-6, 1e-7, false)
        );
        let frequency = groups.mean_dim(0, false, Kind::Float);
        let gap = (&frequency - &expected).abs().max().double_value(&[]);
        assert!(
            gap < 0.015,
            "frequencies {frequency} vs probabilities {expected}"
        );
        let var = &expected * (-&expected + 1.0);
        assert!(
            std.get(0)
                .reshape([3, 4])
                .square()
                .allclose(&var, 1e-6, 1e-7, false)
        );
    }

    #[test]
    fn zero_noise_picks_the_most_likely_class() {
        let (_vs, rssm) = categorical();
        let (s, _, _) = rssm.sample(
            &logits(1),
            &Tensor::zeros([1, 12], (Kind::Float, Device::Cpu)),
        );
        let picked = Vec::<i64>::try_from(s.reshape([3, 4]).argmax(-1, false)).unwrap();
        // The uniform categorical's tie goes to its first class.
        assert_eq!(picked, [0, 0, 1]);
    }

    #[test]
    fn categorical_samples_pass_the_probabilities_gradient_straight_through() {
        let (_vs, rssm) = categorical();
        let out = logits(2).set_requires_grad(true);
        let noise = Tensor::randn([2, 12], (Kind::Float, Device::Cpu));
        let weights = Tensor::randn([2, 12], (Kind::Float, Device::Cpu));
        let (s, probs, _) = rssm.sample(&out, &noise);
        let through_sample =
            Tensor::run_backward(&[(&s * &weights).sum(Kind::Float)], &[&out], true, false);
        let through_probs = Tensor::run_backward(
            &[(&probs * &weights).sum(Kind::Float)],
            &[&out],
            false,
            false,
        );
        assert!(through_sample[0].allclose(&through_probs[0], 1e-6, 1e-7, false));
        assert!(through_sample[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn categorical_kl_is_zero_for_equal_states_and_the_sum_over_classes() {
        let (_vs, rssm) = categorical();
        let zeros = Tensor::zeros([1, 12], (Kind::Float, Device::Cpu));
        let state = |logits: &Tensor| {
            let (s, mean, std) = rssm.sample(logits, &zeros);
            State {
                h: zeros.shallow_clone(),
                s,
                mean,
                std,
            }
        };
        let post = state(&logits(1));
        let prior = state(&(logits(1) * -0.5));
        assert_eq!(kl_divergence(&post, &post, 4).double_value(&[0]), 0.0);
        let (p, q) = (&post.mean, &prior.mean);
        let by_hand = (p * (p / q).log()).sum(Kind::Float).double_value(&[]);
        let kl = kl_divergence(&post, &prior, 4).double_value(&[0]);
        assert!(kl > 0.1 && (kl - by_hand).abs() < 1e-5, "{kl} vs {by_hand}");
    }
}
