//! Losses, gradient flow and updates of the agent on tiny networks.

mod common;

use common::*;
use dreamer_trainer::agent::{Agent, TrainError, group_of};
use dreamer_trainer::losses::lambda_return;
use dreamer_trainer::networks::unit_normal_log_prob;
use dreamer_trainer::rssm::{State, kl_divergence};
use tch::{Device, Kind, Tensor};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-5 * (1.0 + b.abs())
}

#[test]
fn lambda_return_matches_a_hand_computed_example() {
    // T = 2 steps, N = 1; gamma folded into pcont = 0.5, lambda = 0.5, bootstrap 5.
    // V_1 = 2 + 0.5 * (0.5 * 5 + 0.5 * 5) = 4.5
    // V_0 = 1 + 0.5 * (0.5 * 4 + 0.5 * 4.5) = 3.125
    let reward = Tensor::from_slice(&[1.0f32, 2.0]).reshape([2, 1]);
    let value = Tensor::from_slice(&[3.0f32, 4.0]).reshape([2, 1]);
    let pcont = Tensor::full([2, 1], 0.5, (Kind::Float, tch::Device::Cpu));
    let bootstrap = Tensor::from_slice(&[5.0f32]);
    let returns = lambda_return(&reward, &value, &pcont, &bootstrap, 0.5);
    assert_eq!(returns.size(), vec![2, 1]);
    assert!(close(returns.double_value(&[0, 0]), 3.125));
    assert!(close(returns.double_value(&[1, 0]), 4.5));
    // lambda = 1 is the discounted Monte-Carlo return with bootstrap.
    let mc = lambda_return(&reward, &value, &pcont, &bootstrap, 1.0);
    assert!(close(
        mc.double_value(&[0, 0]),
        1.0 + 0.5 * (2.0 + 0.5 * 5.0)
    ));
    // lambda = 0 is the one-step TD target.
    let td = lambda_return(&reward, &value, &pcont, &bootstrap, 0.0);
    assert!(close(td.double_value(&[0, 0]), 1.0 + 0.5 * 4.0));
}

fn gaussian(mean: f32, std: f32, dims: i64) -> State {
    let full = |v: f32| Tensor::full([1, dims], v as f64, (Kind::Float, tch::Device::Cpu));
    State {
        h: full(0.0),
        s: full(mean),
        mean: full(mean),
        std: full(std),
    }
}

#[test]
fn kl_divergence_of_gaussians() {
    // KL(N(1, 2^2) || N(0, 1)) = ln(1/2) + (4 + 1) / 2 - 1/2 per dimension.
    let per_dim = (0.5f64).ln() + 2.5 - 0.5;
    let kl = kl_divergence(&gaussian(1.0, 2.0, 3), &gaussian(0.0, 1.0, 3), 0);
    assert!(close(kl.double_value(&[0]), 3.0 * per_dim));
    let same = kl_divergence(&gaussian(0.3, 0.7, 3), &gaussian(0.3, 0.7, 3), 0);
    assert!(same.double_value(&[0]).abs() < 1e-6);
}

#[test]
fn free_nats_floor_the_kl_term() {
    for (free_nats, kl_scale) in [(0.0, 1.0), (1e4, 1.0), (1e4, 0.5)] {
        let mut config = tiny_config(false);
        config.train.free_nats = free_nats;
        config.train.kl_scale = kl_scale;
        let dims = dims(false);
        let agent = agent(&config, dims);
        let batch = synthetic_batch(&config, dims, 1);
        let wm = agent.world_model_loss(&batch, &noise(&agent, 0).posterior);
        let kl = wm.kl.double_value(&[]);
        let likelihood = wm.reward_loglik.double_value(&[])
            + wm.state_loglik.as_ref().unwrap().double_value(&[]);
        let kl_term = wm.loss.double_value(&[]) + likelihood;
        assert!(
            close(kl_term, kl_scale * kl.max(free_nats)),
            "{kl_term} vs {kl}"
        );
        if free_nats > kl {
            // Below the floor the KL term passes no gradient to the prior.
            let prior_weight = agent
                .named_weights()
                .into_iter()
                .find(|(n, _)| n == "rssm.img_dist.weight")
                .unwrap()
                .1;
            let grad = Tensor::run_backward(&[&wm.loss], &[&prior_weight], false, false);
            assert_eq!(grad[0].abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }
}

#[test]
fn unit_normal_log_prob_sums_event_dims() {
    let mean = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu));
    let lp = unit_normal_log_prob(&mean, &x, 1);
    let expected = 3.0 * (-0.5 - 0.5 * (2.0 * std::f64::consts::PI).ln());
    assert_eq!(lp.size(), vec![2]);
    assert!(close(lp.double_value(&[1]), expected));
}

