"""Times a bundle graph in Python's onnxruntime: what a user would run instead of dreamer-rt.

    python bench_ort.py BUNDLE [--graph policy_step] [--steps N] [--warmup N]

One intra-op thread, no spinning, all graph optimisations (as dreamer-rt's CPU sessions);
random inputs of the declared shapes; `session.run` with numpy arrays, timed one call at a
time. Prints one line: load time and p50 / p90 / p99 / p99.9 / max in microseconds. Pin it
with `taskset -c CPU` to compare with `dreamer-rt bench --pin-cpu CPU`.
"""

import argparse
import json
import pathlib
import time

import numpy as np
import onnxruntime as ort


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_feeds(sess, rng):
    feeds = {}
    for port in sess.get_inputs():
        if port.type == "tensor(uint8)":
            feeds[port.name] = rng.integers(0, 256, size=port.shape, dtype=np.uint8)
        else:
            feeds[port.name] = rng.standard_normal(port.shape).astype(np.float32)
    return feeds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=pathlib.Path)
    parser.add_argument("--graph", default="policy_step")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    if args.graph not in manifest["graphs"]:
        parser.error(f"{args.bundle}: no graph `{args.graph}` in manifest.json")
    path = args.bundle / manifest["graphs"][args.graph]["file"]
    started = time.perf_counter()
    sess = session(path)
    load_ms = (time.perf_counter() - started) * 1e3
    feeds = random_feeds(sess, np.random.default_rng(0))
    for _ in range(args.warmup):
        sess.run(None, feeds)
    times = np.empty(args.steps)
    for i in range(args.steps):
        start = time.perf_counter_ns()
        sess.run(None, feeds)
        times[i] = (time.perf_counter_ns() - start) / 1e3
    p50, p90, p99, p999 = np.percentile(times, [50, 90, 99, 99.9])
    print(
        f"python onnxruntime {ort.__version__} {args.graph}: load {load_ms:.1f} ms; "
        f"n={args.steps} p50={p50:.1f}us p90={p90:.1f}us p99={p99:.1f}us "
        f"p99.9={p999:.1f}us max={times.max():.1f}us"
    )


if __name__ == "__main__":
    main()
