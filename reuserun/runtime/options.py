"""Checks of the session's arguments: each returns the value to use or raises a one-line
ValueError naming the argument, so no value reaches the kernels that they cannot take."""
from __future__ import annotations

import json
import numbers
import os

import numpy as np

# beyond this the OpenMP runtime cannot start the team on common machines (each thread takes a
# stack); no machine reuserun targets has more cores
MAX_THREADS = 1024
# a tile's side in positions; the planners keep tile counts in C ints
MAX_TILE = 1 << 15


def _integer(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container given 2 CPUs of a 64-core host runs best with 2 threads, not 64)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "quota period" or "max period"
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(n, MAX_THREADS))


def threads(value) -> int:
    """None or 0: every CPU this process may use, as onnxruntime's intra_op_num_threads=0."""
    if value is None:
        return usable_cpus()
    n = _integer("threads", value)
    if n == 0:
        return usable_cpus()
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"threads must be from 1 to {MAX_THREADS} (or None / 0 for every core), got {n}")
    return n


def tile(value) -> int | None:
    if value is None:
        return None
    n = _integer("tile", value)
    if not 1 <= n <= MAX_TILE:
        raise ValueError(f"tile must be from 1 to {MAX_TILE}, got {n}")
    return n


def threshold(name: str, value) -> float:
    """A finite number >= 0 (a string or a bool is refused, as in a JSON file written by hand)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    v = float(value)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def optional_flag(name: str, value) -> bool | None:
    return None if value is None else flag(name, value)


def workers(value) -> int:
    n = _integer("workers", value)
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"workers must be from 1 to {MAX_THREADS}, got {n}")
    return n


def shape(name: str, value) -> tuple[int, ...]:
    """A tuple of positive ints (the tensors' sizes are checked when the model is compiled)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a tuple of positive integers, got {value!r}")
    dims = tuple(value)
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 1:
            raise ValueError(f"{name} must be a tuple of positive integers, got {value!r}")
    return tuple(int(d) for d in dims)


def layer_thresholds(spec) -> tuple[dict, float | None]:
    """({layer: threshold}, input threshold or None) from a dict or a JSON file; `reuserun tune`
    writes {"threshold": T, "layer_thresholds": {...}}, a plain {layer: T} works too."""
    if spec is None:
        return {}, None
    if isinstance(spec, (str, os.PathLike)):
        try:
            with open(spec) as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:  # missing, unreadable, not JSON
            raise ValueError(f"layer_thresholds: cannot read {os.fspath(spec)!r}: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"layer_thresholds must be a dict or a JSON file holding an object, "
                         f"got {type(spec).__name__}")
    input_thr = None
    if "layer_thresholds" in spec:
        input_thr = threshold("the thresholds file's threshold", spec.get("threshold", 0.0))
        spec = spec["layer_thresholds"]
        if not isinstance(spec, dict):
            raise ValueError("layer_thresholds: its 'layer_thresholds' entry must be an object {layer: T}")
    table = {str(k): threshold(f"layer threshold {k!r}", v) for k, v in spec.items()}
    return table, input_thr
