//! The control loop driven through embedded-hal-mock peripherals, a scripted serial port
//! and a simulated clock, so every timing case is exact.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec as StdVec;

use dreamer_firmware::{
    Clock, Config, ENCODER_ANGLE_REGISTER, ENCODER_BASE_ADDRESS, Firmware, Motor, NoRewards,
    Rewards, Sensors, StreamLink, TaskLayout,
};
use dreamer_wire::{
    Action, EpisodeStep, FaultKind, FaultReport, FrameDecoder, HandshakeResult, Hello, Layout,
    MAX_FRAME, Message, Mode, PROTOCOL_VERSION, encode_frame,
};
use embedded_hal::delay::DelayNs;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::pwm::{Mock as PwmMock, Transaction as PwmTx};
use embedded_hal_mock::eh1::spi::Mock as SpiMock;
use embedded_io::{Read, ReadReady, Write};
use heapless::{String, Vec};

const PERIOD: u64 = 10_000;
const DEADLINE: u64 = 5_000;
const MAX_DUTY: u16 = 1000;

#[derive(Clone, Default)]
struct SimClock(Rc<Cell<u64>>);

impl Clock for SimClock {
    fn now_us(&mut self) -> u64 {
        self.0.get()
    }
}

impl DelayNs for SimClock {
    fn delay_ns(&mut self, ns: u32) {
        self.0.set(self.0.get() + u64::from(ns.div_ceil(1000)));
    }
}

/// Bytes become readable at their scheduled time; everything written is kept.
#[derive(Clone)]
struct ScriptedSerial {
    clock: SimClock,
    rx: Rc<RefCell<VecDeque<(u64, u8)>>>,
    tx: Rc<RefCell<StdVec<u8>>>,
}

impl embedded_io::ErrorType for ScriptedSerial {
    type Error = core::convert::Infallible;
}

impl ReadReady for ScriptedSerial {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        let now = self.clock.0.get();
        Ok(self.rx.borrow().front().is_some_and(|&(t, _)| t <= now))
    }
}

impl Read for ScriptedSerial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let now = self.clock.0.get();
        let mut rx = self.rx.borrow_mut();
        let mut n = 0;
        while n < buf.len() && rx.front().is_some_and(|&(t, _)| t <= now) {
            buf[n] = rx.pop_front().unwrap().1;
            n += 1;
        }
        Ok(n)
    }
}

impl Write for ScriptedSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl ScriptedSerial {
    fn send_at(&self, at: u64, message: &Message) {
        let mut buf = [0u8; MAX_FRAME];
        self.send_bytes_at(at, encode_frame(message, &mut buf));
    }
    fn send_bytes_at(&self, at: u64, bytes: &[u8]) {
        self.rx.borrow_mut().extend(bytes.iter().map(|&b| (at, b)));
    }
    /// Messages the firmware sent since the last call.
    fn sent(&self, decoder: &mut FrameDecoder) -> StdVec<Message> {
        let bytes = core::mem::take(&mut *self.tx.borrow_mut());
        bytes
            .iter()
            .filter_map(|&b| decoder.push(b))
            .map(|r| r.expect("firmware sent a bad frame").message)
            .collect()
    }
}

/// The firmware under test, measuring rewards with `R`.
type TestFirmware<R = NoRewards> =
    Firmware<I2cMock, SpiMock<u8>, PwmMock, PinMock, StreamLink<ScriptedSerial>, R>;

fn config(max_missed: u16) -> Config {
    Config {
        task: String::try_from("pendulum").unwrap(),
        period_us: PERIOD as u32,
        deadline_us: DEADLINE as u32,
        max_missed,
        heartbeat_every: 0,
        poll_interval_us: 500,
    }
}

/// `ticks` encoder reads at count 0 (pendulum upright).
fn encoder_reads(ticks: usize) -> StdVec<I2cTx> {
    (0..ticks)
        .map(|_| {
            I2cTx::write_read(
                ENCODER_BASE_ADDRESS,
                vec![ENCODER_ANGLE_REGISTER],
                vec![0, 0],
            )
        })
        .collect()
}

