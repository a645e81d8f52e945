//! libtorch is linked and trains: a few Adam steps of a small MLP on CPU lower its loss.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn small_network_loss_falls_on_cpu() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "l0", 4, 32, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs.root() / "l1", 32, 1, Default::default()));
    let x = Tensor::randn([64, 4], (Kind::Float, Device::Cpu)); // [N, 4]
    let y = x.sum_dim_intlist(1, true, Kind::Float).sin(); // [N, 1]
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let loss_of = |net: &nn::Sequential| (net.forward(&x) - &y).square().mean(Kind::Float);
    let before = f64::try_from(loss_of(&net)).unwrap();
    for _ in 0..200 {
        opt.backward_step(&loss_of(&net));
    }
    let after = f64::try_from(loss_of(&net)).unwrap();
    assert!(
        after < 0.2 * before,
        "loss did not fall enough: {before} -> {after}"
    );
}
