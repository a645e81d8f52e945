"""One Gymnasium or DeepMind Control environment behind dreamer-rs's bridge protocol.

The Rust crate `dreamer-bridge` starts one of these per environment and talks to it over the
process's stdin/stdout with framed binary messages (docs/bridge.md). Standard library, numpy
and gymnasium / dm_control only.

Frames, both ways: u32 little-endian payload length, one kind byte, the payload.

  Rust -> worker   b"H" hello (JSON)   b"R" reset (u64 LE seed)   b"S" step (f32 LE action)
  worker -> Rust   b"P" spec (JSON)    b"O" observation           b"T" transition
                   b"E" error (JSON {"message": ..., "traceback": [...]}), after which the worker exits

An observation is the state vector (f32 LE, when the mode uses state) followed by the frame
(64*64*3 u8, HWC, when the mode uses pixels). A transition is the summed reward (f64 LE),
terminated (u8), truncated (u8), then an observation.
"""

import ctypes
import json
import math
import os
import signal
import struct
import sys
import traceback

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<IB")
STEP_HEAD = struct.Struct("<dBB")
SEED = struct.Struct("<Q")
MAX_FRAME = 1 << 26
TRACEBACK_LINES = 12

HELLO, RESET, STEP = ord("H"), ord("R"), ord("S")
SPEC, OBSERVATION, TRANSITION, ERROR = ord("P"), ord("O"), ord("T"), ord("E")


class WorkerError(Exception):
    """A problem the worker explains itself; the message goes to Rust without a traceback."""


# ---------------------------------------------------------------------------------------------
# process set-up: quiet Ctrl-C, die with the parent, keep the protocol pipes private


def quiet_exit_on_sigint():
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def die_with_parent():
    """Asks Linux to SIGKILL this process when the thread that started it ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died before prctl took effect.
    expected = os.environ.get("DREAMER_BRIDGE_PARENT_PID")
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)


def rendering_defaults():
    """Headless rendering unless the caller chose otherwise; must run before mujoco,
    dm_control or pygame is imported. MuJoCo reads MUJOCO_GL, PyOpenGL PYOPENGL_PLATFORM, and
    the two must agree; pygame needs no window for rgb_array."""
    backend = os.environ.setdefault("MUJOCO_GL", "egl")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def private_pipes():
    """Moves the protocol to private descriptors so that an env's print() cannot corrupt it:
    fd 1 becomes a copy of stderr and fd 0 reads /dev/null."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return os.fdopen(proto_in, "rb"), proto_out


class Channel:
    def __init__(self, reader, out_fd):
        self.reader = reader
        self.out_fd = out_fd

    def receive(self):
        """(kind, payload), or None when Rust closed the pipe."""
        head = self.reader.read(HEADER.size)
        if len(head) < HEADER.size:
            return None
        length, kind = HEADER.unpack(head)
        if length > MAX_FRAME:
            raise WorkerError(f"protocol: incoming frame of {length} bytes is over the limit")
        payload = self.reader.read(length)
        if len(payload) < length:
            return None
        return kind, payload

    def send(self, kind, *parts):
        length = sum(len(p) for p in parts)
        data = b"".join((HEADER.pack(length, kind),) + parts)
        view = memoryview(data)
        while view:
            written = os.write(self.out_fd, view)
            view = view[written:]

    def send_error(self, message, trace=()):
        body = json.dumps({"message": message, "traceback": list(trace)})
        self.send(ERROR, body.encode())


def traceback_tail(error):
    lines = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return [line for line in lines.splitlines() if line.strip()][-TRACEBACK_LINES:]


# ---------------------------------------------------------------------------------------------
# imports with the fix in the message


FETCH_FIX = (
    "run scripts/fetch-deps (it makes .deps/envs), or install the worker packages into "
    "{python}: `{python} -m pip install {packages}` (docs/native-deps.md)"
)


def import_numpy():
    try:
        import numpy
    except ImportError as error:
        raise WorkerError(
            f"the Python at {sys.executable} cannot import numpy ({error}); "
            + FETCH_FIX.format(python=sys.executable, packages="numpy==2.4.6")
        ) from None
    return numpy