#[test]
fn behaviour_gradients_are_isolated() {
    let config = tiny_config(false);
    let dims = dims(false);
    let mut agent = agent(&config, dims);
    let batch = synthetic_batch(&config, dims, 2);
    let before = snapshot(&agent);

    // The actor loss does reach the dynamics and heads; only the optimiser split keeps them
    // fixed.
    let wm = agent.world_model_loss(&batch, &noise(&agent, 0).posterior);
    let n = noise(&agent, 0);
    let behaviour = agent.behaviour_loss(&wm.post, &n.imag_state, &n.imag_action);
    assert!(behaviour.returns.requires_grad());
    assert!(
        !behaviour.value_target.requires_grad(),
        "the value target carries no gradient"
    );
    let img_in = agent
        .model_opt
        .names
        .iter()
        .position(|n| n == "rssm.img_in.weight")
        .unwrap();
    let through_dynamics = Tensor::run_backward(
        &[&behaviour.actor_loss],
        &[&agent.model_opt.params[img_in]],
        true,
        false,
    );
    assert!(through_dynamics[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);

    // An actor step moves only actor weights.
    let grads = Tensor::run_backward(
        &[&behaviour.actor_loss],
        &agent.actor_opt.params,
        false,
        false,
    );
    agent.actor_opt.apply(&grads);
    let after_actor = snapshot(&agent);
    let moved = changed(&before, &after_actor);
    assert!(!moved.is_empty());
    assert!(moved.iter().all(|n| group_of(n) == "actor"), "{moved:?}");

    // A value step moves only value weights; the value loss reaches nothing else.
    let grads = Tensor::run_backward(
        &[&behaviour.value_loss],
        &agent.value_opt.params,
        false,
        false,
    );
    agent.value_opt.apply(&grads);
    let moved = changed(&after_actor, &snapshot(&agent));
    assert!(!moved.is_empty());
    assert!(moved.iter().all(|n| group_of(n) == "value"), "{moved:?}");

    // World-model weights receive no gradient from the value loss.
    let wm = agent.world_model_loss(&batch, &noise(&agent, 0).posterior);
    let n = noise(&agent, 0);
    let behaviour = agent.behaviour_loss(&wm.post, &n.imag_state, &n.imag_action);
    let model_params: Vec<&Tensor> = agent.model_opt.params.iter().collect();
    let all: Vec<&Tensor> = model_params
        .iter()
        .copied()
        .chain(agent.value_opt.params.iter())
        .collect();
    let grads = Tensor::run_backward(&[&behaviour.value_loss], &all, false, false);
    let (model_grads, value_grads) = grads.split_at(model_params.len());
    assert!(
        model_grads.iter().all(|g| !g.defined()),
        "value loss reached the world model"
    );
    assert!(value_grads.iter().all(|g| g.defined()));
}

#[test]
fn a_full_update_moves_every_part_state() {
    full_update(false, 0);
}

#[test]
fn a_full_update_moves_every_part_pixels() {
    full_update(true, 0);
}

/// The one-hot draws pass the probabilities' gradient straight through: the distribution
/// layers, the posterior's inputs and the prior's train like the Gaussian's.
#[test]
fn a_full_update_with_discrete_latents_moves_every_part() {
    full_update(false, 5);
}

fn full_update(pixels: bool, classes: i64) {
    let mut config = tiny_config(pixels);
    config.model.classes = classes;
    // With the KL under the free nats the prior would (correctly) get no gradient.
    config.train.free_nats = 0.0;
    let dims = dims(pixels);
    let mut agent = agent(&config, dims);
    let batch = synthetic_batch(&config, dims, 4);
    let before = snapshot(&agent);
    let metrics = agent.update(&batch, 0).unwrap();
    for (name, value) in &metrics {
        assert!(value.is_finite(), "{name} = {value}");
    }
    let names: Vec<&str> = metrics.iter().map(|m| m.0).collect();
    assert!(names.contains(&if pixels { "pixels_loss" } else { "state_loss" }));
    let moved = changed(&before, &snapshot(&agent));
    for group in ["model", "actor", "value"] {
        assert!(
            moved.iter().any(|n| group_of(n) == group),
            "{group} did not move"
        );
    }
    // Every weight of the model is trained (nothing is left out of an optimiser).
    let still: Vec<&String> = before
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !moved.contains(n))
        .collect();
    assert!(still.is_empty(), "weights that did not move: {still:?}");
}

