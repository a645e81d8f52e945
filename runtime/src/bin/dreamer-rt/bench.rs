//! `bench`: the latency harness. Times every graph on its own with bound tensors, then the
//! agent's step modes against ort's ordinary `Session::run` of the fused graph, interleaved
//! in rounds so machine noise hits all of them alike.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dreamer_bundle::{self as bundle, Bundle, Manifest};
use dreamer_runtime::control::LatencyRecorder;
use dreamer_runtime::{Agent, AgentOptions, GraphBench, GraphMode, LatencySummary, Observation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::agent_args::{AgentArgs, load_agent, warn_if_unchecked};
use crate::output::{print_latency, print_placements};
use crate::realtime_args::RealtimeArgs;
use dreamer_cli::outln;

/// Rounds the step comparison is interleaved in.
const ROUNDS: u32 = 10;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Bundle folder.
    bundle: PathBuf,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 5000)]
    steps: u32,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 200)]
    warmup: u32,
    #[command(flatten)]
    realtime: RealtimeArgs,
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn bench(args: BenchArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let options = args.agent.options(ort_lib)?;
    let opened = Bundle::open(&args.bundle, &options.trusted_keys)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    warn_if_unchecked(&args.bundle, &opened.authenticity);
    let realtime = args.realtime.apply();
    let runtime = dreamer_ort::load(options.ort_lib.as_deref())?;
    outln!(
        "bench {}: ONNX Runtime {} ({}), provider {}, {} intra-op thread(s), spinning {}, {} steps",
        args.bundle.display(),
        runtime.version,
        runtime.path.display(),
        options.provider,
        options.intra_threads,
        if options.spinning { "on" } else { "off" },
        args.steps
    );
    let bytes: u64 = opened
        .manifest
        .files
        .keys()
        .chain([&bundle::MANIFEST_FILE.to_string()])
        .filter_map(|file| std::fs::metadata(args.bundle.join(file)).ok())
        .map(|meta| meta.len())
        .sum();
    outln!(
        "  bundle {:.2} MB, weights {}, graph form {}",
        bytes as f64 / 1e6,
        opened.manifest.precision,
        opened.manifest.graph_form.name()
    );
    if let Some(cpu) = realtime.pinned_cpu {
        outln!("  pinned to CPU {cpu}");
    }
    if let Some(priority) = realtime.fifo_priority {
        outln!("  SCHED_FIFO priority {priority}");
    }
    for note in &realtime.notes {
        outln!("  note: {note}");
    }
    time_graphs(&args, &opened, &options)?;
    compare_steps(&args, &opened, &options)
}

/// Every graph of the bundle on its own, bound tensors, random inputs.
fn time_graphs(args: &BenchArgs, opened: &Bundle, options: &AgentOptions) -> Result<()> {
    let manifest = &opened.manifest;
    outln!("graphs (bound tensors, random inputs):");
    for role in bundle::GRAPH_ROLES {
        if !manifest.graphs.contains_key(role) {
            continue;
        }
        let mut graph = GraphBench::open(opened, role, options, 1)?;
        for _ in 0..args.warmup {
            graph.run_bound().map_err(anyhow::Error::msg)?;
        }
        let mut rec = LatencyRecorder::default();
        time_n(args.steps, &mut rec, || {
            graph.run_bound().map_err(anyhow::Error::msg)
        })?;
        print_latency(role, &rec.summary());
        outln!("  {:<28} on {}", "", graph.placement().primary());
    }
    Ok(())
}

