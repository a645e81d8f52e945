//! Closes the loop over a pty: the host firmware (in a thread) against a peer running the
//! task's hand-written controller on the received observations, then the same controller
//! on the simulator's exact state for comparison.
//!
//! `cargo run --release -p firmware-host --example scripted_peer -- [task] [seconds] [rate_hz] [seed]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dreamer_firmware::{StreamLink, TaskLayout};
use dreamer_tasks::policy::{Policy, PolicyKind};
use dreamer_tasks::{EnvOptions, ObsMode};
use dreamer_wire::{
    Action, Frame, FrameReader, HandshakeResult, Hello, Message, PROTOCOL_VERSION, write_message,
};
use firmware_host::{HostFirmware, PtySerial, SimOptions};
use serialport::{SerialPort, TTYPort};

/// The task's physical state recovered from its observation vector.
fn physical_state(layout: TaskLayout, obs: &[f32]) -> Vec<f64> {
    let o: Vec<f64> = obs.iter().map(|&v| f64::from(v)).collect();
    match layout {
        TaskLayout::Pendulum => vec![o[1].atan2(o[0]), o[2]],
        TaskLayout::Cartpole => vec![o[0], o[2].atan2(o[1]), o[3], o[4]],
        TaskLayout::Acrobot => {
            let q1 = o[0].atan2(o[2]);
            let lower = o[1].atan2(o[3]);
            vec![q1, lower - q1, o[4], o[5]]
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map_or("cartpole-swingup", String::as_str);
    let seconds: f64 = args
        .get(1)
        .map_or(Ok(10.0), |s| s.parse())
        .context("seconds")?;
    let rate_hz: f64 = args
        .get(2)
        .map_or(Ok(50.0), |s| s.parse())
        .context("rate_hz")?;
    let seed: u64 = args.get(3).map_or(Ok(0), |s| s.parse()).context("seed")?;
    let layout = TaskLayout::for_task(task).context("no sensor suite for this task")?;

    let (mut master, slave) = TTYPort::pair()?;
    let options = SimOptions {
        rate_hz,
        seed,
        heartbeat_hz: 0.0,
        ..SimOptions::new(task)
    };
    let mut robot = HostFirmware::new(options, StreamLink::new(PtySerial::new(slave)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let firmware = std::thread::spawn(move || {
        robot.run(None, &stop_flag);
        robot.finish()
    });

    master.set_timeout(Duration::from_millis(500))?;
    let mut reader = FrameReader::new(master.try_clone_native()?);
    write_message(
        &mut master,
        &Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            task: heapless::String::try_from(task)
                .map_err(|_| anyhow::anyhow!("task name too long"))?,
            layout: layout.wire_layout(),
        }),
    )?;
    let spec = dreamer_tasks::make(task, EnvOptions::default())?
        .spec()
        .clone();
    let mut policy = Policy::new(PolicyKind::Scripted, &spec, seed);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut decisions = 0u32;
    while Instant::now() < end {
        match reader.next_frame()? {
            Some(Ok(Frame {
                message: Message::HelloAck(ack),
                ..
            })) if ack.result != HandshakeResult::Accepted => {
                bail!("handshake refused: {:?}", ack.result)
            }
            Some(Ok(Frame {
                message: Message::Observation(obs),
                ..
            })) => {
                let action = policy.act(&physical_state(layout, &obs.values));
                let values = heapless::Vec::from_slice(&action)
                    .map_err(|_| anyhow::anyhow!("action too long"))?;
                write_message(
                    &mut master,
                    &Message::Action(Action {
                        seq: obs.seq,
                        values,
                    }),
                )?;
                decisions += 1;
            }
            Some(_) => {}
            None => bail!("the pty closed"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let summary = firmware
        .join()
        .map_err(|_| anyhow::anyhow!("firmware thread panicked"))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);

    // The same controller with exact state, one decision per control tick.
    let repeat = ((1.0 / rate_hz) / spec.physics_dt).round().max(1.0) as u32;
    let options = EnvOptions {
        obs_mode: ObsMode::State,
        action_repeat: repeat,
    };
    let mut env = dreamer_tasks::make(task, options)?;
    env.reset(seed);
    let mut policy = Policy::new(PolicyKind::Scripted, &spec, seed);
    let mut reference = 0.0;
    let steps = (summary.physics_steps as f64 / f64::from(repeat)).round() as u32;
    for _ in 0..steps.min(env.spec().max_decisions) {
        let action = policy.act(&env.physical_state());
        reference += env.step(&action)?.reward;
    }
    eprintln!(
        "{task}: {decisions} decisions over the pty; return over the wire {:.1} (+ {:?} completed), \
         exact-state simulation over the same {} physics steps {:.1}",
        summary.episode_return,
        summary.completed_episode_returns,
        summary.physics_steps.min(u64::from(spec.max_env_steps)),
        reference
    );
    Ok(())
}