def import_gymnasium():
    try:
        import gymnasium
    except ImportError as error:
        fix = FETCH_FIX.format(
            python=sys.executable, packages='"gymnasium[classic-control,mujoco]==1.4.0"'
        )
        raise WorkerError(f"the Python at {sys.executable} cannot import gymnasium ({error}); {fix}") from None
    return gymnasium


def import_dm_control_suite():
    # MUJOCO_GL and PYOPENGL_PLATFORM were set before this import (main()).
    try:
        from dm_control import suite
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and error.name in ("dm_control", "mujoco"):
            fix = FETCH_FIX.format(
                python=sys.executable, packages="dm-control==1.0.50 mujoco==3.17.0"
            )
            raise WorkerError(
                f"the Python at {sys.executable} cannot import dm_control ({error}); {fix}"
            ) from None
        raise WorkerError(
            f"dm_control failed to import with MUJOCO_GL={os.environ.get('MUJOCO_GL')} "
            f"({type(error).__name__}: {error}); check the rendering libraries with "
            f"scripts/check-envs, or set MUJOCO_GL (egl, osmesa; disable for state only)"
        ) from None
    return suite


def package_versions(distributions):
    """Installed versions of the distributions that define the env, for the record."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# ---------------------------------------------------------------------------------------------
# observation layout: which leaves form the state vector, which one is the picture


class Leaf:
    """One array of the observation: its path in the (nested) dict, shape and dtype."""

    def __init__(self, path, shape, dtype, np):
        self.path = path
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.name = ".".join(path) if path else "obs"
        self.is_float = np.issubdtype(self.dtype, np.floating)
        self.is_image = (
            self.dtype == np.uint8 and len(self.shape) == 3 and self.shape[2] == 3
        )

    def field_names(self):
        if self.shape == ():
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.size)]

    def describe(self):
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype)}


class Layout:
    """The state vector is every non-image leaf, flattened (C order) to float32 and
    concatenated in the space's own key order; the picture is the first uint8 HxWx3 leaf."""

    def __init__(self, leaves, np, strict_dtype):
        self.np = np
        self.strict_dtype = strict_dtype
        self.state_leaves = [leaf for leaf in leaves if not leaf.is_image]
        images = [leaf for leaf in leaves if leaf.is_image]
        self.image_leaf = images[0] if images else None
        self.state_size = sum(leaf.size for leaf in self.state_leaves)
        self.buffer = np.empty(self.state_size, dtype=np.float32)

    def field_names(self):
        return [name for leaf in self.state_leaves for name in leaf.field_names()]

    def value(self, obs, leaf):
        value = obs
        for key in leaf.path:
            if not hasattr(value, "__getitem__") or isinstance(value, (str, bytes)):
                raise WorkerError(
                    f"observation: expected a dict holding `{leaf.name}`, got {type(value).__name__}"
                )
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                raise WorkerError(
                    f"observation: key `{key}` of `{leaf.name}` is missing"
                ) from None
        return value

    def checked(self, obs, leaf):
        """The leaf's array after checking type, shape and dtype (finiteness: state())."""
        np = self.np
        value = self.value(obs, leaf)
        if not self.strict_dtype and not isinstance(value, np.ndarray):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise WorkerError(
                f"observation field `{leaf.name}` is a {type(value).__name__} ({value!r:.80}), "
                f"expected a numpy array of shape {leaf.shape} and dtype {leaf.dtype}"
            )
        if value.shape != leaf.shape:
            raise WorkerError(
                f"observation field `{leaf.name}` has shape {value.shape}, "
                f"the space declares {leaf.shape}"
            )
        if self.strict_dtype and value.dtype != leaf.dtype:
            raise WorkerError(
                f"observation field `{leaf.name}` has dtype {value.dtype}, "
                f"the space declares {leaf.dtype}"
            )
        if not self.strict_dtype and value.dtype.kind not in "biuf":
            raise WorkerError(
                f"observation field `{leaf.name}` has dtype {value.dtype}, expected a number type"
            )
        return value

    def state(self, obs):
        """float32 [state_size], every value finite."""
        np = self.np
        offset = 0
        for leaf in self.state_leaves:
            value = self.checked(obs, leaf)
            self.buffer[offset : offset + leaf.size] = value.reshape(-1)
            offset += leaf.size
        # One check of the float32 result: it also catches float64 values that overflow.
        if np.count_nonzero(np.isfinite(self.buffer)) != self.state_size:
            self.raise_not_finite(obs)
        return self.buffer

    def raise_not_finite(self, obs):
        """Names the first component that is not finite, with its value as the env gave it."""
        np = self.np
        for leaf in self.state_leaves:
            flat = np.asarray(self.value(obs, leaf)).reshape(-1)
            cast = flat.astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(cast))
            if bad.size:
                index = int(bad[0])
                overflow = " (beyond float32)" if np.isfinite(flat[index]) else ""
                raise WorkerError(
                    f"observation field `{leaf.field_names()[index]}` is {flat[index]}"
                    f"{overflow}, expected a finite number"
                )
        raise WorkerError("observation: a state value is not finite")

    def image(self, obs):
        return self.checked(obs, self.image_leaf)