/// PWM and direction transactions of `Motor::apply(command)`.
fn apply(command: f32, pwm: &mut StdVec<PwmTx>, pin: &mut StdVec<PinTx>) {
    pwm.push(PwmTx::max_duty_cycle(MAX_DUTY));
    pin.push(PinTx::set(if command >= 0.0 {
        State::High
    } else {
        State::Low
    }));
    pwm.push(PwmTx::set_duty_cycle(
        (command.abs() * f32::from(MAX_DUTY)).round() as u16,
    ));
}

/// A pendulum firmware with the test timing, `max_missed` and the expected bus transactions.
fn build(
    max_missed: u16,
    i2c: &[I2cTx],
    pwm: &[PwmTx],
    pin: &[PinTx],
) -> (TestFirmware, SimClock, ScriptedSerial) {
    build_with(config(max_missed), i2c, pwm, pin)
}

/// A pendulum firmware with `config` and the expected bus transactions.
fn build_with(
    config: Config,
    i2c: &[I2cTx],
    pwm: &[PwmTx],
    pin: &[PinTx],
) -> (TestFirmware, SimClock, ScriptedSerial) {
    build_measuring(config, i2c, pwm, pin, NoRewards)
}

/// A pendulum firmware with `config`, the expected bus transactions and a reward source.
fn build_measuring<R: Rewards>(
    config: Config,
    i2c: &[I2cTx],
    pwm: &[PwmTx],
    pin: &[PinTx],
    rewards: R,
) -> (TestFirmware<R>, SimClock, ScriptedSerial) {
    let clock = SimClock::default();
    let serial = ScriptedSerial {
        clock: clock.clone(),
        rx: Rc::default(),
        tx: Rc::default(),
    };
    let sensors = Sensors::new(
        TaskLayout::Pendulum,
        I2cMock::new(i2c),
        SpiMock::new(&[]),
        1.0,
    );
    let motor = Motor::new(PwmMock::new(pwm), PinMock::new(pin));
    let link = StreamLink::new(serial.clone());
    let firmware = Firmware::with_rewards(config, sensors, motor, link, rewards);
    (firmware, clock, serial)
}

fn finish<R: Rewards>(firmware: TestFirmware<R>) {
    let (sensors, motor, _) = firmware.shutdown();
    let (mut i2c, mut spi) = sensors.release();
    let (mut pwm, mut pin) = motor.release();
    i2c.done();
    spi.done();
    pwm.done();
    pin.done();
}

fn hello(task: &str, layout: Layout, version: u16) -> Message {
    Message::Hello(Hello {
        protocol_version: version,
        task: String::try_from(task).unwrap(),
        layout,
    })
}

fn action(seq: u32, values: &[f32]) -> Message {
    Message::Action(Action {
        seq,
        values: Vec::from_slice(values).unwrap(),
    })
}

fn observation_seqs(messages: &[Message]) -> StdVec<u32> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Observation(o) => Some(o.seq),
            _ => None,
        })
        .collect()
}

fn faults(messages: &[Message]) -> StdVec<FaultReport> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Fault(f) => Some(*f),
            _ => None,
        })
        .collect()
}

