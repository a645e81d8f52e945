//! The runtime's side of the link as a test plays it, over any transport (a pty or UDP), and
//! the session scenario both link tests run: handshake, answer observations, go silent, answer
//! again, send a corrupt action.
//!
//! Assertions never depend on how fast either side runs. The firmware sends a heartbeat
//! right after every observation; when its deadline-miss count did not grow, the previous
//! tick's action was applied on time, so the motor command at this tick's start (the
//! observation timestamp, looked up in the simulated driver's command log) is known exactly.
//! Conditions that need a timely answer are retried with later observations.
#![allow(dead_code)] // each test binary uses its own transport

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dreamer_wire::report::FirmwareSummary;
use dreamer_wire::{
    Action, FaultKind, FaultReport, Frame, FrameDecoder, FrameReader, HandshakeResult, Heartbeat,
    Hello, MAX_FRAME, MAX_RAW, Message, Mode, PROTOCOL_VERSION, cobs_encode, encode_datagram,
    write_message,
};
use firmware_host::{HostFirmware, Link, SharedWorld, SimOptions};
use serialport::{SerialPort, TTYPort};

/// How the peer moves messages.
pub trait Transport {
    fn send(&mut self, message: &Message);
    /// `message` with a CRC that does not match it.
    fn send_with_bad_crc(&mut self, message: &Message);
    /// Next valid message, or None after `patience` without one or when the other end closed.
    fn next(&mut self, patience: Duration) -> Option<Message>;
}

/// `message` as a raw frame (postcard and CRC) whose CRC is wrong.
fn raw_with_bad_crc(message: &Message) -> Vec<u8> {
    let mut raw = [0u8; MAX_RAW];
    let len = encode_datagram(message, &mut raw).len();
    raw[len - 4..len].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    raw[..len].to_vec()
}

/// Linux `EIO`: what reading a pty master returns once no slave is open.
const EIO: i32 = 5;

/// The master end of a pty, COBS frames.
pub struct Pty {
    reader: FrameReader<TTYPort>,
    writer: TTYPort,
}

impl Pty {
    pub fn new(mut master: TTYPort) -> Self {
        master.set_timeout(Duration::from_millis(200)).unwrap();
        let reader = FrameReader::new(master.try_clone_native().unwrap());
        Self {
            reader,
            writer: master,
        }
    }
}

impl Transport for Pty {
    fn send(&mut self, message: &Message) {
        write_message(&mut self.writer, message).unwrap();
    }

    fn send_with_bad_crc(&mut self, message: &Message) {
        use std::io::Write as _;
        let raw = raw_with_bad_crc(message);
        let mut frame = [0u8; MAX_FRAME];
        let n = cobs_encode(&raw, &mut frame).unwrap();
        frame[n] = 0;
        self.writer.write_all(&frame[..=n]).unwrap();
    }

    fn next(&mut self, patience: Duration) -> Option<Message> {
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up {
            match self.reader.next_frame() {
                Ok(Some(Ok(Frame { message, .. }))) => return Some(message),
                Ok(Some(Err(e))) => panic!("firmware sent a bad frame: {e}"),
                Ok(None) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(EIO) =>
                {
                    return None;
                }
                Err(e) => panic!("reading the pty: {e}"),
            }
        }
        None
    }
}

/// A UDP socket talking to the firmware's address, one message per datagram.
pub struct Udp {
    socket: UdpSocket,
    firmware: SocketAddr,
    decoder: FrameDecoder,
}

impl Udp {
    /// `socket` (bound) sends to and hears from `firmware` only.
    pub fn new(socket: UdpSocket, firmware: SocketAddr) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            firmware,
            decoder: FrameDecoder::new(),
        }
    }
}

impl Transport for Udp {
    fn send(&mut self, message: &Message) {
        let mut buf = [0u8; MAX_RAW];
        let datagram = encode_datagram(message, &mut buf);
        self.socket.send_to(datagram, self.firmware).unwrap();
    }

    fn send_with_bad_crc(&mut self, message: &Message) {
        self.socket
            .send_to(&raw_with_bad_crc(message), self.firmware)
            .unwrap();
    }

