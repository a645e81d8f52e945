"""Drives a bundle from its manifest alone: drive_policy.py BUNDLE [fused|separate|split] [--sample]"""
import json, sys
import numpy as np, onnxruntime as ort

bundle, args = sys.argv[1], sys.argv[2:]
manifest = json.load(open(f"{bundle}/manifest.json"))
assert manifest["format_version"] == 2, "this driver follows manifest format 2"
graphs, contract, obs = manifest["graphs"], manifest["contract"], manifest["observation"]
scheme = contract["steps"][next((a for a in args if not a.startswith("--")), "fused")]
sessions = {g: ort.InferenceSession(f"{bundle}/{graphs[g]['file']}") for g in scheme["runs"]}
low, high, p_low, p_high = (np.array(manifest["action"][k]) for k in ("low", "high", "physical_low", "physical_high"))
rng = np.random.default_rng(0)


def read_sensors():  # contract.observation_encoding: raw values; put the real readings here
    readings = {}
    if obs["state"]:  # float32, in obs["state"]["fields"] order
        readings["state"] = np.zeros(obs["state"]["size"], np.float32)
    if obs["pixels"]:  # uint8 RGB, height x width x channels
        readings["pixels"] = np.zeros([obs["pixels"][k] for k in ("height", "width", "channels")], np.uint8)
    return readings


def value(src, t, sensors, now, previous):  # input t from its source in the contract
    kind, zeros = src["source"], np.zeros(t["shape"], t["dtype"])
    if kind == "observation":  # the same reading for every batch row here
        return np.broadcast_to(sensors[src["observation"]], t["shape"]).astype(t["dtype"])
    if kind == "this_step":
        return np.concatenate([now[p["graph"], p["output"]] for p in src["concat"]], axis=-1)
    if kind == "previous_step":  # contract.initial_state (zeros) before an episode's first step
        return previous.get((src["graph"], src["output"]), zeros)
    if kind == "noise" and "--sample" in args:  # contract.noise: standard normal
        return rng.standard_normal(t["shape"]).astype(t["dtype"])
    return zeros  # "zeros", and "noise" for the deterministic policy


previous = {}  # empty again at the start of every episode (contract.initial_state.reset)
for step in range(5):  # once per control period (task.control_period_s)
    sensors, now = read_sensors(), {}
    for g in scheme["runs"]:
        inputs = {t["name"]: t for t in graphs[g]["inputs"]}
        feed = {n: value(src, inputs[n], sensors, now, previous) for n, src in scheme["inputs"][g].items()}
        names = [t["name"] for t in graphs[g]["outputs"]]
        now.update(zip([(g, n) for n in names], sessions[g].run(names, feed)))
    previous, action, surprise = now, scheme["action"], scheme["surprise"]
    action = np.clip(now[action["graph"], action["output"]][0], low, high)  # batch row 0
    command = p_low + (action - low) * (p_high - p_low) / (high - low)  # contract.action_mapping
    surprise = now[surprise["graph"], surprise["output"]][0] if surprise else float("nan")
    # Hold the command for task.action_repeat physics steps of contract.timing.physics_step_s.
    print(step, command.tolist(), float(surprise))