def gym_leaves(space, path, gymnasium, np):
    spaces = gymnasium.spaces
    if isinstance(space, spaces.Box):
        return [Leaf(path, space.shape, space.dtype, np)]
    if isinstance(space, spaces.Dict):
        leaves = []
        for key, sub in space.spaces.items():
            leaves.extend(gym_leaves(sub, path + (str(key),), gymnasium, np))
        return leaves
    where = f" at `{'.'.join(path)}`" if path else ""
    raise WorkerError(
        f"observation space {space}{where} is not supported: the bridge reads Box "
        f"observations and (nested) Dicts of Boxes"
    )


def dmc_leaves(spec, np):
    return [Leaf((str(key),), array.shape, array.dtype, np) for key, array in spec.items()]


# ---------------------------------------------------------------------------------------------
# pictures


class AreaResizer:
    """Resizes HxWx3 uint8 frames to SxSx3 by area averaging: each output pixel is the mean of
    the source pixels under its footprint, a partly covered source pixel weighted by the
    covered fraction (separable box filter, float32, rounded to nearest)."""

    def __init__(self, np, size):
        self.np = np
        self.size = size
        self.weights = {}

    def weight_matrix(self, source):
        """[size, source]: row i averages source cells [i*source/size, (i+1)*source/size)."""
        np = self.np
        scale = source / self.size
        starts = np.arange(self.size, dtype=np.float64)[:, None] * scale
        ends = starts + scale
        cells = np.arange(source, dtype=np.float64)[None, :]
        overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
        return (overlap / scale).astype(np.float32)

    def __call__(self, frame):
        np = self.np
        height, width = frame.shape[:2]
        if (height, width) == (self.size, self.size):
            return frame
        key = (height, width)
        if key not in self.weights:
            self.weights[key] = (self.weight_matrix(height), self.weight_matrix(width))
        rows, cols = self.weights[key]
        tall = rows @ frame.reshape(height, width * 3).astype(np.float32)  # [S, W*3]
        tall = tall.reshape(self.size, width, 3).transpose(0, 2, 1)  # [S, 3, W]
        out = (tall @ cols.T).transpose(0, 2, 1)  # [S, S, 3]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def checked_frame(frame, source, np):
    if frame is None:
        raise WorkerError(f"{source} returned None instead of an RGB frame")
    if not isinstance(frame, np.ndarray):
        raise WorkerError(f"{source} returned a {type(frame).__name__}, expected a numpy array")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise WorkerError(
            f"{source} returned an array of shape {frame.shape} and dtype {frame.dtype}, "
            f"expected uint8 HxWx3"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise WorkerError(f"{source} returned an empty frame of shape {frame.shape}")
    return frame[:, :, :3]


# ---------------------------------------------------------------------------------------------
# actions


class ActionMap:
    """Normalised [-1, 1] action (clipped) -> the Box's physical range, linearly, in float64."""

    def __init__(self, low, high, shape, dtype, space_text, np):
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        if low.size == 0:
            raise WorkerError(f"action space {space_text} has no components")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise WorkerError(
                f"action space {space_text} is unbounded (low {low.tolist()}, high "
                f"{high.tolist()}); the bridge maps [-1, 1] onto finite bounds"
            )
        if (low > high).any():
            index = int(np.flatnonzero(low > high)[0])
            raise WorkerError(
                f"action space {space_text}: component {index} has low {low[index]} above high "
                f"{high[index]}"
            )
        self.np = np
        self.low, self.high = low, high
        self.centre = (low + high) / 2.0
        self.half = (high - low) / 2.0
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.size = low.size
        self.text = space_text
        self.unpack = struct.Struct(f"<{self.size}f").unpack
        self.centre_list = self.centre.tolist()
        self.half_list = self.half.tolist()

    def physical(self, raw):
        """float32 LE bytes -> the action in the space's shape and dtype. Plain Python floats
        (float64, like numpy's) are faster than numpy for a few components."""
        if len(raw) != 4 * self.size:
            raise WorkerError(
                f"protocol: step carries {len(raw)} bytes, expected {4 * self.size} "
                f"({self.size} float32 action values)"
            )
        values = self.unpack(raw)
        if not all(map(math.isfinite, values)):
            raise WorkerError(f"protocol: action {list(values)} is not finite")
        physical = [
            centre + half * min(max(value, -1.0), 1.0)
            for value, centre, half in zip(values, self.centre_list, self.half_list)
        ]
        return self.np.array(physical, dtype=self.dtype).reshape(self.shape)


# ---------------------------------------------------------------------------------------------
# back ends


class Backend:
    """What both back ends share: the hello's options, the layout, the picture."""

    def __init__(self, hello, np):
        self.np = np
        mode = hello.get("obs_mode")
        if mode not in ("state", "pixels", "both"):
            raise WorkerError(f"hello: obs_mode {mode!r} is not state, pixels or both")
        self.use_state = mode in ("state", "both")
        self.use_pixels = mode in ("pixels", "both")
        repeat = hello.get("action_repeat")
        if not isinstance(repeat, int) or repeat < 1:
            raise WorkerError(f"hello: action_repeat {repeat!r} must be an integer >= 1")
        self.repeat = repeat
        size = hello.get("image_size")
        if not isinstance(size, int) or size < 1:
            raise WorkerError(f"hello: image_size {size!r} must be a positive integer")
        self.image_size = size
        self.resizer = AreaResizer(np, size)
        self.layout = None
        self.pixel_source = None
        # None before the first reset, True once the episode ended: stepping then is refused.
        self.over = None

    def begin_step(self, raw_action):
        if self.over is None:
            raise WorkerError("protocol: step before the first reset")
        if self.over:
            raise WorkerError("protocol: step after the episode ended; reset first")
        return self.action.physical(raw_action)

    def end_step(self, total, terminated, truncated, obs):
        self.over = terminated or truncated
        return total, terminated, truncated, self.encode(obs)

    def check_layout(self):
        if self.use_state and self.layout.state_size == 0:
            raise WorkerError(
                "the observation has no state part (only an image); use obs_mode pixels"
            )

    def encode(self, obs):
        """The observation's bytes: state f32 then the frame."""
        parts = []
        if self.use_state:
            parts.append(self.layout.state(obs).astype("<f4", copy=False).tobytes())
        if self.use_pixels:
            frame = self.frame(obs)
            parts.append(self.np.ascontiguousarray(frame).tobytes())
        return parts

    def frame(self, obs):
        if self.layout.image_leaf is not None:
            frame = self.layout.image(obs)
            source = f"observation field `{self.layout.image_leaf.name}`"
        else:
            frame = self.render()
            source = self.pixel_source
        return self.resizer(checked_frame(frame, source, self.np))

    def spec(self, extra):
        layout = self.layout
        spec = {
            "protocol": PROTOCOL_VERSION,
            "state_layout": [leaf.describe() for leaf in layout.state_leaves],
            "state_fields": layout.field_names(),
            "state_size": layout.state_size,
            "action_size": self.action.size,
            "action_low": self.action.low.tolist(),
            "action_high": self.action.high.tolist(),
            "pixels": self.pixel_source if self.use_pixels else None,
        }
        spec.update(extra)
        return spec


class GymBackend(Backend):
    def __init__(self, hello, env_id, kwargs, np):
        super().__init__(hello, np)
        gymnasium = import_gymnasium()
        self.gymnasium = gymnasium
        kwargs = dict(kwargs)
        import_env_module(env_id)
        if self.use_pixels and "render_mode" not in kwargs and renders_rgb_array(env_id, gymnasium):
            kwargs["render_mode"] = "rgb_array"
        self.env = make_gym_env(env_id, kwargs, gymnasium)
        env = self.env
        action_space = env.action_space
        if not isinstance(action_space, gymnasium.spaces.Box):
            raise WorkerError(
                f"action space {action_space} is not supported: the bridge drives continuous Box "
                f"actions only (rescaled to [-1, 1])"
            )
        self.action = ActionMap(
            action_space.low, action_space.high, action_space.shape, action_space.dtype,
            str(action_space), np,
        )
        leaves = gym_leaves(env.observation_space, (), gymnasium, np)
        self.layout = Layout(leaves, np, strict_dtype=True)
        self.check_layout()
        if self.use_pixels:
            if self.layout.image_leaf is not None:
                self.pixel_source = f"observation:{self.layout.image_leaf.name}"
            elif getattr(env, "render_mode", None) == "rgb_array":
                self.pixel_source = "render:rgb_array"
            else:
                raise WorkerError(
                    f"pixels were asked for, but the observation space {env.observation_space} "
                    f"has no uint8 HxWx3 image and the env does not render rgb_array (render_mode "
                    f"{getattr(env, 'render_mode', None)!r}, render_modes "
                    f"{env.metadata.get('render_modes')})"
                )
        self.dt = gym_dt(env, hello.get("physics_dt"))
        self.max_steps = gym_max_steps(env, gymnasium)

    def render(self):
        return self.env.render()

    def reset(self, seed):
        obs, _info = self.env.reset(seed=seed)
        self.over = False
        return self.encode(obs)

    def step(self, raw_action):
        action = self.begin_step(raw_action)
        total = 0.0
        terminated = truncated = False
        obs = None
        for _ in range(self.repeat):
            result = self.env.step(action)
            if not isinstance(result, tuple) or len(result) != 5:
                raise WorkerError(
                    f"env.step returned {type(result).__name__} of length "
                    f"{len(result) if isinstance(result, tuple) else '?'}, expected the 5-tuple "
                    f"(obs, reward, terminated, truncated, info)"
                )
            obs, reward, terminated, truncated, _info = result
            total += finite_reward(reward, self.np)
            terminated, truncated = bool(terminated), bool(truncated)
            if terminated or truncated:
                break
        return self.end_step(total, terminated, truncated, obs)

    def versions(self):
        return package_versions(["numpy", "gymnasium", "mujoco"])

    def close(self):
        self.env.close()


def renders_rgb_array(env_id, gymnasium):
    """Whether the registered creator declares render_mode rgb_array (read without building)."""
    try:
        name = env_id.split(":", 1)[1] if ":" in env_id else env_id
        spec = gymnasium.spec(name)
        creator = spec.entry_point
        if isinstance(creator, str):
            from gymnasium.envs.registration import load_env_creator

            creator = load_env_creator(creator)
        metadata = getattr(creator, "metadata", None)
        return isinstance(metadata, dict) and "rgb_array" in metadata.get("render_modes", ())
    except Exception:
        return False


def import_env_module(env_id):
    """Imports the module named before the colon of `module:Id` (it registers the id)."""
    if ":" not in env_id:
        return
    module = env_id.split(":", 1)[0]
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            raise WorkerError(
                f"cannot import module `{module}` named before the colon in `{env_id}` "
                f"({error}); install it into {sys.executable} or put it on PYTHONPATH"
            ) from None
        raise


def make_gym_env(env_id, kwargs, gymnasium):
    try:
        return gymnasium.make(env_id, **kwargs)
    except gymnasium.error.UnregisteredEnv as error:
        name = env_id.split(":", 1)[1] if ":" in env_id else env_id
        import difflib

        like = difflib.get_close_matches(name, list(gymnasium.registry.keys()), n=6, cutoff=0.5)
        hint = ", ".join(like) if like else "none close; see gymnasium.pprint_registry()"
        raise WorkerError(
            f"gymnasium does not know the id `{env_id}` ({error}); registered ids like it: {hint}"
        ) from None


def gym_dt(env, override):
    if override is not None:
        return float(override)
    dt = getattr(env.unwrapped, "dt", None)
    if isinstance(dt, (int, float)) and dt > 0:
        return float(dt)
    fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    if isinstance(fps, (int, float)) and fps > 0:
        return 1.0 / float(fps)
    raise WorkerError(
        "cannot tell the env's time step: it has neither `unwrapped.dt` nor metadata "
        "`render_fps`; set BridgeOptions::physics_dt"
    )


def gym_max_steps(env, gymnasium):
    """The TimeLimit's limit, found on the outermost TimeLimit wrapper, else the spec's."""
    layer = env
    while isinstance(layer, gymnasium.Wrapper):
        if isinstance(layer, gymnasium.wrappers.TimeLimit):
            return int(layer._max_episode_steps)
        layer = layer.env
    steps = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    if isinstance(steps, int) and steps > 0:
        return steps
    raise WorkerError(
        "the env has no time limit (no TimeLimit wrapper, no spec.max_episode_steps); pass "
        "{\"max_episode_steps\": N} in the task kwargs"
    )


def finite_reward(reward, np):
    try:
        value = float(reward)
    except (TypeError, ValueError):
        raise WorkerError(f"reward {reward!r:.80} is not a number") from None
    if not math.isfinite(value):
        raise WorkerError(f"reward is {value}, expected a finite number")
    return value


class DmcBackend(Backend):
    def __init__(self, hello, name, kwargs, np):
        super().__init__(hello, np)
        domain, sep, task = name.partition("-")
        if not sep or not domain or not task:
            raise WorkerError(
                f"dmc task `{name}` is not `<domain>-<task>` (for example dmc:cartpole-swingup)"
            )
        suite = import_dm_control_suite()
        known = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
        if (domain, task) not in set(suite.ALL_TASKS):
            import difflib

            like = difflib.get_close_matches(name, known, n=6, cutoff=0.5)
            raise WorkerError(
                f"dm_control's suite has no task `{name}`; tasks like it: "
                f"{', '.join(like) if like else ', '.join(known[:12]) + ', ...'}"
            )
        self.env = suite.load(domain, task, task_kwargs=dict(kwargs) or None)
        env = self.env
        spec = env.action_spec()
        if not hasattr(spec, "minimum"):
            raise WorkerError(f"action spec {spec} is unbounded; the bridge maps [-1, 1] onto bounds")
        shape = spec.shape
        low = np.broadcast_to(np.asarray(spec.minimum, dtype=np.float64), shape)
        high = np.broadcast_to(np.asarray(spec.maximum, dtype=np.float64), shape)
        self.action = ActionMap(low, high, shape, spec.dtype, str(spec), np)
        self.layout = Layout(dmc_leaves(env.observation_spec(), np), np, strict_dtype=False)
        self.check_layout()
        if self.use_pixels:
            if self.layout.image_leaf is not None:
                self.pixel_source = f"observation:{self.layout.image_leaf.name}"
            else:
                self.pixel_source = (
                    f"physics.render({self.image_size}, {self.image_size}, camera_id=0)"
                )
        self.dt = float(hello["physics_dt"]) if hello.get("physics_dt") else float(env.control_timestep())
        limit = env._step_limit
        if not np.isfinite(limit):
            raise WorkerError(
                f"dmc task `{name}` has no time limit; pass {{\"time_limit\": seconds}} in the "
                f"task kwargs"
            )
        self.max_steps = int(round(limit))

    def render(self):
        size = self.image_size
        return self.env.physics.render(size, size, camera_id=0)

    def reset(self, seed):
        np = self.np
        # A fresh stream per episode, from the seed alone (both 32-bit halves).
        self.env.task._random = np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32])
        step = self.env.reset()
        self.over = False
        return self.encode(step.observation)

    def step(self, raw_action):
        action = self.begin_step(raw_action)
        total = 0.0
        terminated = truncated = False
        observation = None
        for _ in range(self.repeat):
            step = self.env.step(action)
            total += finite_reward(step.reward, self.np)
            observation = step.observation
            if step.last():
                # dm_control ends at its time limit with discount 1 and a terminal state with 0.
                terminated = float(step.discount) == 0.0
                truncated = not terminated
                break
        return self.end_step(total, terminated, truncated, observation)

    def versions(self):
        return package_versions(["numpy", "dm-control", "mujoco"])

    def close(self):
        # A physics still alive at interpreter shutdown makes dm_control's render thread
        # print a traceback.
        self.env.physics.free()


