//! Steps per second of `gym:Pendulum-v1` through the bridge with 1, 4 and 16 workers, next to
//! the native `pendulum` (dreamer-tasks' VecEnv) and Gymnasium's own `AsyncVectorEnv` on the
//! same env and N, in one run; plus the per-step overhead of the bridge over a bare in-process
//! `env.step`; then the cost of pixels: `dmc:cartpole-swingup` rendered by MuJoCo (EGL or
//! OSMesa, docs/native-deps.md) against the native `cartpole-swingup` and its rasteriser.
//! Not a test: `cargo bench -p dreamer-bridge --bench bridge [-- SECONDS]`.
//!
//! Two measures: wall time per `step_all` (what a trainer waits), and CPU time per env step
//! summed over every process involved (the bench process and its workers, read from
//! /proc/<pid>/stat; the AsyncVectorEnv main process and its workers likewise). Wall time
//! suffers when other jobs share the cores; CPU time mostly does not, so the overhead is
//! given in both. Episodes are made long (`max_episode_steps` 1e9) on every side so that no
//! reset falls inside a measurement.

use std::process::Command;
use std::time::{Duration, Instant};

use dreamer_bridge::{BridgeOptions, BridgeVecEnv, parse_kwargs, resolve_python};
use dreamer_tasks::{EnvOptions, ObsMode, VecEnv};
use serde_json::Value;

const WORKERS: [usize; 3] = [1, 4, 16];
const LONG_EPISODES: &str = r#"{"max_episode_steps": 1000000000}"#;
/// Normalised action 0.25, physical torque 0.5 on both sides.
const ACTION: f32 = 0.25;

/// Run by the workers' Python: `n == 0` times a bare `env.step` in process, otherwise an
/// `AsyncVectorEnv` of `n` copies. Prints one JSON line: wall and CPU microseconds per call.
const GYMNASIUM_SIDE: &str = r#"
import json, os, sys, time
import numpy as np
import gymnasium as gym
n, seconds = int(sys.argv[1]), float(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
make = lambda: gym.make("Pendulum-v1", max_episode_steps=10**9)
def cpu(pids):
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total
def timed(step, batch, warm, pids):
    for _ in range(warm):
        step()
    count, start, cpu0 = 0, time.perf_counter(), cpu(pids)
    while time.perf_counter() - start < seconds:
        for _ in range(batch):
            step()
        count += batch
    wall, used = time.perf_counter() - start, cpu(pids) - cpu0
    return {"wall_us": wall / count * 1e6, "cpu_us": used / count * 1e6}
if n == 0:
    env = make()
    env.reset(seed=0)
    action = np.array([0.5], dtype=np.float32)
    print(json.dumps(timed(lambda: env.step(action), 1000, 2000, [])))
else:
    envs = gym.vector.AsyncVectorEnv([make] * n)
    envs.reset(seed=0)
    actions = np.full((n, 1), 0.5, dtype=np.float32)
    result = timed(lambda: envs.step(actions), 100, 200, [p.pid for p in envs.processes])
    envs.close()
    print(json.dumps(result))
"#;

/// Wall and CPU microseconds per call.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall_us: f64,
    cpu_us: f64,
}

/// CPU seconds (user + system) that `pid` has used so far; 0 when it cannot be read.
fn cpu_seconds(pid: &str) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / tick)
        })
        .unwrap_or(0.0)
}

fn cpu_of(pids: &[u32]) -> f64 {
    cpu_seconds("self")
        + pids
            .iter()
            .map(|p| cpu_seconds(&p.to_string()))
            .sum::<f64>()
}

/// Cost of `step` over about `seconds` after `warm` calls; `pids` are the worker processes.
fn measure(seconds: f64, warm: usize, pids: &[u32], mut step: impl FnMut()) -> Cost {
    for _ in 0..warm {
        step();
    }
    let cpu_start = cpu_of(pids);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..50 {
            step();
        }
        calls += 50;
    }
    let wall = start.elapsed().as_secs_f64();
    Cost {
        wall_us: wall / calls as f64 * 1e6,
        cpu_us: (cpu_of(pids) - cpu_start) / calls as f64 * 1e6,
    }
}

fn gymnasium_side(python: &std::path::Path, n: usize, seconds: f64) -> Result<Cost, String> {
    let out = Command::new(python)
        .args(["-c", GYMNASIUM_SIDE, &n.to_string(), &seconds.to_string()])
        .env("SDL_VIDEODRIVER", "dummy")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the gymnasium side failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(line)
        .map_err(|e| format!("unexpected output from the gymnasium side ({e}): {text}"))?;
    match (value["wall_us"].as_f64(), value["cpu_us"].as_f64()) {
        (Some(wall_us), Some(cpu_us)) => Ok(Cost { wall_us, cpu_us }),
        _ => Err(format!("unexpected output from the gymnasium side: {text}")),
    }
}

struct Row {
    n: usize,
    native: Cost,
    bridge: Cost,
    asynchronous: Cost,
    start_up: Duration,
}