#[test]
fn world_model_overfits_a_fixed_batch() {
    world_model_overfits(0);
}

#[test]
fn world_model_with_discrete_latents_overfits_a_fixed_batch() {
    world_model_overfits(8);
}

fn world_model_overfits(classes: i64) {
    let mut config = tiny_config(false);
    config.model.classes = classes;
    config.model.deter = 32;
    config.model.stoch = 8;
    config.model.hidden = 32;
    config.model.units = 64;
    config.train.model_lr = 3e-3;
    let dims = dims(false);
    let mut agent = agent(&config, dims);
    let batch = synthetic_batch(&config, dims, 5);
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    // Squared-error parts of the negative log-likelihoods (without the constant).
    let errors = |agent: &dreamer_trainer::agent::Agent| {
        let wm = agent.world_model_loss(&batch, &noise(agent, 0).posterior);
        let recon = -wm.state_loglik.unwrap().double_value(&[]) - 3.0 * half_log_2pi;
        let reward = -wm.reward_loglik.double_value(&[]) - half_log_2pi;
        (recon, reward)
    };
    let (recon0, reward0) = errors(&agent);
    for step in 0..300 {
        let wm = agent.world_model_loss(&batch, &noise(&agent, step).posterior);
        let grads = Tensor::run_backward(&[&wm.loss], &agent.model_opt.params, false, false);
        agent.model_opt.apply(&grads);
    }
    let (recon1, reward1) = errors(&agent);
    assert!(recon1 < 0.1 * recon0, "reconstruction {recon0} -> {recon1}");
    assert!(reward1 < 0.1 * reward0, "reward {reward0} -> {reward1}");
}

