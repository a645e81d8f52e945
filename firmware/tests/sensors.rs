//! Sensor readings through embedded-hal-mock buses: raw encoder and counter bytes become the
//! task's observation vector, with finite-difference velocities.

use std::f32::consts::TAU;

use dreamer_firmware::{
    COUNTER_READ, ENCODER_ANGLE_REGISTER, ENCODER_COUNTS, SensorError, Sensors, TaskLayout,
};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTx};

/// Checks that every expected bus transaction happened.
fn finish(sensors: Sensors<I2cMock, SpiMock<u8>>) {
    let (mut i2c, mut spi) = sensors.release();
    i2c.done();
    spi.done();
}

fn encoder_tx(address: u8, count: u16) -> I2cTx {
    I2cTx::write_read(
        address,
        vec![ENCODER_ANGLE_REGISTER],
        vec![(count >> 6) as u8, (count & 0x3F) as u8],
    )
}

fn counter_tx(count: i32) -> [SpiTx<u8>; 3] {
    let b = count.to_be_bytes();
    [
        SpiTx::transaction_start(),
        SpiTx::transfer_in_place(
            vec![COUNTER_READ, 0, 0, 0, 0],
            vec![0, b[0], b[1], b[2], b[3]],
        ),
        SpiTx::transaction_end(),
    ]
}

#[test]
fn cartpole_observation_from_counts_with_finite_difference_velocities() {
    // pole at a quarter turn (pi/2), then one count further; cart at 0.1 m then 0.1005 m.
    let i2c = I2cMock::new(&[encoder_tx(0x40, 4096), encoder_tx(0x40, 4097)]);
    let mut spi_tx = Vec::new();
    spi_tx.extend(counter_tx(2000));
    spi_tx.extend(counter_tx(2010));
    let spi = SpiMock::new(&spi_tx);
    let mut sensors = Sensors::new(TaskLayout::Cartpole, i2c, spi, 20_000.0);
    let first = sensors.sample(1_000_000).unwrap();
    assert_eq!(first.len(), 5);
    assert!((first[0] - 0.1).abs() < 1e-6);
    assert!(first[1].abs() < 1e-6 && (first[2] - 1.0).abs() < 1e-6);
    assert_eq!((first[3], first[4]), (0.0, 0.0));
    let second = sensors.sample(1_010_000).unwrap();
    assert!((second[3] - 0.05).abs() < 1e-4, "x_dot {}", second[3]);
    let count_rate = TAU / ENCODER_COUNTS as f32 / 0.01;
    assert!(
        (second[4] - count_rate).abs() < 1e-3,
        "theta_dot {}",
        second[4]
    );
    finish(sensors);
}

#[test]
fn velocity_wraps_across_the_encoder_zero() {
    let i2c = I2cMock::new(&[
        encoder_tx(0x40, ENCODER_COUNTS as u16 - 2),
        encoder_tx(0x40, 2),
    ]);
    let spi = SpiMock::new(&[]);
    let mut sensors = Sensors::new(TaskLayout::Pendulum, i2c, spi, 1.0);
    sensors.sample(0).unwrap();
    let obs = sensors.sample(50_000).unwrap();
    let expected = 4.0 * TAU / ENCODER_COUNTS as f32 / 0.05;
    assert!((obs[2] - expected).abs() < 1e-3, "theta_dot {}", obs[2]);
    finish(sensors);
}

#[test]
fn acrobot_reads_two_encoders() {
    let quarter = (ENCODER_COUNTS / 4) as u16;
    let i2c = I2cMock::new(&[encoder_tx(0x40, quarter), encoder_tx(0x41, quarter)]);
    let spi = SpiMock::new(&[]);
    let mut sensors = Sensors::new(TaskLayout::Acrobot, i2c, spi, 1.0);
    let obs = sensors.sample(0).unwrap();
    // q1 = pi/2, q1 + q2 = pi
    let expected = [1.0, 0.0, 0.0, -1.0, 0.0, 0.0];
    for (got, want) in obs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-5, "{obs:?}");
    }
    finish(sensors);
}

#[test]
fn bus_errors_are_sensor_errors() {
    let i2c = I2cMock::new(&[encoder_tx(0x40, 0).with_error(embedded_hal::i2c::ErrorKind::Other)]);
    let spi = SpiMock::new(&[]);
    let mut sensors = Sensors::new(TaskLayout::Pendulum, i2c, spi, 1.0);
    assert_eq!(sensors.sample(0), Err(SensorError::Encoder { index: 0 }));
    finish(sensors);
}