/// The agent's fused step against ort's ordinary Session::run of the same graph (and bound
/// tensors without the agent), plus the separate and split steps where the bundle has
/// their graphs, interleaved in [`ROUNDS`] rounds.
fn compare_steps(args: &BenchArgs, opened: &Bundle, options: &AgentOptions) -> Result<()> {
    let manifest = &opened.manifest;
    let observations = random_observations(manifest, 64);
    let view = |i: usize| {
        let (state, pixels) = &observations[i % observations.len()];
        Observation {
            state: manifest.observation.state.is_some().then_some(&state[..]),
            pixels: manifest.observation.pixels.is_some().then_some(&pixels[..]),
        }
    };
    let loading = std::time::Instant::now();
    let mut fused = load_agent(
        &args.bundle,
        AgentOptions {
            mode: GraphMode::Fused,
            ..options.clone()
        },
    )?;
    outln!(
        "load (fused agent: bundle checked, sessions created, warmed up): {:.1} ms",
        loading.elapsed().as_secs_f64() * 1e3
    );
    let mut bare = GraphBench::open(opened, bundle::POLICY_STEP, options, 2)?;
    let mut bound = GraphBench::open(opened, bundle::POLICY_STEP, options, 2)?;
    // The other step modes, where the bundle has their graphs.
    let has = |roles: &[&str]| roles.iter().all(|r| manifest.graphs.contains_key(*r));
    let mode_agent = |mode, roles: &[&str]| -> Result<Option<Agent>> {
        if !has(roles) {
            return Ok(None);
        }
        let options = AgentOptions {
            mode,
            ..options.clone()
        };
        load_agent(&args.bundle, options).map(Some)
    };
    let mut separate = mode_agent(
        GraphMode::Separate,
        &[bundle::ENCODER, bundle::RSSM_OBS_STEP, bundle::ACTOR],
    )?;
    let mut split = mode_agent(
        GraphMode::Split,
        &[bundle::RSSM_IMG_STEP, bundle::POLICY_OBSERVE],
    )?;
    for i in 0..args.warmup as usize {
        fused.step(&view(i))?;
        bare.run_session_api().map_err(anyhow::Error::msg)?;
        bound.run_bound().map_err(anyhow::Error::msg)?;
        if let Some(agent) = separate.as_mut() {
            agent.step(&view(i))?;
        }
        if let Some(agent) = split.as_mut() {
            agent.step(&view(i))?;
            agent.prepare()?;
        }
    }
    let per_round = (args.steps / ROUNDS).max(1);
    let mut agent_rec = LatencyRecorder::default();
    let mut bare_rec = LatencyRecorder::default();
    let mut bound_rec = LatencyRecorder::default();
    let mut separate_rec = LatencyRecorder::default();
    let mut split_rec = LatencyRecorder::default();
    let mut prepare_rec = LatencyRecorder::default();
    let mut i = 0usize;
    for _ in 0..ROUNDS {
        time_n(per_round, &mut agent_rec, || {
            i += 1;
            fused.step(&view(i))?;
            Ok(())
        })?;
        time_n(per_round, &mut bare_rec, || {
            bare.run_session_api().map_err(anyhow::Error::msg)
        })?;
        time_n(per_round, &mut bound_rec, || {
            bound.run_bound().map_err(anyhow::Error::msg)
        })?;
        if let Some(agent) = separate.as_mut() {
            time_n(per_round, &mut separate_rec, || {
                i += 1;
                agent.step(&view(i))?;
                Ok(())
            })?;
        }
        if let Some(agent) = split.as_mut() {
            // Step (observation to action) and prepare (after the action) timed apart.
            for _ in 0..per_round {
                i += 1;
                let started = Instant::now();
                agent.step(&view(i))?;
                split_rec.record(started.elapsed());
                let started = Instant::now();
                agent.prepare()?;
                prepare_rec.record(started.elapsed());
            }
        }
    }
    let agent_summary = agent_rec.summary();
    let bare_summary = bare_rec.summary();
    let bound_summary = bound_rec.summary();
    let overhead = |base: &LatencySummary| {
        format!(
            "p50 {:+.1}%, mean {:+.1}%",
            100.0 * (agent_summary.p50_us / base.p50_us - 1.0),
            100.0 * (agent_summary.mean_us / base.mean_us - 1.0)
        )
    };
    outln!("policy step (interleaved in {ROUNDS} rounds):");
    print_latency("agent step (fused)", &agent_summary);
    print_latency("bare session.run (fused)", &bare_summary);
    print_latency("bound run (fused)", &bound_summary);
    outln!(
        "  agent overhead vs bare session.run: {}",
        overhead(&bare_summary)
    );
    outln!(
        "  agent overhead vs bound run:        {}",
        overhead(&bound_summary)
    );
    if separate.is_some() {
        print_latency("agent step (separate)", &separate_rec.summary());
    }
    if split.is_some() {
        print_latency("agent step (split)", &split_rec.summary());
        print_latency("  prepare (after the action)", &prepare_rec.summary());
    }
    print_placements(&fused);
    Ok(())
}

/// Random observations in the manifest's layout.
fn random_observations(manifest: &Manifest, count: usize) -> Vec<(Vec<f32>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let state = manifest
        .observation
        .state
        .as_ref()
        .map_or(0, |s| s.size as usize);
    let pixels = manifest
        .observation
        .pixels
        .as_ref()
        .map_or(0, |p| (p.height * p.width * p.channels) as usize);
    (0..count)
        .map(|_| {
            (
                (0..state)
                    .map(|_| rng.sample::<f32, _>(StandardNormal))
                    .collect(),
                (0..pixels).map(|_| rng.random()).collect(),
            )
        })
        .collect()
}

/// Times `n` calls of `f` into `recorder`.
fn time_n(n: u32, recorder: &mut LatencyRecorder, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    for _ in 0..n {
        let started = Instant::now();
        f()?;
        recorder.record(started.elapsed());
    }
    Ok(())
}
