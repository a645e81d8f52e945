"""Drives a bridged task's bundle in its own Python environment, as the trainer saw it:
drive_env.py BUNDLE [--episodes N] [--seed S] [--sample]

The env is the one the manifest's `environment` names (package, id, kwargs), built by the
trainer's own worker code (dreamer_worker.py: the same flatten order, action map, action
repeat and 64x64 frames); the policy follows the manifest's contract (drive_policy.py).
Prints one line per episode: its return, its decisions and how it ended."""
import argparse, os, sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "..", "export", "python")]
import dreamer_worker as worker  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle")
parser.add_argument("--episodes", type=int, default=1)
parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode (then +1 each)")
parser.add_argument("--sample", action="store_true", help="sample the policy (default: deterministic)")
args = parser.parse_args()

worker.rendering_defaults()  # headless MuJoCo; before numpy, mujoco or dm_control are imported
import numpy as np  # noqa: E402
from drive_policy import Policy  # noqa: E402

if not os.path.isfile(os.path.join(args.bundle, "manifest.json")):
    sys.exit(f"{args.bundle}: no manifest.json here; give the folder `dreamer export --out` wrote")
policy = Policy(args.bundle, "fused", args.sample)
manifest, obs = policy.manifest, policy.manifest["observation"]
env = manifest.get("environment")
if env is None:
    sys.exit(f"{args.bundle}: task {manifest['task']['name']} is built in, not a Python environment; use dreamer-rt run")
mode = "both" if obs["state"] and obs["pixels"] else "pixels" if obs["pixels"] else "state"
hello = {"protocol": worker.PROTOCOL_VERSION, "task": manifest["task"]["name"], "kwargs": env["kwargs"],
         "obs_mode": mode, "action_repeat": manifest["task"]["action_repeat"],
         "image_size": obs["pixels"]["height"] if obs["pixels"] else 64}
backend = worker.build(hello, np)
installed = backend.versions()
for name, trained in env["versions"].items():  # the env may behave differently under other versions
    if installed.get(name, trained) != trained:
        print(f"note: {name} {installed[name]} here, trained with {trained}", file=sys.stderr)


def sensors(parts):  # the worker's encoding: float32 state vector, then the HxWx3 uint8 frame
    parts, readings = list(parts), {}
    if obs["state"]:
        readings["state"] = np.frombuffer(parts.pop(0), "<f4")
    if obs["pixels"]:
        shape = [obs["pixels"][k] for k in ("height", "width", "channels")]
        readings["pixels"] = np.frombuffer(parts.pop(0), np.uint8).reshape(shape)
    return readings


for episode in range(args.episodes):
    policy.reset()
    parts, total, decisions, terminated, truncated = backend.reset(args.seed + episode), 0.0, 0, False, False
    while not (terminated or truncated):
        action, _command, _surprise = policy.step(sensors(parts))
        # The worker maps [-1, 1] onto the action space (the manifest's physical bounds) and
        # holds it for task.action_repeat env steps, summing their rewards.
        reward, terminated, truncated, parts = backend.step(action.astype("<f4").tobytes())
        total, decisions = total + reward, decisions + 1
    print(f"episode {episode}: return {total:.3f} over {decisions} decisions ({'terminated' if terminated else 'time limit'})")
backend.close()