/// Frames per second and CPU per frame of `dmc:cartpole-swingup` from pixels (one 64x64
/// frame per env step, action repeat 1) with 1 and 2 workers, next to the native task's.
fn pixel_costs(python: &std::path::Path, seconds: f64) -> Result<(), String> {
    let pixels = EnvOptions {
        obs_mode: ObsMode::Pixels,
        action_repeat: 1,
    };
    let options = BridgeOptions {
        python: Some(python.to_path_buf()),
        step_timeout: Duration::from_secs(30),
        ..BridgeOptions::default()
    };
    println!();
    println!(
        "cartpole-swingup from 64x64 pixels, action repeat 1 (a frame per env step), {seconds} s per figure"
    );
    println!(
        "| N | native (rasteriser) | dmc: through the bridge (MuJoCo {}) |",
        { std::env::var("MUJOCO_GL").unwrap_or_else(|_| "egl".into()) }
    );
    println!("|---|---|---|");
    for n in [1usize, 2] {
        let seeds = vec![0; n];
        let actions = vec![ACTION; n];
        let mut native =
            VecEnv::new("cartpole-swingup", pixels, n, n).map_err(|e| e.to_string())?;
        native.reset_all(&seeds).map_err(|e| e.to_string())?;
        let native_cost = measure(seconds, 100, &[], || {
            if native.step_all(&actions).expect("native step")[0].truncated {
                native.reset_all(&seeds).expect("native reset");
            }
        });
        drop(native);
        let mut bridged = BridgeVecEnv::new("dmc:cartpole-swingup", pixels, n, &options)
            .map_err(|e| e.to_string())?;
        bridged.reset_all(&seeds).map_err(|e| e.to_string())?;
        let pids = bridged.worker_pids();
        let bridge = measure(seconds, 20, &pids, || {
            if bridged.step_all(&actions).expect("bridged step")[0].truncated {
                bridged.reset_all(&seeds).expect("bridged reset");
            }
        });
        drop(bridged);
        let cell = |c: Cost| {
            format!(
                "{:.0} frames/s ({:.0} per worker or thread; CPU {:.2} ms/frame)",
                n as f64 / c.wall_us * 1e6,
                1e6 / c.wall_us,
                c.cpu_us / n as f64 / 1e3
            )
        };
        println!("| {n} | {} | {} |", cell(native_cost), cell(bridge));
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2.0);
    let state = EnvOptions {
        obs_mode: ObsMode::State,
        action_repeat: 1,
    };
    let python = resolve_python(None);
    println!(
        "gym:Pendulum-v1, state observations, action repeat 1, {seconds} s per figure; Python {} ({})",
        python.path.display(),
        python.lookup
    );
    let options = BridgeOptions {
        kwargs: parse_kwargs(LONG_EPISODES).map_err(|e| e.to_string())?,
        step_timeout: Duration::from_secs(30),
        ..BridgeOptions::default()
    };

    let bare = gymnasium_side(&python.path, 0, seconds)?;
    let mut rows = Vec::new();
    for n in WORKERS {
        let mut native = VecEnv::new("pendulum", state, n, n.min(2)).map_err(|e| e.to_string())?;
        let seeds = vec![0; n];
        native.reset_all(&seeds).map_err(|e| e.to_string())?;
        let actions = vec![ACTION; n];
        // The native episode is 200 steps; its (cheap) resets stay in the figure.
        let native_cost = measure(seconds, 1000, &[], || {
            let steps = native.step_all(&actions).expect("native step");
            if steps[0].truncated {
                native.reset_all(&seeds).expect("native reset");
            }
        });
        drop(native);

        let started = Instant::now();
        let mut bridged =
            BridgeVecEnv::new("gym:Pendulum-v1", state, n, &options).map_err(|e| e.to_string())?;
        bridged.reset_all(&seeds).map_err(|e| e.to_string())?;
        let start_up = started.elapsed();
        let pids = bridged.worker_pids();
        let bridge = measure(seconds, 200, &pids, || {
            bridged.step_all(&actions).expect("bridged step");
        });
        drop(bridged);

        let asynchronous = gymnasium_side(&python.path, n, seconds)?;
        rows.push(Row {
            n,
            native: native_cost,
            bridge,
            asynchronous,
            start_up,
        });
    }

    println!();
    println!(
        "| N | native VecEnv | bridge | gymnasium AsyncVectorEnv | bridge / Async (wall) | bridge start-up + reset |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let n = row.n as f64;
        let cell = |c: Cost| {
            format!(
                "{:.0} steps/s ({:.1} us; CPU {:.1} us/env step)",
                n / c.wall_us * 1e6,
                c.wall_us,
                c.cpu_us / n
            )
        };
        println!(
            "| {} | {} | {} | {} | {:.2}x | {:.2} s |",
            row.n,
            cell(row.native),
            cell(row.bridge),
            cell(row.asynchronous),
            row.asynchronous.wall_us / row.bridge.wall_us,
            row.start_up.as_secs_f64()
        );
    }
    if let Some(one) = rows.iter().find(|r| r.n == 1) {
        println!();
        println!(
            "bare env.step in process: {:.1} us wall, {:.1} us CPU",
            bare.wall_us, bare.cpu_us
        );
        println!(
            "bridge round trip (N = 1): {:.1} us wall, {:.1} us CPU (both processes)",
            one.bridge.wall_us, one.bridge.cpu_us
        );
        println!(
            "bridge overhead per step: {:.1} us wall, {:.1} us CPU; AsyncVectorEnv's: {:.1} us wall, {:.1} us CPU",
            one.bridge.wall_us - bare.wall_us,
            one.bridge.cpu_us - bare.cpu_us,
            one.asynchronous.wall_us - bare.wall_us,
            one.asynchronous.cpu_us - bare.cpu_us
        );
    }
    println!("(us = microseconds per step_all call of all N envs, unless per env step)");
    pixel_costs(&python.path, seconds)?;
    let mut load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.truncate(load.trim_end().len());
    println!("load average at the end: {load}");
    Ok(())
}
