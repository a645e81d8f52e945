"""Tiny Gymnasium environments for dreamer-bridge's tests, registered the way a user's package
registers its own: the bridge reaches them as `gym:test_envs:<Id>`, and gymnasium.make imports
this module first. Tests put this folder's parent on PYTHONPATH."""

import os
import time
from collections import OrderedDict

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import register


class PendulumAt(gym.Wrapper):
    """The registered Pendulum-v1 (its TimeLimit included) whose reset with a listed seed puts
    the pendulum in an exact state: kwargs `states` = {"<seed>": [theta, theta_dot]}."""

    def __init__(self, states):
        super().__init__(gym.make("Pendulum-v1"))
        self.states = {int(seed): state for seed, state in states.items()}

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed in self.states:
            self.env.unwrapped.state = np.array(self.states[seed], dtype=np.float64)
            obs = self.env.unwrapped._get_obs()
        return obs, info


class Misbehave(gym.Env):
    """Observation [t, 0.5, -0.5] (float32), reward = the action. `plan` maps a reset seed to
    a misbehaviour at env step `at` of that episode: crash (os._exit(3)), raise, hang, nan
    (observation component 1), shape (4 values), dtype (float64), print (to stdout, every
    step from `at` on). Episodes of other seeds behave."""

    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, plan=None, at=2):
        self.observation_space = spaces.Box(-100.0, 100.0, (3,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.plan = {int(seed): mode for seed, mode in (plan or {}).items()}
        self.at = at
        self.t = 0
        self.mode = None

    def observation(self):
        return np.array([self.t, 0.5, -0.5], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.mode = self.plan.get(seed)
        return self.observation(), {}

    def step(self, action):
        self.t += 1
        obs = self.observation()
        if self.t >= self.at and self.mode == "print":
            print(f"the test env prints to stdout at step {self.t}")
        if self.t == self.at:
            if self.mode == "crash":
                os._exit(3)
            if self.mode == "raise":
                raise RuntimeError(f"the test env raised at step {self.t}")
            if self.mode == "hang":
                time.sleep(3600)
            if self.mode == "nan":
                obs[1] = np.nan
            if self.mode == "shape":
                obs = np.zeros(4, dtype=np.float32)
            if self.mode == "dtype":
                obs = obs.astype(np.float64)
        return obs, float(action[0]), False, False, {}


class DiscreteActions(gym.Env):
    """A Discrete(3) action space, which the bridge refuses."""

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class TerminatesAt3(gym.Env):
    """Observation [t], reward 1 per env step, terminated at env step 3."""

    metadata = {"render_fps": 10}

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 10.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.t >= 3, False, {}


class WideFrames(gym.Env):
    """Renders 96x128 rgb_array frames: red 200 on the left half, blue 100 on the right half,
    green 40 on the top half; the bridge must resize them to 64x64 by area averaging. Its
    observation is the physical action it received, divided by 10."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-3.0, 5.0, (1,), np.float32)
        self.last_action = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.last_action = float(action[0])
        return np.array([self.last_action / 10.0], dtype=np.float32), 0.0, False, False, {}

    def render(self):
        frame = np.zeros((96, 128, 3), dtype=np.uint8)
        frame[:, :64, 0] = 200
        frame[:, 64:, 2] = 100
        frame[:48, :, 1] = 40
        return frame


class DictObservation(gym.Env):
    """A nested Dict observation with a picture: {"state": {"vel" (scalar float64), "pos"
    (2, float32)} in that (unsorted) order, "image": 32x32x3 uint8}."""

    metadata = {"render_fps": 50}

    def __init__(self):
        state = spaces.Dict(
            OrderedDict(
                [
                    ("vel", spaces.Box(-5.0, 5.0, (), np.float64)),
                    ("pos", spaces.Box(-5.0, 5.0, (2,), np.float32)),
                ]
            )
        )
        image = spaces.Box(0, 255, (32, 32, 3), np.uint8)
        self.observation_space = spaces.Dict(OrderedDict([("state", state), ("image", image)]))
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = 0

    def observation(self):
        image = np.zeros((32, 32, 3), dtype=np.uint8)
        image[:, :, 0] = np.arange(32, dtype=np.uint8)[None, :] * 8
        image[:, :, 1] = self.t
        return OrderedDict(
            [
                (
                    "state",
                    OrderedDict(
                        [
                            ("vel", np.array(1.5 + self.t, dtype=np.float64)),
                            ("pos", np.array([-2.0, 3.0], dtype=np.float32)),
                        ]
                    ),
                ),
                ("image", image),
            ]
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation(), {}

    def step(self, action):
        self.t += 1
        return self.observation(), 0.25, False, False, {}


register(id="PendulumAt-v0", entry_point=PendulumAt)
register(id="Misbehave-v0", entry_point=Misbehave, max_episode_steps=50)
register(id="DiscreteActions-v0", entry_point=DiscreteActions, max_episode_steps=50)
register(id="TerminatesAt3-v0", entry_point=TerminatesAt3, max_episode_steps=100)
register(id="WideFrames-v0", entry_point=WideFrames, max_episode_steps=100)
register(id="DictObservation-v0", entry_point=DictObservation, max_episode_steps=100)