#[test]
fn actions_hold_then_safe_state_then_recovery() {
    let ticks = 8;
    let mut pwm = vec![PwmTx::set_duty_cycle(0)]; // off at start
    let mut pin = StdVec::new();
    apply(0.5, &mut pwm, &mut pin); // seq 1
    apply(1.0, &mut pwm, &mut pin); // seq 2, clamped from 2.0
    pwm.push(PwmTx::set_duty_cycle(0)); // safe state after seq 5
    apply(-0.25, &mut pwm, &mut pin); // seq 6 recovers
    pwm.push(PwmTx::set_duty_cycle(0)); // shutdown
    let (mut fw, mut clock, serial) = build(3, &encoder_reads(ticks), &pwm, &pin);
    let mut peer = FrameDecoder::new();
    let layout = TaskLayout::Pendulum.wire_layout();

    // tick 1 (t=0): no session, nothing sent; the hello arrives before tick 2.
    serial.send_at(2_000, &hello("pendulum", layout, PROTOCOL_VERSION));
    fw.tick(&mut clock.clone(), &mut clock);
    assert!(serial.sent(&mut peer).is_empty());
    assert_eq!(fw.mode(), Mode::AwaitingHandshake);

    // tick 2 (t=10ms): handshake accepted, observation 1 answered on time.
    serial.send_at(11_000, &action(1, &[0.5]));
    fw.tick(&mut clock.clone(), &mut clock);
    let sent = serial.sent(&mut peer);
    assert!(
        matches!(&sent[0], Message::HelloAck(a) if a.result == HandshakeResult::Accepted && !a.rewards)
    );
    assert_eq!(observation_seqs(&sent), [1]);
    assert_eq!(fw.command(), [0.5]);

    // tick 3: out-of-range action is clamped and counted.
    serial.send_at(21_000, &action(2, &[2.0]));
    fw.tick(&mut clock.clone(), &mut clock);
    assert_eq!(fw.command(), [1.0]);
    assert_eq!(fw.stats().clamped_actions, 1);
    // Both answers arrived 1 ms after their sample, on a tick grid without jitter.
    let round_trip = fw.round_trip().stats();
    assert_eq!(
        (round_trip.count, round_trip.min_us, round_trip.max_us),
        (2, 1000, 1000)
    );
    assert_eq!(fw.period_jitter().stats().max_us, 0);

    // tick 4: the answer comes after the deadline: miss 1, the last action is held.
    serial.send_at(30_000 + DEADLINE + 1_000, &action(3, &[0.1]));
    fw.tick(&mut clock.clone(), &mut clock);
    assert_eq!(fw.command(), [1.0]);
    assert_eq!(fw.mode(), Mode::Running);
    // tick 5: no answer: miss 2.
    fw.tick(&mut clock.clone(), &mut clock);
    assert_eq!(fw.stats().late_actions, 1);
    assert!(faults(&serial.sent(&mut peer)).is_empty());
    // tick 6: only an old action: miss 3 -> safe state and a fault report.
    serial.send_at(51_000, &action(2, &[0.3]));
    fw.tick(&mut clock.clone(), &mut clock);
    let sent = serial.sent(&mut peer);
    assert_eq!(fw.mode(), Mode::Safe);
    assert!(fw.command().is_empty());
    assert_eq!(
        faults(&sent),
        [FaultReport {
            seq: 5,
            kind: FaultKind::DeadlineMissed,
            active: true,
            consecutive_misses: 3
        }]
    );
    assert_eq!(fw.stats().stale_actions, 1);

    // tick 7: a valid on-time action recovers.
    serial.send_at(61_000, &action(6, &[-0.25]));
    fw.tick(&mut clock.clone(), &mut clock);
    let sent = serial.sent(&mut peer);
    assert_eq!(fw.mode(), Mode::Running);
    assert_eq!(fw.command(), [-0.25]);
    assert_eq!(
        faults(&sent),
        [FaultReport {
            seq: 6,
            kind: FaultKind::DeadlineMissed,
            active: false,
            consecutive_misses: 0
        }]
    );

    // tick 8: line noise and an action of the wrong length: counted, not applied.
    serial.send_bytes_at(71_000, &[0x07, 0x01, 0x00]);
    serial.send_at(71_000, &action(7, &[0.1, 0.2]));
    fw.tick(&mut clock.clone(), &mut clock);
    assert_eq!(fw.command(), [-0.25]);
    let sent = serial.sent(&mut peer);
    assert_eq!(observation_seqs(&sent), [7]);

    let stats = *fw.stats();
    assert_eq!(stats.ticks, 8);
    assert_eq!(stats.observations_sent, 7);
    assert_eq!(stats.actions_applied, 3);
    assert_eq!(stats.deadline_misses, 4);
    assert_eq!(stats.invalid_actions, 1);
    // Every session tick in the percentiles: 3 applied (1 ms each), 4 misses at one period.
    let every_tick = fw.round_trip_every_tick().stats();
    assert_eq!(
        (every_tick.count, every_tick.min_us, every_tick.max_us),
        (7, 1000, PERIOD as u32)
    );
    assert_eq!(every_tick.p50_us, PERIOD as u32);
    assert_eq!((stats.faults, stats.recoveries), (1, 1));
    assert_eq!(fw.link().bad_cobs, 1);
    assert_eq!(peer.counters().sequence_gaps, 0);
    finish(fw);
}

