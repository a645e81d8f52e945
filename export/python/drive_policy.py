"""Drives a bundle from its manifest alone: drive_policy.py BUNDLE [fused|separate|split] [--sample]"""
import json, sys
import numpy as np, onnxruntime as ort


class Policy:  # one action per control period (task.control_period_s), batch row 0
    def __init__(self, bundle, scheme="fused", sample=False, seed=0):
        self.manifest = m = json.load(open(f"{bundle}/manifest.json"))
        assert m["format_version"] == 2, "this driver follows manifest format 2"
        self.graphs, self.scheme = m["graphs"], m["contract"]["steps"][scheme]
        self.sessions = {g: ort.InferenceSession(f"{bundle}/{self.graphs[g]['file']}") for g in self.scheme["runs"]}
        self.bounds = [np.array(m["action"][k]) for k in ("low", "high", "physical_low", "physical_high")]
        self.sample, self.rng, self.previous = sample, np.random.default_rng(seed), {}

    def reset(self):  # contract.initial_state: zeros again at the start of every episode
        self.previous = {}

    def value(self, src, t, sensors, now):  # input t from its source in the contract
        kind, zeros = src["source"], np.zeros(t["shape"], t["dtype"])
        if kind == "observation":  # the same reading for every batch row here
            return np.broadcast_to(sensors[src["observation"]], t["shape"]).astype(t["dtype"])
        if kind == "this_step":
            return np.concatenate([now[p["graph"], p["output"]] for p in src["concat"]], axis=-1)
        if kind == "previous_step":  # contract.initial_state (zeros) before an episode's first step
            return self.previous.get((src["graph"], src["output"]), zeros)
        if kind == "noise" and self.sample:  # contract.noise: standard normal
            return self.rng.standard_normal(t["shape"]).astype(t["dtype"])
        return zeros  # "zeros", and "noise" for the deterministic policy

    def step(self, sensors):  # sensors: contract.observation_encoding, by observation kind
        now, low, high, p_low, p_high = {}, *self.bounds
        for g in self.scheme["runs"]:
            inputs = {t["name"]: t for t in self.graphs[g]["inputs"]}
            feed = {n: self.value(src, inputs[n], sensors, now) for n, src in self.scheme["inputs"][g].items()}
            names = [t["name"] for t in self.graphs[g]["outputs"]]
            now.update(zip([(g, n) for n in names], self.sessions[g].run(names, feed)))
        self.previous, action, surprise = now, self.scheme["action"], self.scheme["surprise"]
        action = np.clip(now[action["graph"], action["output"]][0], low, high)
        command = p_low + (action - low) * (p_high - p_low) / (high - low)  # contract.action_mapping
        return action, command, now[surprise["graph"], surprise["output"]][0] if surprise else float("nan")


def read_sensors(obs):  # raw values; put the real readings here
    readings = {}
    if obs["state"]:  # float32, in obs["state"]["fields"] order
        readings["state"] = np.zeros(obs["state"]["size"], np.float32)
    if obs["pixels"]:  # uint8 RGB, height x width x channels
        readings["pixels"] = np.zeros([obs["pixels"][k] for k in ("height", "width", "channels")], np.uint8)
    return readings


if __name__ == "__main__":
    bundle, args = sys.argv[1], sys.argv[2:]
    policy = Policy(bundle, next((a for a in args if not a.startswith("--")), "fused"), "--sample" in args)
    for step in range(5):
        action, command, surprise = policy.step(read_sensors(policy.manifest["observation"]))
        # Hold the command for task.action_repeat physics steps of contract.timing.physics_step_s.
        print(step, command.tolist(), float(surprise))