#[test]
fn a_non_finite_loss_names_the_loss_and_the_update() {
    let config = tiny_config(false);
    let dims = dims(false);
    let mut agent = agent(&config, dims);
    let mut batch = synthetic_batch(&config, dims, 6);
    batch.reward = batch.reward.fill(f64::NAN);
    let before = snapshot(&agent);
    match agent.update(&batch, 17) {
        Err(TrainError::NonFinite { loss, update, .. }) => {
            assert_eq!(loss, "model_loss");
            assert_eq!(update, 17);
        }
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    assert!(
        changed(&before, &snapshot(&agent)).is_empty(),
        "weights changed"
    );
}

#[test]
fn policy_step_is_deterministic_without_noise() {
    let config = tiny_config(true);
    let dims = dims(true);
    let agent = agent(&config, dims);
    let batch = synthetic_batch(&config, dims, 7);
    let obs = dreamer_trainer::networks::Obs {
        state: None,
        pixels: Some(batch.obs.pixels.as_ref().unwrap().select(1, 0)),
    };
    let latent = agent.rssm.initial(config.train.batch, tch::Device::Cpu);
    let prev = batch.action.select(1, 0);
    let (l1, a1) = agent.policy_step(&latent, &prev, &obs, None);
    let (l2, a2) = agent.policy_step(&latent, &prev, &obs, None);
    assert!(a1.equal(&a2) && l1.s.equal(&l2.s));
    assert!(
        l1.s.equal(&l1.mean),
        "zero noise: the posterior sample is its mean"
    );
    assert!(a1.abs().max().double_value(&[]) < 1.0);
}

#[test]
fn policy_entropy_estimate_is_minus_log_density_and_finite_when_saturated() {
    tch::manual_seed(0);
    let config = tiny_config(false);
    let dims = dims(false);
    let agent = agent(&config, dims);
    let feat_size = config.model.deter + config.model.stoch;
    let feat = Tensor::randn([64, feat_size], (Kind::Float, tch::Device::Cpu));
    let noise = Tensor::randn([64, dims.action], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let (mean, std) = agent.actor.dist(&feat);
    let (action, entropy) = agent.actor.sample_with_entropy(&feat, &noise);
    assert_eq!(entropy.size(), vec![64]);
    // Away from saturation the textbook density is accurate: -log N(u) + log(1 - tanh(u)^2).
    let pre = &mean + &std * &noise;
    let expected = (noise.square() * 0.5
        + std.log()
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + (-action.square() + 1.0).log())
    .sum_dim_intlist(-1, false, Kind::Float);
    let unsaturated = pre.abs().max_dim(-1, false).0.lt(3.0);
    let gap = (&entropy - &expected).abs().masked_select(&unsaturated);
    assert!(gap.numel() > 0);
    assert!(gap.max().double_value(&[]) < 1e-3, "{gap}");
    // A saturated sample (tanh(u) rounds to 1, where the textbook log(1 - a^2) is -inf)
    // still has a finite entropy, and a low one.
    let far = noise.ones_like() * 10.0;
    let (saturated_action, saturated) = agent.actor.sample_with_entropy(&feat, &far);
    assert!(saturated_action.abs().min().double_value(&[]) > 0.999);
    assert!(saturated.isfinite().all().int64_value(&[]) == 1);
    assert!(saturated.max().double_value(&[]) < 0.0, "{saturated}");
}

#[test]
fn entropy_weight_adapts_towards_the_target_entropy() {
    let dims = dims(false);
    let batch = synthetic_batch(&tiny_config(false), dims, 3);
    // (target per action dimension, whether the weight must rise): no tanh-Normal on [-1, 1]
    // reaches +5 nats, and every one exceeds -100.
    for (target, rises) in [(5.0, true), (-100.0, false)] {
        let mut config = tiny_config(false);
        config.train.actor_entropy = 1e-2;
        config.train.entropy_lr = 0.01;
        config.train.entropy_target = target;
        let mut agent = agent(&config, dims);
        let metrics = agent.update(&batch, 0).unwrap();
        let metric = |name: &str| metrics.iter().find(|(n, _)| *n == name).unwrap().1;
        let entropy = metric("actor_entropy");
        let expected = (1e-2f64.ln() + 0.01 * (target - entropy)).exp();
        assert!(close(agent.entropy_scale, expected), "{target}");
        assert_eq!(metric("entropy_scale"), agent.entropy_scale);
        assert_eq!(agent.entropy_scale > 1e-2, rises, "{target}");
    }
    // Without a step size the weight is the configured constant.
    let mut config = tiny_config(false);
    config.train.actor_entropy = 3e-3;
    config.train.entropy_lr = 0.0;
    let mut fixed = agent(&config, dims);
    fixed.update(&batch, 0).unwrap();
    assert_eq!(fixed.entropy_scale, 3e-3);
}

#[test]
fn the_return_scale_follows_the_percentile_range_and_divides_the_actor_loss() {
    use dreamer_trainer::agent::next_return_scale;
    // 0..=100: the 5th and 95th percentiles are 5 and 95.
    let returns = Tensor::arange(101, (Kind::Float, Device::Cpu)).reshape([101, 1]);
    assert!(close(next_return_scale(0.0, &returns, 0.01), 0.9));
    assert!(close(next_return_scale(50.0, &returns, 0.5), 70.0));

    let dims = dims(false);
    let batch = synthetic_batch(&tiny_config(false), dims, 3);
    let mut config = tiny_config(false);
    config.train.return_norm_rate = 0.5;
    let mut normed = agent(&config, dims);
    let metrics = normed.update(&batch, 0).unwrap();
    let metric = |name: &str| metrics.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(normed.return_scale > 0.0);
    assert_eq!(metric("return_scale"), normed.return_scale);
    // With a scale above 1, the same update's actor loss (without an entropy bonus) is the
    // plain one divided by it.
    let mut base = tiny_config(false);
    (base.train.actor_entropy, base.train.entropy_lr) = (0.0, 0.0);
    let plain = agent(&base, dims);
    base.train.return_norm_rate = 0.5;
    let mut scaled = agent(&base, dims);
    scaled.return_scale = 4.0;
    let loss = |a: &dreamer_trainer::agent::Agent| {
        let noise = dreamer_trainer::noise::UpdateNoise::draw(&a.config, dims, 7, Device::Cpu);
        let wm = a.world_model_loss(&batch, &noise.posterior);
        a.behaviour_loss(&wm.post, &noise.imag_state, &noise.imag_action)
            .actor_loss
            .double_value(&[])
    };
    assert!(close(loss(&scaled), loss(&plain) / 4.0));
    // Off: the scale stays 0 and the divisor 1.
    let mut config = tiny_config(false);
    config.train.return_norm_rate = 0.0;
    let mut off = agent(&config, dims);
    off.update(&batch, 0).unwrap();
    assert_eq!((off.return_scale, off.return_divisor()), (0.0, 1.0));
}

#[test]
fn a_symlog_encoder_sees_the_compressed_state() {
    use dreamer_trainer::networks::{Obs, symlog};
    let dims = dims(false);
    let plain = agent(&tiny_config(false), dims);
    let mut config = tiny_config(false);
    config.model.symlog_obs = true;
    // Same seed, same weights: only the input transform differs.
    let compressed = agent(&config, dims);
    let x = Tensor::from_slice(&[-50.0f32, -0.5, 0.0, 0.25, 3.0, 1000.0])
        .reshape([2, 3])
        .narrow(1, 0, dims.state.unwrap());
    let obs = |state: Tensor| Obs {
        state: Some(state),
        pixels: None,
    };
    let direct = compressed.encoder.forward(&obs(x.shallow_clone()));
    let by_hand = plain.encoder.forward(&obs(symlog(&x)));
    assert!(direct.allclose(&by_hand, 1e-6, 1e-6, false));
    assert!(!direct.allclose(&plain.encoder.forward(&obs(x)), 1e-3, 1e-3, false));
    // sign(x) ln(1 + |x|)
    let y = symlog(&Tensor::from_slice(&[
        -(std::f32::consts::E - 1.0),
        0.0,
        1e3,
    ]));
    let y: Vec<f32> = Vec::try_from(y).unwrap();
    assert!((y[0] + 1.0).abs() < 1e-6 && y[1] == 0.0 && (y[2] - 1001f32.ln()).abs() < 1e-4);
}

#[test]
fn the_slow_value_follows_the_value_and_the_returns_bootstrap_from_it() {
    let dims = dims(false);
    let batch = synthetic_batch(&tiny_config(false), dims, 3);
    let mut config = tiny_config(false);
    config.train.slow_value_rate = 0.25;
    let mut slowed = agent(&config, dims);
    let weights = |a: &Agent| a.slow_value.as_ref().unwrap().named_weights();
    let value = |a: &Agent| -> Vec<(String, Tensor)> {
        a.named_weights()
            .into_iter()
            .filter(|(n, _)| n.starts_with("value."))
            .map(|(n, t)| (n, t.copy()))
            .collect()
    };
    // It starts as a copy of the value network, under the same names.
    let before = value(&slowed);
    let start = weights(&slowed);
    assert_eq!(start.len(), before.len());
    for ((n, s), (m, v)) in start.iter().zip(&before) {
        assert_eq!(n, m);
        assert!(s.equal(v), "{n}");
    }
    // Off, the same seed gives the same value target: the copy changes nothing yet.
    let plain = agent(&tiny_config(false), dims);
    let target = |a: &Agent| {
        let noise = dreamer_trainer::noise::UpdateNoise::draw(&a.config, dims, 5, Device::Cpu);
        let wm = a.world_model_loss(&batch, &noise.posterior);
        a.behaviour_loss(&wm.post, &noise.imag_state, &noise.imag_action)
            .value_target
    };
    assert!(target(&slowed).equal(&target(&plain)));

    // One update: each slow weight moves a quarter of the way to the updated value's.
    slowed.update(&batch, 0).unwrap();
    let after = value(&slowed);
    assert!(!changed(&before, &after).is_empty());
    for ((n, s), ((_, b), (_, a))) in weights(&slowed).iter().zip(before.iter().zip(&after)) {
        let expected = b * 0.75 + a * 0.25;
        assert!(s.allclose(&expected, 1e-6, 1e-7, false), "{n}");
    }
    // The returns bootstrap from the slow copy: zeroing its weights (the value network
    // untouched) changes the target.
    let target_before = target(&slowed);
    tch::no_grad(|| {
        for (_, mut w) in weights(&slowed) {
            let _ = w.zero_();
        }
    });
    assert!(changed(&value(&slowed), &after).is_empty());
    assert!(!target(&slowed).allclose(&target_before, 1e-6, 1e-6, false));
    // With rate 1 the copy is the value network after every update.
    config.train.slow_value_rate = 1.0;
    let mut copied = agent(&config, dims);
    copied.update(&batch, 0).unwrap();
    assert!(changed(&weights(&copied), &value(&copied)).is_empty());
}

#[test]
fn two_hot_heads_start_at_zero_and_train() {
    let dims = dims(false);
    let mut config = tiny_config(false);
    config.model.two_hot_bins = 255;
    config.train.model_lr = 1e-2;
    let mut two_hot = agent(&config, dims);
    let feat = Tensor::randn([5, 16], (Kind::Float, Device::Cpu));
    // Zero up to the float sum of the symmetric bins.
    assert!(two_hot.reward.mean(&feat).abs().max().double_value(&[]) < 1e-5);
    assert!(two_hot.value.mean(&feat).abs().max().double_value(&[]) < 1e-5);
    // Only the heads' output layers start at zero.
    let weights = two_hot.named_weights();
    let zero = |name: &str| {
        weights
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .abs()
            .max()
            .double_value(&[])
            == 0.0
    };
    assert!(zero("reward.out.weight") && zero("value.out.bias"));
    assert!(!zero("reward.l0.weight") && !zero("actor.out.weight"));
    // Rewards of a thousand: the same step sizes learn them (the Gaussian head's loss would
    // be in the hundreds of thousands).
    let mut batch = synthetic_batch(&config, dims, 3);
    batch.reward = &batch.reward * 1000.0;
    let first = two_hot.update(&batch, 0).unwrap();
    let reward_loss = |m: &[(&str, f64)]| m.iter().find(|(n, _)| *n == "reward_loss").unwrap().1;
    // Uniform logits over 255 bins: the cross-entropy is ln 255.
    assert!(close(reward_loss(&first), 255f64.ln()), "{first:?}");
    let mut last = first.clone();
    for i in 1..30 {
        last = two_hot.update(&batch, i).unwrap();
    }
    assert!(reward_loss(&last) < reward_loss(&first) - 0.5, "{last:?}");
}
