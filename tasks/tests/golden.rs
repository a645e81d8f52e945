//! Golden values from the task definitions (docs: shared reference `environments.md`).

use std::f64::consts::PI;

use dreamer_tasks::Plant;
use dreamer_tasks::cartpole::{self, CartpolePlant, POLE_INERTIA};
use dreamer_tasks::pendulum::{self, PendulumPlant};

/// Pendulum-v1, one step each from (theta, theta_dot) = (1, 0). The table is printed to 8
/// decimals, so agreement is checked to half a unit in the last printed place.
#[test]
fn pendulum_single_steps_match_gymnasium() {
    let table = [
        (2.0, 1.04655516, 0.93110324, -1.00400000),
        (-2.0, 1.11057423, 1.28038126, -1.18597303),
        (0.5, 1.21194156, 2.02734667, -1.39756273),
        (3.0, 1.36342013, 3.02957140, -1.88381579),
    ];
    // Each row continues from the previous row's state (the table is one trajectory).
    let mut plant = PendulumPlant {
        theta: 1.0,
        theta_dot: 0.0,
    };
    for (torque, theta, theta_dot, expected_reward) in table {
        let reward = pendulum::reward(&plant, torque);
        plant.step_physics(&[torque]).unwrap();
        assert!(
            (plant.theta - theta).abs() < 5e-9,
            "theta {} vs {theta}",
            plant.theta
        );
        assert!(
            (plant.theta_dot - theta_dot).abs() < 5e-9,
            "theta_dot {} vs {theta_dot}",
            plant.theta_dot
        );
        assert!(
            (reward - expected_reward).abs() < 5e-9,
            "reward {reward} vs {expected_reward}"
        );
    }
}

/// DMC cartpole (swingup reward), a five-step trajectory, to 1e-12.
#[test]
fn cartpole_trajectory_matches_mujoco() {
    let table = [
        (
            1.0,
            0.10049216832156717,
            2.9474337826386074,
            0.09843291100017512,
            0.6681159533061739,
            0.007343166802999262,
        ),
        (
            -0.5,
            0.10124045729653242,
            2.9539143240238808,
            0.0512156329356972,
            0.627814002647885,
            0.008168192173311042,
        ),
        (
            0.3,
            0.10190472527052334,
            2.960541022512551,
            0.08163279968251441,
            0.6973725769131199,
            0.007826289834532577,
        ),
        (
            2.0,
            0.10321293561267403,
            2.9683443725571244,
            0.180007186107203,
            0.8631447873282367,
            0.0057717422035617,
        ),
        (
            -1.0,
            0.10453338180470935,
            2.9764101402805396,
            0.08406742315491525,
            0.7497675087027184,
            0.005290651507618023,
        ),
    ];
    let mut plant = CartpolePlant {
        cart_position: 0.1,
        pole_angle: PI - 0.2,
        cart_velocity: 0.0,
        pole_angular_velocity: 0.5,
    };
    for (control, x, theta, x_dot, theta_dot, expected_reward) in table {
        plant.step_physics(&[control]).unwrap();
        let reward = cartpole::reward(&plant, control);
        let got = [
            plant.cart_position,
            plant.pole_angle,
            plant.cart_velocity,
            plant.pole_angular_velocity,
            reward,
        ];
        let want = [x, theta, x_dot, theta_dot, expected_reward];
        for (name, (g, w)) in ["x", "theta", "x_dot", "theta_dot", "reward"]
            .iter()
            .zip(got.iter().zip(want))
        {
            assert!(
                (g - w).abs() < 1e-12,
                "control {control}: {name} = {g:.17}, expected {w:.17}"
            );
        }
    }
}

#[test]
fn pole_inertia_is_mujoco_capsule_inertia() {
    assert!((POLE_INERTIA - 0.009424593).abs() < 5e-10, "{POLE_INERTIA}");
}