#[test]
fn rejected_handshakes_keep_the_motor_off() {
    let (mut fw, mut clock, serial) = build(
        2,
        &encoder_reads(3),
        &[PwmTx::set_duty_cycle(0), PwmTx::set_duty_cycle(0)],
        &[],
    );
    let mut peer = FrameDecoder::new();
    let layout = TaskLayout::Pendulum.wire_layout();
    let wrong_layout = TaskLayout::Cartpole.wire_layout();
    serial.send_at(1_000, &hello("pendulum", layout, PROTOCOL_VERSION + 1));
    serial.send_at(1_000, &hello("cartpole-swingup", layout, PROTOCOL_VERSION));
    serial.send_at(1_000, &hello("pendulum", wrong_layout, PROTOCOL_VERSION));
    serial.send_at(11_000, &action(1, &[0.5]));
    for _ in 0..3 {
        fw.tick(&mut clock.clone(), &mut clock);
    }
    let sent = serial.sent(&mut peer);
    let results: StdVec<_> = sent
        .iter()
        .filter_map(|m| match m {
            Message::HelloAck(a) => Some(a.result),
            _ => None,
        })
        .collect();
    assert_eq!(
        results,
        [
            HandshakeResult::VersionMismatch,
            HandshakeResult::TaskMismatch,
            HandshakeResult::LayoutMismatch
        ]
    );
    assert!(observation_seqs(&sent).is_empty());
    assert_eq!(fw.mode(), Mode::AwaitingHandshake);
    assert_eq!(fw.stats().handshakes_rejected, 3);
    assert_eq!(fw.stats().stale_actions, 1);
    finish(fw);
}

#[test]
fn sensor_failures_are_reported_and_lead_to_the_safe_state() {
    let failing = |_| {
        I2cTx::write_read(
            ENCODER_BASE_ADDRESS,
            vec![ENCODER_ANGLE_REGISTER],
            vec![0, 0],
        )
        .with_error(embedded_hal::i2c::ErrorKind::Bus)
    };
    let mut i2c = encoder_reads(1);
    i2c.extend((0..2).map(failing));
    let (mut fw, mut clock, serial) = build(
        2,
        &i2c,
        &[
            PwmTx::set_duty_cycle(0),
            PwmTx::set_duty_cycle(0),
            PwmTx::set_duty_cycle(0),
        ],
        &[],
    );
    let mut peer = FrameDecoder::new();
    serial.send_at(
        0,
        &hello(
            "pendulum",
            TaskLayout::Pendulum.wire_layout(),
            PROTOCOL_VERSION,
        ),
    );
    for _ in 0..3 {
        fw.tick(&mut clock.clone(), &mut clock);
    }
    let reports = faults(&serial.sent(&mut peer));
    let kinds: StdVec<_> = reports.iter().map(|f| (f.kind, f.active)).collect();
    assert_eq!(
        kinds,
        [
            (FaultKind::SensorRead, true),
            (FaultKind::SensorRead, true),
            (FaultKind::DeadlineMissed, true)
        ]
    );
    assert_eq!(fw.stats().sensor_errors, 2);
    assert_eq!(fw.mode(), Mode::Safe);
    finish(fw);
}

/// A reward source that reports a scripted step per tick.
struct ScriptedRewards(VecDeque<EpisodeStep>);

