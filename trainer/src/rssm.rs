//! The recurrent state-space model: a GRU deterministic state `h` and a Gaussian stochastic
//! state `s`, with the equations of docs/checkpoint-format.md. Every step takes its
//! standard-normal noise (`[N, S]`, zeros give the mean) from the caller, so results never
//! depend on torch's global generator.

use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// A latent state with the Gaussian it was drawn from. Leading dims are the batch (`[N]`
/// for one step, `[B, T]` or `[H, N]` for sequences).
#[derive(Debug)]
pub struct State {
    /// [.., D]
    pub h: Tensor,
    /// [.., S]
    pub s: Tensor,
    /// [.., S]
    pub mean: Tensor,
    /// [.., S]
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
            img_in: nn::linear(path / "img_in", s + action, h, Default::default()),
            weight_ih: gru.var("weight_ih", &[3 * d, h], init),
            weight_hh: gru.var("weight_hh", &[3 * d, d], init),
            bias_ih: gru.var("bias_ih", &[3 * d], init),
            bias_hh: gru.var("bias_hh", &[3 * d], init),
            img_out: nn::linear(path / "img_out", d, h, Default::default()),
            img_dist: nn::linear(path / "img_dist", h, 2 * s, Default::default()),
            obs_out: nn::linear(path / "obs_out", d + embed, h, Default::default()),
            obs_dist: nn::linear(path / "obs_dist", h, 2 * s, Default::default()),
            deter: d,
            stoch: s,
            min_std: sizes.min_std,
        }
    }

    /// The all-zero state of `n` sequences, in the weights' precision.
    pub fn initial(&self, n: i64, device: Device) -> State {
        let zeros = |size| Tensor::zeros([n, size], (self.weight_hh.kind(), device));
        State {
            h: zeros(self.deter),
            s: zeros(self.stoch),
            mean: zeros(self.stoch),
            std: zeros(self.stoch),
        }
    }

    /// `feat = concat(h, s)`: [.., D + S].
    pub fn get_feat(state: &State) -> Tensor {
        Tensor::cat(&[&state.h, &state.s], -1)
    }

    /// Mean and std from a `[.., 2S]` output: std = softplus + min_std.
    fn gaussian(&self, out: &Tensor) -> (Tensor, Tensor) {
        let parts = out.split(self.stoch, -1);
        let std = parts[1].softplus() + self.min_std;
        (parts[0].shallow_clone(), std)
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
        let (mean, std) = self.gaussian(&self.img_dist.forward(&y));
        let s = &mean + &std * noise;
        State { h, s, mean, std }
    }

    /// Posterior step: previous state, action `[N, A]`, embedding `[N, E]` ->
    /// (posterior, prior). The prior's `s` is its mean (it is never used as a sample).
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
        let (mean, std) = self.gaussian(&self.obs_dist.forward(&y));
        let s = &mean + &std * noise;
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
}

/// `KL(N(post) || N(prior))` summed over the last dim: `[.., S]` -> `[..]`.
pub fn kl_divergence(post: &State, prior: &State) -> Tensor {
    let var_ratio = (&post.std / &prior.std).square();
    let mean_term = ((&post.mean - &prior.mean) / &prior.std).square();
    ((var_ratio + mean_term - 1.0) * 0.5 - (&post.std / &prior.std).log()).sum_dim_intlist(
        -1,
        false,
        post.mean.kind(),
    )
}
