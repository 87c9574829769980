"""Whether an exact frame runs densely or incrementally, from this session's own timings.

A frame whose change reaches nearly every position (camera footage: compression and sensor noise
touch almost every pixel) costs more incrementally, planning each step and comparing every result
with its cache, than a dense run that does neither. Both give the same bits, so the choice is
only about time. It is measured, not guessed from MACs: a squeeze-excite net reaches 77% of its
MACs from a 1% object and still runs that frame in a fraction of a dense one.

The dense cost is the last dense frame's time, a stream's first frame left out (it pays one-time
costs): until WARMUP are measured, a large change runs densely to measure it, and every PROBE-th
large change that runs incrementally runs densely instead, to measure it again. An incremental frame
that took at least that long marks its changed fraction as heavy; frames that change at least as
much then run densely, except every PROBE-th, which runs incrementally to see whether that still
holds (a faster one clears the mark)."""
from __future__ import annotations

# a frame changing at least this fraction of its input pixels may run densely to measure the
# dense cost (it reaches almost every position of a CNN)
LARGE_CHANGE = 0.5
PROBE = 16
# dense frames measured before the measure is trusted: the first after a stream's first frame
# still pays for caches and pages touched for the first time
WARMUP = 2


class DenseChoice:
    def __init__(self):
        self.dense_s = None     # the last dense frame's seconds (not a stream's first)
        self.dense_count = 0
        self.heavy_from = None  # the least changed fraction seen to cost a dense frame or more
        self.since_probe = 0

    def reset(self) -> None:
        """A new scene: its changes are measured afresh (the dense cost stays)."""
        self.heavy_from = None
        self.since_probe = 0

    def dense(self, changed: float) -> bool:
        """Whether a frame that changed this fraction of its input should run densely (asked
        once per frame: every PROBE-th large change takes the other path)."""
        if self.dense_count < WARMUP:
            return changed >= LARGE_CHANGE
        heavy = self.heavy_from is not None and changed >= self.heavy_from
        if not heavy and changed < LARGE_CHANGE:
            return False
        self.since_probe += 1
        probe = self.since_probe >= PROBE
        if probe:
            self.since_probe = 0
        return heavy != probe

    def note(self, changed: float, seconds: float, full: bool) -> None:
        """After a frame (not a stream's first) that changed this fraction and took this long,
        densely or not."""
        if full:
            self.dense_s = seconds
            self.dense_count += 1
            return
        if self.dense_s is None or changed <= 0.0:
            return
        if seconds >= self.dense_s:
            self.heavy_from = changed if self.heavy_from is None else min(self.heavy_from, changed)
        elif self.heavy_from is not None and changed >= self.heavy_from:
            self.heavy_from = None