# ---------------------------------------------------------------------------------------------
# the conversation


def build(hello, np):
    if hello.get("protocol") != PROTOCOL_VERSION:
        raise WorkerError(
            f"protocol version {hello.get('protocol')!r} from Rust, this worker speaks "
            f"{PROTOCOL_VERSION}"
        )
    task = hello.get("task")
    kwargs = hello.get("kwargs") or {}
    if not isinstance(task, str):
        raise WorkerError(f"hello: task {task!r} is not a string")
    if not isinstance(kwargs, dict):
        raise WorkerError(f"hello: kwargs {kwargs!r:.80} is not a JSON object")
    backend_name, _, name = task.partition(":")
    if backend_name == "gym":
        return GymBackend(hello, name, kwargs, np)
    if backend_name == "dmc":
        return DmcBackend(hello, name, kwargs, np)
    raise WorkerError(f"task `{task}` starts with neither gym: nor dmc:")


def serve(channel):
    message = channel.receive()
    if message is None:
        return
    kind, payload = message
    if kind != HELLO:
        raise WorkerError(f"protocol: first frame has kind {kind}, expected hello")
    try:
        hello = json.loads(payload)
    except ValueError as error:
        raise WorkerError(f"protocol: hello is not JSON ({error})") from None
    if not isinstance(hello, dict):
        raise WorkerError("protocol: hello is not a JSON object")
    np = import_numpy()
    backend = build(hello, np)
    spec = backend.spec(
        {
            "physics_dt": backend.dt,
            "max_env_steps": backend.max_steps,
            "action_space": backend.action.text,
            "versions": backend.versions(),
        }
    )
    channel.send(SPEC, json.dumps(spec).encode())
    converse(channel, backend)
    # Rust closed the pipe: a clean end. (After an error Rust kills the worker at once.)
    try:
        backend.close()
    except Exception:
        pass


