//! Rendering snapshots: fixed poses give fixed frames, and the pose is where it should be.

use std::f64::consts::PI;

use dreamer_tasks::acrobot::AcrobotPlant;
use dreamer_tasks::cartpole::CartpolePlant;
use dreamer_tasks::pendulum::PendulumPlant;
use dreamer_tasks::{FRAME_BYTES, FRAME_SIZE, Plant, make_plant};

fn frame_of(plant: &dyn Plant) -> Vec<u8> {
    let mut frame = vec![0u8; FRAME_BYTES];
    plant.render(&mut frame);
    frame
}

fn pixel(frame: &[u8], column: usize, row: usize) -> [u8; 3] {
    let start = (row * FRAME_SIZE + column) * 3;
    [frame[start], frame[start + 1], frame[start + 2]]
}

/// 64-bit FNV-1a: a stable checksum of a frame.
fn checksum(frame: &[u8]) -> u64 {
    frame.iter().fold(0xcbf29ce484222325, |hash, &byte| {
        (hash ^ byte as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn pendulum_upright_rod_is_above_the_pivot() {
    let up = frame_of(&PendulumPlant {
        theta: 0.0,
        theta_dot: 0.0,
    });
    let down = frame_of(&PendulumPlant {
        theta: PI,
        theta_dot: 0.0,
    });
    // Scale 64 / 2.6 px per metre: the rod's middle is ~12 px above / below the centre.
    assert_eq!(pixel(&up, 32, 20), [204, 64, 64]);
    assert_eq!(pixel(&down, 32, 44), [204, 64, 64]);
    assert_ne!(pixel(&up, 32, 44), [204, 64, 64]);
    // A positive angle tilts the rod to the left (counter-clockwise).
    let tilted = frame_of(&PendulumPlant {
        theta: PI / 2.0,
        theta_dot: 0.0,
    });
    assert_eq!(pixel(&tilted, 20, 32), [204, 64, 64]);
}

#[test]
fn cartpole_pose_is_readable() {
    let plant = CartpolePlant {
        cart_position: 1.0,
        pole_angle: 0.0,
        cart_velocity: 0.0,
        pole_angular_velocity: 0.0,
    };
    let frame = frame_of(&plant);
    // 16 px per metre, rail at row 32: cart centred at column 48, pole straight up from it.
    assert_eq!(pixel(&frame, 45, 31), [178, 127, 76], "cart body");
    assert_eq!(pixel(&frame, 48, 22), [250, 196, 110], "pole");
    assert_ne!(pixel(&frame, 16, 22), [250, 196, 110]);
    // The pole tilts towards +x for a positive angle.
    let tilted = frame_of(&CartpolePlant {
        pole_angle: PI / 2.0,
        ..plant
    });
    assert_eq!(pixel(&tilted, 56, 32), [250, 196, 110]);
}

#[test]
fn acrobot_shows_target_and_both_links() {
    let plant = AcrobotPlant {
        shoulder_angle: 0.0,
        elbow_angle: PI / 2.0,
        shoulder_velocity: 0.0,
        elbow_velocity: 0.0,
    };
    let frame = frame_of(&plant);
    // 64 / 4.6 px per metre around (0, 2): upper link straight up, lower link pointing +x.
    assert_eq!(pixel(&frame, 32, 25), [214, 140, 70], "upper arm");
    assert_eq!(pixel(&frame, 39, 18), [252, 204, 120], "lower arm");
    assert_eq!(pixel(&frame, 32, 4), [220, 60, 60], "target");
}

#[test]
fn frames_of_known_poses_are_unchanged() {
    let poses: [(&str, &[f64]); 3] = [
        ("pendulum", &[0.7, 0.0]),
        ("cartpole-swingup", &[-0.6, 2.5, 0.0, 0.0]),
        ("acrobot-swingup", &[1.1, -0.8, 0.0, 0.0]),
    ];
    let checksums: Vec<u64> = poses
        .iter()
        .map(|(task, state)| {
            let mut plant = make_plant(task).unwrap();
            plant.set_state(state).unwrap();
            checksum(&frame_of(plant.as_ref()))
        })
        .collect();
    assert_eq!(
        checksums,
        [
            1799463799435362233,
            3457600268297364655,
            9376170856381728513
        ],
        "frame checksums"
    );
}

#[test]
fn wrongly_sized_buffers_do_not_panic() {
    let plant = PendulumPlant::default();
    let full = frame_of(&plant);
    let mut short = vec![1u8; 100];
    plant.render(&mut short);
    assert_eq!(short[..], full[..100]);
    let mut long = vec![1u8; FRAME_BYTES + 9];
    plant.render(&mut long);
    assert_eq!(long[..FRAME_BYTES], full[..]);
    assert!(long[FRAME_BYTES..].iter().all(|&b| b == 0));
}
