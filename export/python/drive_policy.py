import json, sys, numpy as np, onnxruntime as ort
manifest = json.load(open(f"{sys.argv[1]}/manifest.json"))
graph = manifest["graphs"]["policy_step"]
session = ort.InferenceSession(f"{sys.argv[1]}/{graph['file']}")
feed = {i["name"]: np.zeros(i["shape"], np.dtype(i["dtype"])) for i in graph["inputs"]}  # zeros: initial state
low, high = (np.array(manifest["action"][k]) for k in ("physical_low", "physical_high"))
for step in range(5):  # once per control period; put the sensor reading in feed["obs_state"] / feed["obs_pixels"]
    action, h, s, surprise = session.run(["action", "h_next", "s_next", "surprise"], feed)
    feed.update(h=h, s=s, prev_action=action)
    print(step, (low + (action[0] + 1) / 2 * (high - low)).tolist(), float(surprise[0]))