def converse(channel, backend):
    """Answers resets and steps until Rust closes the pipe."""
    while True:
        message = channel.receive()
        if message is None:
            return
        kind, payload = message
        if kind == STEP:
            reward, terminated, truncated, parts = backend.step(payload)
            channel.send(TRANSITION, STEP_HEAD.pack(reward, terminated, truncated), *parts)
        elif kind == RESET:
            if len(payload) != SEED.size:
                raise WorkerError(f"protocol: reset carries {len(payload)} bytes, expected 8")
            (seed,) = SEED.unpack(payload)
            channel.send(OBSERVATION, *backend.reset(seed))
        else:
            raise WorkerError(f"protocol: unknown frame kind {kind}")


def main():
    quiet_exit_on_sigint()
    die_with_parent()
    rendering_defaults()
    reader, out_fd = private_pipes()
    channel = Channel(reader, out_fd)
    try:
        serve(channel)
    except BrokenPipeError:
        sys.exit(1)
    except WorkerError as error:
        report(channel, str(error), ())
    except Exception as error:
        report(channel, f"{type(error).__name__}: {error}", traceback_tail(error))


def report(channel, message, trace):
    """Sends the error frame (if Rust still listens) and exits."""
    try:
        channel.send_error(message, trace)
    except OSError:
        pass
    sys.exit(1)


if __name__ == "__main__":
    main()