impl Rewards for ScriptedRewards {
    fn since_last_sample(&mut self) -> EpisodeStep {
        self.0.pop_front().expect("a step scripted for every tick")
    }
}

fn step(reward: f32, first: bool) -> EpisodeStep {
    EpisodeStep {
        reward,
        first,
        terminal: false,
    }
}

#[test]
fn observations_carry_what_the_reward_source_measured_since_the_last_one_sent() {
    let failing = I2cTx::write_read(
        ENCODER_BASE_ADDRESS,
        vec![ENCODER_ANGLE_REGISTER],
        vec![0, 0],
    )
    .with_error(embedded_hal::i2c::ErrorKind::Bus);
    let mut i2c = encoder_reads(2);
    i2c.push(failing);
    i2c.extend(encoder_reads(1));
    let off = [PwmTx::set_duty_cycle(0), PwmTx::set_duty_cycle(0)];
    let script = [
        step(5.0, true),   // before the session: not sent
        step(1.0, false),  // observation 1
        step(0.5, true),   // a new episode on a tick whose sensors failed ...
        step(0.25, false), // ... goes out with observation 2
    ];
    let rewards = ScriptedRewards(script.into());
    let (mut fw, mut clock, serial) = build_measuring(config(10), &i2c, &off, &[], rewards);
    let mut peer = FrameDecoder::new();
    serial.send_at(
        0,
        &hello(
            "pendulum",
            TaskLayout::Pendulum.wire_layout(),
            PROTOCOL_VERSION,
        ),
    );
    for _ in 0..4 {
        fw.tick(&mut clock.clone(), &mut clock);
    }
    let sent = serial.sent(&mut peer);
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::HelloAck(a) if a.rewards))
    );
    let steps: StdVec<(u32, EpisodeStep)> = sent
        .iter()
        .filter_map(|m| match m {
            Message::Observation(o) => Some((o.seq, o.step)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [(1, step(1.0, false)), (3, step(0.75, true))]);
    finish(fw);
}

#[test]
fn heartbeats_carry_mode_and_counters() {
    let (mut fw, mut clock, serial) = build_with(
        Config {
            heartbeat_every: 2,
            ..config(1)
        },
        &encoder_reads(4),
        &[
            PwmTx::set_duty_cycle(0),
            PwmTx::set_duty_cycle(0),
            PwmTx::set_duty_cycle(0),
        ],
        &[],
    );
    let mut peer = FrameDecoder::new();
    serial.send_at(
        15_000,
        &hello(
            "pendulum",
            TaskLayout::Pendulum.wire_layout(),
            PROTOCOL_VERSION,
        ),
    );
    for _ in 0..4 {
        fw.tick(&mut clock.clone(), &mut clock);
    }
    let beats: StdVec<_> = serial
        .sent(&mut peer)
        .into_iter()
        .filter_map(|m| match m {
            Message::Heartbeat(h) => Some((h.tick, h.mode, h.deadline_misses, h.faults)),
            _ => None,
        })
        .collect();
    // tick 3 misses with K = 1 -> safe; tick 4's heartbeat shows it.
    assert_eq!(
        beats,
        [(2, Mode::AwaitingHandshake, 0, 0), (4, Mode::Safe, 1, 1)]
    );
    finish(fw);
}

#[test]
fn a_stalled_loop_skips_ahead_instead_of_bursting() {
    let (mut fw, mut clock, _serial) = build(
        3,
        &encoder_reads(3),
        &[PwmTx::set_duty_cycle(0), PwmTx::set_duty_cycle(0)],
        &[],
    );
    fw.tick(&mut clock.clone(), &mut clock);
    clock.0.set(clock.0.get() + 5 * PERIOD);
    fw.tick(&mut clock.clone(), &mut clock);
    fw.tick(&mut clock.clone(), &mut clock);
    assert_eq!(fw.stats().overruns, 1);
    assert_eq!(fw.stats().ticks, 3);
    finish(fw);
}
