//! Proves the steady-state step makes no heap allocation, with a counting global allocator.
//!
//! The allocator counts allocations made through Rust's global allocator on the test's own
//! thread (ONNX Runtime's C++ allocations, inside its arena, are outside this count).

mod common;
#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::{Faults, Sizes, Weights};
use dreamer_export::{ExportOptions, export};
use dreamer_runtime::{Agent, AgentOptions, GraphMode, Noise, Observation};
use export_fixtures::Spec;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn assert_steps_do_not_allocate(sizes: Sizes, options: AgentOptions) {
    let dir = tempfile::tempdir().unwrap();
    let weights = Weights::random(sizes, 21);
    common::write_bundle(dir.path(), &weights, Faults::default());
    assert_bundle_steps_do_not_allocate(dir.path(), sizes, options);
}

/// Steps (with `prepare` after each, as a control loop calls it), primes, resets and one
/// refused observation on the bundle at `dir`, whose observation sizes are `sizes`.
fn assert_bundle_steps_do_not_allocate(dir: &Path, sizes: Sizes, options: AgentOptions) {
    let mut agent = Agent::load(dir, options.clone()).unwrap();
    let observations = common::observations(sizes, 50, 4);
    let view = |i: usize| Observation {
        state: (sizes.obs > 0).then_some(&observations[i % 50].0[..]),
        pixels: sizes.pixels.then_some(&observations[i % 50].1[..]),
    };
    for i in 0..5 {
        agent.step(&view(i)).unwrap();
    }
    let bad = vec![f32::NAN; sizes.obs];
    let before = allocations();
    let mut checksum = 0.0f32;
    for i in 0..500 {
        agent.prime().unwrap();
        checksum += agent.step(&view(i)).unwrap()[0];
        checksum += agent.surprise() + agent.latent().h[0];
        if i % 7 != 0 {
            // Every seventh step prepares on its own.
            agent.prepare().unwrap();
        }
        if i == 250 {
            agent.reset();
        }
    }
    // A refused observation (the safe-action path) does not allocate either.
    if sizes.obs > 0 {
        assert!(
            agent
                .step(&Observation {
                    state: Some(&bad),
                    pixels: view(0).pixels
                })
                .is_err()
        );
    }
    let made = allocations() - before;
    assert!(checksum.is_finite());
    assert_eq!(
        made, 0,
        "{options:?}: {made} heap allocations in 500 steady-state steps"
    );
}

#[test]
fn fused_step_does_not_allocate() {
    assert_steps_do_not_allocate(Sizes::state(), AgentOptions::default());
    assert_steps_do_not_allocate(Sizes::both(), AgentOptions::default());
}

#[test]
fn separate_step_with_sampled_noise_does_not_allocate() {
    assert_steps_do_not_allocate(
        Sizes::state(),
        AgentOptions {
            mode: GraphMode::Separate,
            noise: Noise::Sampled { seed: 1 },
            ..AgentOptions::default()
        },
    );
}

#[test]
fn split_step_and_prepare_do_not_allocate() {
    // The split step's `policy_observe` comes from the exporter.
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::state();
    let ckpt = export_fixtures::write_checkpoint(&tmp.path().join("ckpt"), &spec, 5);
    let bundle = tmp.path().join("bundle");
    let options = ExportOptions {
        verify: false,
        ..ExportOptions::default()
    };
    export(&ckpt, &bundle, &options).unwrap();
    let sizes = Sizes {
        obs: spec.o,
        ..Sizes::state()
    };
    assert_bundle_steps_do_not_allocate(
        &bundle,
        sizes,
        AgentOptions {
            mode: GraphMode::Split,
            noise: Noise::Sampled { seed: 2 },
            ..AgentOptions::default()
        },
    );
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

/// Recording on the control thread (buffers taken, steps written, episodes handed to the
/// spool writer) does not allocate either: the writer's own allocations are on its thread.
#[test]
fn recording_steps_do_not_allocate() {
    use dreamer_runtime::record::{Layout, RecordOptions, Recorder};
    let sizes = Sizes::both();
    let dir = tempfile::tempdir().unwrap();
    let weights = Weights::random(sizes, 22);
    common::write_bundle(dir.path(), &weights, Faults::default());
    let mut agent = Agent::load(dir.path(), AgentOptions::default()).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::start(RecordOptions {
        spool: spool.path().to_path_buf(),
        device: "test".to_string(),
        policy: "p".to_string(),
        layout: Layout {
            action: sizes.action,
            state: sizes.obs,
            pixels: true,
        },
        max_steps: 40,
        buffers: 3,
    })
    .unwrap();
    let observations = common::observations(sizes, 50, 5);
    let mut action = vec![0.0f32; sizes.action];
    for (state, pixels) in &observations[..3] {
        agent
            .step(&Observation {
                state: Some(state),
                pixels: Some(pixels),
            })
            .unwrap();
    }
    let before = allocations();
    for episode in 0..6 {
        recorder.begin();
        agent.reset();
        action.fill(0.0);
        for t in 0..45 {
            let (state, pixels) = &observations[(episode * 45 + t) % 50];
            recorder.step(state, pixels, &action, t as f32, 1.0);
            let a = agent
                .step(&Observation {
                    state: Some(state),
                    pixels: Some(pixels),
                })
                .unwrap();
            action.copy_from_slice(a);
        }
        recorder.end();
        // Give the writer time to return buffers, as control periods would.
        std::thread::sleep(std::time::Duration::from_millis(if episode % 2 == 0 {
            0
        } else {
            300
        }));
    }
    let made = allocations() - before;
    let (counters, report) = recorder.finish().unwrap();
    assert_eq!(
        made, 0,
        "{made} heap allocations on the control thread while recording"
    );
    assert_eq!(counters.recorded + counters.dropped, 6, "{counters:?}");
    assert_eq!(counters.truncated, 6 * 5);
    assert_eq!(report.written.len() as u64, counters.recorded);
}
