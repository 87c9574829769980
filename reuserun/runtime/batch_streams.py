"""batch="streams": each index of a batch is a stream of its own, with its own session and caches,
so a batch of N cameras is N incremental streams; outputs are stacked back along axis 0."""
from __future__ import annotations

import numpy as np

from reuserun.ir import InputError, ModelError


class BatchStreams:
    """make_session(input_shapes) -> a session bound at batch 1; n: the batch size."""

    def __init__(self, make_session, input_shapes: dict, n: int):
        self.n = n
        single = {k: (1, *v[1:]) for k, v in input_shapes.items()}
        self.sessions = [make_session(single) for _ in range(n)]
        for out in self.sessions[0].get_outputs():
            if not out.shape or out.shape[0] != 1:
                raise ModelError(f"batch='streams' needs outputs whose first axis is the batch; output "
                                 f"{out.name!r} has shape {out.shape} at batch 1")
        self.stats: dict = {}

    def run(self, names, feed: dict) -> list[np.ndarray]:
        for k, v in feed.items():
            if getattr(v, "shape", (None,))[0] != self.n:
                raise InputError(f"input {k!r}: expected a batch of {self.n}, got shape {getattr(v, 'shape', None)}")
        # every stream's frame is checked before any stream takes its own
        per_stream = [{k: v[i:i + 1] for k, v in feed.items()} for i in range(self.n)]
        for s, f in zip(self.sessions, per_stream):
            s.validate(f)
        outs = [s.run(names, f) for s, f in zip(self.sessions, per_stream)]
        self.stats = {"mac_fraction": float(np.mean([s.stats["mac_fraction"] for s in self.sessions])),
                      "streams": [s.stats for s in self.sessions], "backend": "reuserun", "full": False}
        return [np.concatenate(parts, axis=0) for parts in zip(*outs)]
