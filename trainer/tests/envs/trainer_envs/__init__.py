"""A user's own Gymnasium environment, registered the way a user's package registers it, for
dreamer-trainer's tests: `dreamer train --set run.task=gym:trainer_envs:Track-v0` with this
folder's parent on PYTHONPATH (gymnasium.make imports `trainer_envs` first)."""

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import register


class Track(gym.Env):
    """A point that follows a target on a line. State [position, target] (float32); the action
    moves the point by 0.05 * gain * action; reward -|position - target|.

    Two knobs come from the process environment, so that a test can change the env between
    two runs of the trainer: TRAINER_ENVS_FAIL_AT=N raises at the N-th env step of the env's
    life (over all its episodes), TRAINER_ENVS_ACTION_HIGH sets the action bound (default 1)."""

    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, gain=1.0):
        high = float(os.environ.get("TRAINER_ENVS_ACTION_HIGH", "1.0"))
        self.action_space = spaces.Box(-high, high, (1,), np.float32)
        self.observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.gain = float(gain)
        fail_at = os.environ.get("TRAINER_ENVS_FAIL_AT")
        self.fail_at = int(fail_at) if fail_at else None
        self.env_steps = 0
        self.x = 0.0
        self.target = 0.0

    def observation(self):
        return np.array([self.x, self.target], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.target = (float(v) for v in self.np_random.uniform(-1.0, 1.0, 2))
        return self.observation(), {}

    def step(self, action):
        self.env_steps += 1
        if self.env_steps == self.fail_at:
            raise RuntimeError(f"the track env broke at env step {self.env_steps}")
        self.x = float(np.clip(self.x + 0.05 * self.gain * float(action[0]), -10.0, 10.0))
        return self.observation(), -abs(self.x - self.target), False, False, {}


register(id="Track-v0", entry_point=Track, max_episode_steps=50)