    fn next(&mut self, patience: Duration) -> Option<Message> {
        let give_up = Instant::now() + patience;
        let mut buf = [0u8; MAX_RAW + 1];
        while Instant::now() < give_up {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, self.firmware, "a datagram from a stranger");
                    match self.decoder.push_datagram(&buf[..n]) {
                        Ok(Frame { message, .. }) => return Some(message),
                        Err(e) => panic!("firmware sent a bad datagram: {e}"),
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) => {}
                // The firmware's port closed (ICMP port unreachable).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("reading the socket: {e}"),
            }
        }
        None
    }
}

/// One control tick as the peer sees it: the observation and the heartbeat after it.
pub struct Tick {
    pub seq: u32,
    pub timestamp_us: u64,
    pub values: usize,
    pub heartbeat: Heartbeat,
    /// Fault reports received since the previous tick.
    pub faults: Vec<FaultReport>,
}

/// The runtime's side of the link.
pub struct Peer<T> {
    pub link: T,
}

impl<T: Transport> Peer<T> {
    pub fn new(link: T) -> Self {
        Self { link }
    }

    pub fn handshake(&mut self, task: &str, layout: dreamer_wire::Layout) {
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            task: heapless::String::try_from(task).unwrap(),
            layout,
        });
        // Resent until answered: the firmware may not be listening yet.
        for _ in 0..100 {
            self.link.send(&hello);
            while let Some(message) = self.link.next(Duration::from_millis(200)) {
                if let Message::HelloAck(ack) = message {
                    assert_eq!(ack.result, HandshakeResult::Accepted);
                    return;
                }
            }
        }
        panic!("no handshake answer");
    }

    /// The next observation and the heartbeat that follows it.
    pub fn tick(&mut self) -> Tick {
        let mut faults = Vec::new();
        let mut observation = None;
        loop {
            match self
                .link
                .next(Duration::from_secs(10))
                .expect("the firmware went silent")
            {
                Message::Observation(o) => observation = Some(o),
                Message::Fault(f) => faults.push(f),
                Message::Heartbeat(heartbeat) => {
                    if let Some(o) = observation.take() {
                        return Tick {
                            seq: o.seq,
                            timestamp_us: o.timestamp_us,
                            values: o.values.len(),
                            heartbeat,
                            faults,
                        };
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub fn answer(&mut self, seq: u32, value: f32) {
        self.link.send(&action(seq, value));
    }
}

pub fn action(seq: u32, value: f32) -> Message {
    Message::Action(Action {
        seq,
        values: heapless::Vec::from_slice(&[value]).unwrap(),
    })
}

/// The motor command in force when `tick` started.
pub fn command_at(world: &SharedWorld, tick: &Tick) -> f32 {
    let world = world.lock().unwrap();
    world
        .command_at(tick.timestamp_us)
        .expect("command log covers the test")
}

/// Answers every tick with `value` until `on_time` ticks were verified applied on time
/// (deadline-miss count unchanged in Running mode). At each verified tick the motor command
/// must be the clamped answer. Returns the last tick (verified, its action not yet sent).
pub fn drive<T: Transport>(
    peer: &mut Peer<T>,
    world: &SharedWorld,
    value: f32,
    on_time: usize,
    events: &mut Vec<FaultReport>,
) -> Tick {
    let mut previous: Option<Tick> = None;
    let mut verified = 0;
    for _ in 0..300 {
        let tick = peer.tick();
        events.extend(&tick.faults);
        if let Some(prev) = &previous {
            let hit = tick.heartbeat.deadline_misses == prev.heartbeat.deadline_misses;
            if hit
                && tick.heartbeat.mode == Mode::Running
                && prev.heartbeat.mode != Mode::AwaitingHandshake
            {
                assert_eq!(
                    command_at(world, &tick),
                    value.clamp(-1.0, 1.0),
                    "tick {}",
                    tick.seq
                );
                verified += 1;
                if verified >= on_time {
                    return tick;
                }
            }
        }
        peer.answer(tick.seq, value);
        previous = Some(tick);
    }
    panic!("no action was applied on time in 300 ticks");
}

/// A session of the firmware of [`scenario_options`] (safe state after `k` misses): actions drive the
/// motor (an out-of-range one clamped), silence raises the fault within `k` ticks and keeps
/// the motor off, answers clear it, and an action with a bad CRC is counted, not applied.
pub fn session_scenario<T: Transport>(peer: &mut Peer<T>, world: &SharedWorld) {
    let k = SCENARIO_K;
    peer.handshake(
        "cartpole-swingup",
        dreamer_firmware::TaskLayout::Cartpole.wire_layout(),
    );
    let mut events = Vec::new();
    drive(peer, world, 0.5, 2, &mut events);
    let last_good = drive(peer, world, 1.5, 2, &mut events);
    assert_eq!(last_good.values, 5);

    // Silent from here. The tick before `last_good` was on time, so the misses start at
    // `last_good` and the fault is raised at its K-th tick at the latest.
    let (fault, first_safe) = loop {
        let tick = peer.tick();
        if let Some(f) = tick.faults.iter().find(|f| f.active) {
            break (*f, tick);
        }
        assert!(
            tick.seq < last_good.seq + u32::from(k),
            "no fault after {} silent ticks",
            tick.seq - last_good.seq
        );
    };
    assert_eq!(fault.kind, FaultKind::DeadlineMissed);
    assert_eq!(fault.consecutive_misses, k);
    assert!(fault.seq < last_good.seq + u32::from(k));
    assert_eq!(
        command_at(world, &first_safe),
        0.0,
        "motor off in the safe state"
    );
    // Still silent: it stays safe, motor off, without repeating the report.
    for _ in 0..3 {
        let tick = peer.tick();
        assert!(tick.faults.is_empty(), "{:?}", tick.faults);
        assert_eq!(tick.heartbeat.mode, Mode::Safe);
        assert_eq!(command_at(world, &tick), 0.0);
    }

    // Answering again clears the fault and the new action drives the motor.
    events.clear();
    drive(peer, world, -0.25, 2, &mut events);
    assert!(
        events
            .iter()
            .any(|f| !f.active && f.kind == FaultKind::DeadlineMissed),
        "{events:?}"
    );

    // An action whose CRC does not match is counted, not applied.
    let tick = peer.tick();
    peer.link.send_with_bad_crc(&action(tick.seq, 0.9));
    // Wait until the firmware has counted it: only that frame can raise the error count.
    let mut after = peer.tick();
    for _ in 0..50 {
        if after.heartbeat.frame_errors > tick.heartbeat.frame_errors {
            break;
        }
        after = peer.tick();
    }
    assert_eq!(
        after.heartbeat.frame_errors,
        tick.heartbeat.frame_errors + 1
    );
    assert_ne!(
        command_at(world, &after),
        0.9,
        "the corrupted action was applied"
    );
}

/// What a robot that ran [`session_scenario`] must report.
pub fn check_scenario_summary(summary: &FirmwareSummary) {
    assert!(
        summary.faults >= 1 && summary.recoveries >= 1,
        "{summary:?}"
    );
    assert!(summary.clamped_actions >= 2);
    assert_eq!(summary.frame_errors.bad_crc, 1);
    assert_eq!(summary.firmware.unexpected_messages, 0);
    assert!(summary.physics_steps > 0 && summary.episode_return.is_finite());
}

/// After the handshake with a pendulum firmware: answers until one action is known to have
/// been applied on time, then stays silent until the firmware is in its safe state.
pub fn apply_one_then_fall_silent<T: Transport>(peer: &mut Peer<T>) {
    let mut previous = peer.tick();
    peer.answer(previous.seq, 0.2);
    for _ in 0..300 {
        let tick = peer.tick();
        assert_eq!(tick.values, 3);
        if tick.heartbeat.deadline_misses == previous.heartbeat.deadline_misses {
            break;
        }
        peer.answer(tick.seq, 0.2);
        previous = tick;
    }
    while peer.tick().heartbeat.mode != Mode::Safe {}
}

/// Safe state after this many missed deadlines in [`session_scenario`].
pub const SCENARIO_K: u16 = 3;

/// The robot of [`session_scenario`]: cartpole at 20 Hz, a heartbeat after every observation.
pub fn scenario_options() -> SimOptions {
    let rate_hz = 20.0;
    SimOptions {
        rate_hz,
        deadline_s: Some(0.045),
        max_missed: SCENARIO_K,
        heartbeat_hz: rate_hz,
        ..SimOptions::new("cartpole-swingup")
    }
}

/// Runs `robot` in a thread until `stop` is set (two minutes at most); its summary at the end.
pub fn run_until_stopped<L: Link + Send + 'static>(
    mut robot: HostFirmware<L>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<FirmwareSummary> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        robot.run(Some(Duration::from_secs(120)), &stop);
        robot.finish()
    })
}
